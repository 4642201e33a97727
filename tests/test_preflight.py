"""One pre-flight for `validate`, `run --dry-run` and `run`: every bad input exits 2 (3 for an
infeasible plan) naming the field or file:line with a fix, and nothing is created; and the inputs
that used to raise tracebacks (directories, invalid UTF-8, deep nesting, unwritable -o, a huge
--limit, malformed calibration.json) are exit 2 as well."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
import tuneplan.cli.main as cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("preflight"))


@pytest.fixture()
def good(tiny, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    raw = json.loads(make_plan("lora", str(tiny), train_path=str(train)).model_dump_json())
    return raw


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


def _set(raw: dict, dotted: str, value) -> dict:
    node = raw
    *head, last = dotted.split(".")
    for key in head:
        node = node[key]
    node[last] = value
    return raw


def _chat_first_assistant(tmp_path, raw):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3
    rows.append(
        {"messages": [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "ok"}]}
    )
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    return _set(raw, "data.train_path", str(path)), f"{path}:4"


def _too_long(tmp_path, raw):
    rows = [{"prompt": "the cat sat on the mat " * 40, "completion": " yes"}] * 4
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    return _set(raw, "data.train_path", str(path)), "data.train_path"


def _memory_doubled(tmp_path, raw):
    m = raw["memory"]
    m["per_device_bytes"] *= 2
    m["breakdown"]["weights"] += m["per_device_bytes"] // 2
    return raw, "memory.per_device_bytes"


# name -> mutate(tmp_path, raw) -> (raw, the field or file:line the error must name)
CASES = {
    "schema version 99.0": lambda tp, r: (_set(r, "schema_version", "99.0"), "schema_version"),
    "seed -1": lambda tp, r: (_set(r, "training.seed", -1), "training.seed"),
    "memory bytes edited": _memory_doubled,
    "memory block for another seq_len": lambda tp, r: (
        _set(r, "memory.settings.seq_len", 4096),
        "training.seq_len",
    ),
    "fits contradicts bytes": lambda tp, r: (_set(r, "memory.fits", not r["memory"]["fits"]), "memory.fits"),
    "unknown target module": lambda tp, r: (
        _set(r, "lora.target_modules", ["q_proj", "qkv_fused"]),
        "lora.target_modules",
    ),
    "chat row starts with the assistant": _chat_first_assistant,
    "every row longer than seq_len": _too_long,
}


def _commands(plan: Path, tmp_path: Path) -> dict[str, list[str]]:
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    return {
        "validate": ["validate", str(plan)],
        "dry-run": ["run", str(plan), "--dry-run", "--output", str(out), "--db", str(db)],
        "run": ["run", str(plan), "--output", str(out), "--db", str(db)],
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_names_the_field_and_creates_nothing(case, good, tmp_path, capsys):
    raw, where = CASES[case](tmp_path, good)
    plan = _write(tmp_path, raw)
    for name, argv in _commands(plan, tmp_path).items():
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert where in err and "fix:" in err, (name, err)
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "db.duckdb").exists()


def test_the_good_plan_passes_all_three(good, tmp_path, capsys):
    plan = _write(tmp_path, good)
    assert cli.main(["validate", str(plan)]) == 0
    assert "8 data rows" in capsys.readouterr().out
    assert cli.main(_commands(plan, tmp_path)["dry-run"]) == 0
    assert not (tmp_path / "runs").exists()


def test_infeasible_plan_exits_3_before_anything_exists(good, tmp_path, capsys):
    plan = _write(tmp_path, _set(good, "feasible", False))
    for name, argv in _commands(plan, tmp_path).items():
        assert cli.main(argv) == 3, name
        assert "infeasible" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "db.duckdb").exists()


def test_model_path_with_another_architecture_is_refused(good, tiny, tmp_path, capsys):
    other = tmp_path / "other-model"
    shutil.copytree(tiny, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg.update(hidden_size=128, num_hidden_layers=4)
    (other / "config.json").write_text(json.dumps(cfg))
    plan = _write(tmp_path, good)
    for name, argv in _commands(plan, tmp_path).items():
        assert cli.main(argv + ["--model-path", str(other)]) == 2, name
        err = capsys.readouterr().err
        assert "--model-path" in err and "hidden_size 128 (plan: 64)" in err and "num_layers 4" in err
        assert "tuneplan advise --model" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "content",
    ["dir", b'{"a": "\xff\xfe"}', "[" * 100000 + "]" * 100000, '{"method": ', "[1, 2]"],
    ids=["directory", "invalid-utf8", "deeply-nested", "truncated", "not-an-object"],
)
def test_unreadable_plans_exit_2(content, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    if content == "dir":
        plan.mkdir()
    elif isinstance(content, bytes):
        plan.write_bytes(content)
    else:
        plan.write_text(content)
    for name, argv in _commands(plan, tmp_path).items():
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and str(plan) in err and "Traceback" not in err, (name, err)


def test_advise_to_an_unwritable_path_exits_2(tmp_path, capsys):
    target = tmp_path / "no-such-dir-file"
    target.write_text("a file, so nothing can be written below it")
    rc = cli.main(
        [
            "advise",
            "--model",
            "huggyllama/llama-7b",
            "--gpu",
            "A100-80GB",
            "--domain",
            "near",
            "--forgetting",
            "medium",
            "-o",
            str(target / "plan.json"),
        ]
    )
    assert rc == 2 and "-o/--output" in capsys.readouterr().err


def test_runs_limit_huge_is_not_a_traceback(tmp_path, capsys):
    from tuneplan.executor import ledger as store

    store.connect(str(tmp_path / "db.duckdb")).close()
    assert cli.main(["runs", "--db", str(tmp_path / "db.duckdb"), "--limit", "9" * 40]) == 0


CALIBRATIONS = {
    "directory": None,
    "invalid-utf8": b"\xff\xfe{}",
    "invalid-json": b'{"factors": ',
    "deeply-nested": b"[" * 100000 + b"]" * 100000,
    "a list": b"[]",
    "factors not an object": b'{"factors": 3}',
    "key not an object": b'{"factors": {"cuda|llama": [1, 2]}}',
    "factor a string": b'{"factors": {"cuda|llama": {"activations": "x"}}}',
    "factor NaN": b'{"factors": {"cuda|llama": {"activations": NaN}}}',
    "factor negative": b'{"factors": {"cuda|llama": {"activations": -1}}}',
    "unknown component": b'{"factors": {"cuda|llama": {"flux": 1.0}}}',
}


@pytest.mark.parametrize("kind", list(CALIBRATIONS))
def test_malformed_calibration_exits_2(kind, tmp_path, capsys):
    path = tmp_path / "calibration.json"
    if CALIBRATIONS[kind] is None:
        path.mkdir()
    else:
        path.write_bytes(CALIBRATIONS[kind])
    rc = cli.main(
        [
            "advise",
            "--model",
            "huggyllama/llama-7b",
            "--gpu",
            "A100-80GB",
            "--domain",
            "near",
            "--forgetting",
            "medium",
            "--calibrated",
            "--db",
            str(tmp_path / "runs.duckdb"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "calibration" in err and "Traceback" not in err, err
