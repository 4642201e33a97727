"""Executor end to end: input errors before training, failures, interrupts, the embedded SmolLM2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.base.errors import InputError
from tuneplan.executor import models as M
from tuneplan.executor.runner import run_plan
from tuneplan.schemas import RunResult

TESTS = Path(__file__).resolve().parent
EXAMPLES = TESTS.parent / "examples" / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("e2e"))


@pytest.fixture()
def train_file(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def _problems(exc: InputError) -> list[str]:
    return [p.where for p in exc.problems]


def test_missing_data_file_fails_before_training(tiny, tmp_path):
    plan = make_plan("lora", str(tiny), train_path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError) as err:
        run_plan(plan, output_dir=str(tmp_path / "runs"), db=str(tmp_path / "db.duckdb"))
    assert _problems(err.value) == ["data.train_path"] and "does not exist" in str(err.value)
    with pytest.raises(InputError) as err:
        run_plan(plan, data=str(tmp_path / "other.jsonl"), output_dir=str(tmp_path / "runs"))
    assert _problems(err.value) == ["--data"]
    assert _run_dirs(tmp_path / "runs") == []


def test_malformed_plan_names_json_paths(tiny, train_file, tmp_path):
    good = json.loads(make_plan("lora", str(tiny), train_path=str(train_file)).model_dump_json())
    good["training"]["learning_rate"] = 5
    good["lora"]["bogus"] = 1
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(good))
    with pytest.raises(InputError) as err:
        run_plan(path, output_dir=str(tmp_path / "runs"))
    assert set(_problems(err.value)) == {"training.learning_rate", "lora.bogus"}
    path.write_text('{"method": "lora",\n oops}')
    with pytest.raises(InputError) as err:
        run_plan(path, output_dir=str(tmp_path / "runs"))
    assert _problems(err.value) == [f"{path}:2"]
    with pytest.raises(InputError):
        run_plan(tmp_path / "missing-plan.json")
    assert _run_dirs(tmp_path / "runs") == []


def test_unknown_model_fails_before_training(train_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    plan = make_plan("lora", "no-such-org/no-such-model", train_path=str(train_file))
    with pytest.raises(InputError) as err:
        run_plan(plan, output_dir=str(tmp_path / "runs"))
    assert _problems(err.value) == ["inputs.model.name"] and "--model-path" in str(err.value)
    assert _run_dirs(tmp_path / "runs") == []


def test_plan_file_with_relative_data_and_model_path(tiny, tmp_path):
    (tmp_path / "p").mkdir()
    write_jsonl(tmp_path / "p" / "train.jsonl", overfit_rows(8))
    plan = make_plan("lora", "someone/unavailable", train_path="train.jsonl", training={"max_steps": 1})
    (tmp_path / "p" / "plan.json").write_text(plan.model_dump_json())
    r = run_plan(
        tmp_path / "p" / "plan.json",
        model_path=str(tiny),
        output_dir=str(tmp_path / "runs"),
        db=str(tmp_path / "db.duckdb"),
        progress=False,
    )
    assert r.status == "succeeded" and r.data_path == str(tmp_path / "p" / "train.jsonl")
    assert (Path(r.run_dir) / "plan.json").read_text() == plan.model_dump_json()


def test_forced_failure_is_recorded_and_propagates(tiny, train_file, tmp_path, monkeypatch):
    import tuneplan.executor.train as T

    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("simulated crash in the train step")

    monkeypatch.setattr(T, "train", boom)
    plan = make_plan("lora", str(tiny), train_path=str(train_file))
    out = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_plan(plan, output_dir=str(out), db=str(tmp_path / "db.duckdb"), progress=False)
    (run_dir,) = _run_dirs(out)
    r = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert calls and r.status == "failed" and r.error == "RuntimeError: simulated crash in the train step"
    assert r.finished_at and r.eval_loss_before is not None and r.steps == 0
    from tuneplan.executor import ledger as store

    assert [row["status"] for row in store.list_runs(str(tmp_path / "db.duckdb"))] == ["failed"]


def test_database_failure_keeps_the_run_and_raises_recording_failed(
    tiny, train_file, tmp_path, monkeypatch, capsys
):
    from tuneplan.executor import ledger as store
    from tuneplan.executor.signals import RecordingFailed

    def broken(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(store, "record", broken)
    plan = make_plan("lora", str(tiny), train_path=str(train_file), training={"max_steps": 1})
    with pytest.raises(RecordingFailed) as info:
        run_plan(plan, output_dir=str(tmp_path / "runs"), db=str(tmp_path / "db.duckdb"), progress=False)
    r = info.value.result
    assert r.status == "succeeded" and (Path(r.run_dir) / "result.json").is_file()
    assert "disk on fire" in str(info.value) and "tuneplan runs ingest" in str(info.value)
    assert "tuneplan runs ingest" in capsys.readouterr().err


# Signals at every phase of a real `tuneplan run`: tests/test_run_signals.py


@pytest.mark.slow
def test_embedded_smollm2_converts_once_and_learns_the_example_task(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("TUNEPLAN_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    first = M.ensure_embedded_model()
    convert_s = time.perf_counter() - t0
    said = capfd.readouterr()
    # one line of ours; transformers' GGUF progress bar stays off the terminal
    assert said.err.splitlines() == [
        f"tuneplan: converting the embedded {M.EMBEDDED_MODEL} from its GGUF once, into {first}"
    ], said.err
    assert said.out == ""
    assert (first / "model.safetensors").is_file() and (first / "tokenizer_config.json").is_file()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp dirs left behind

    def no_reconversion(*a):
        raise AssertionError("converted the GGUF again")

    monkeypatch.setattr(M, "_convert_gguf", no_reconversion)
    t0 = time.perf_counter()
    assert M.ensure_embedded_model() == first
    assert time.perf_counter() - t0 < convert_s / 10

    # A short probe keeps the four evaluations cheap on a shared 2-core machine.
    from tuneplan.executor.data import probe_text

    probe = tmp_path / "probe.txt"
    probe.write_text(probe_text()[:1500])
    plan = make_plan(
        "lora",
        M.EMBEDDED_MODEL,
        train_path=str(EXAMPLES / "train.jsonl"),
        eval_path=str(EXAMPLES / "eval.jsonl"),
        training={
            "max_steps": 4,
            "learning_rate": 2e-3,
            "per_device_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "seq_len": 128,
            "precision": "bf16-mixed",
        },
        lora={"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]},
        data={"probe_path": str(probe)},
    )
    r = run_plan(plan, output_dir=str(tmp_path / "runs"), db=str(tmp_path / "db.duckdb"), progress=False)
    assert r.status == "succeeded" and r.steps == 4
    assert r.total_params > 134_000_000 and r.trainable_params < 2_000_000
    assert r.eval_loss_after < r.eval_loss_before
    assert r.forgetting_loss_before is not None and r.forgetting_loss_after is not None
    assert any("bf16-mixed -> fp32" in s for s in r.substitutions)
    assert r.measured.peak_bytes > r.measured.params_bytes > 500_000_000
