"""tuneplan compare: full, LoRA and QLoRA on a tiny Llama (2 steps each), recorded as one
comparison; a failing or interrupted method; bad input; the judging sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exec_fixtures import make_plan, one_torch_thread, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.base.errors import InputError
from tuneplan.executor import compare
from tuneplan.executor import ledger as store
from tuneplan.executor.compare import Outcome, judge
from tuneplan.schemas import Plan, Task
from tuneplan.schemas.run import MeasuredMemory, RunResult
from helpers import cli


def write_plan(root: Path, model: str, tolerance: str = "low") -> Path:
    """A lora plan for the tiny model whose inputs advise short sequences and small batches;
    relative data paths (resolved against the plan's directory)."""
    write_jsonl(root / "train.jsonl", overfit_rows(8))
    write_jsonl(root / "eval.jsonl", overfit_rows(8))
    plan = make_plan("lora", model, train_path="train.jsonl", eval_path="eval.jsonl")
    task = Task(domain_distance="near", forgetting_tolerance=tolerance, seq_len=64, batch_size=4)
    plan = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={"task": task})})
    path = root / "plan.json"
    path.write_text(plan.model_dump_json(indent=2))
    return path


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """One real comparison over full, lora, qlora (2 steps each) through the CLI."""
    root = tmp_path_factory.mktemp("compare")
    tiny = tiny_llama_dir(root)
    plan = write_plan(root, str(tiny))
    db, out = root / "runs.duckdb", root / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), one_torch_thread():
        code = cli(
            "compare",
            str(plan),
            "--methods",
            "full,lora,qlora",
            "--max-steps",
            "2",
            "--db",
            str(db),
            "--output",
            str(out),
        )
    return code, buf.getvalue(), db, out


def test_compare_runs_every_method_and_records_the_group(real):
    code, text, db, out = real
    assert code == 0, text
    cols, rows = store.query(
        db,
        "SELECT r.method, r.status, r.steps, c.chosen_method, "
        "c.forgetting_tolerance, c.compare_id FROM comparisons c "
        "JOIN runs r USING (run_id) ORDER BY r.method",
    )
    assert [(m, s, n) for m, s, n, *_ in rows] == [
        ("full", "succeeded", 2),
        ("lora", "succeeded", 2),
        ("qlora", "succeeded", 2),
    ]
    assert {r[3] for r in rows} == {"lora"} and {r[4] for r in rows} == {"low"}
    assert len({r[5] for r in rows}) == 1
    # every variant was re-advised with that method's own settings
    variants = {
        m: Plan.model_validate_json((out / f"plan-{m}.json").read_text()) for m in ("full", "lora", "qlora")
    }
    assert {m: v.method for m, v in variants.items()} == {"full": "full", "lora": "lora", "qlora": "qlora"}
    assert variants["full"].lora is None and variants["qlora"].quantization is not None
    assert variants["full"].training.learning_rate < variants["lora"].training.learning_rate
    assert all(Path(v.data.train_path).is_absolute() for v in variants.values())
    for word in ("full", "lora (advised)", "qlora", "learning", "forgetting", "tok/s", "succeeded"):
        assert word in text
    assert "The evidence" in text and "LoRA for low forgetting tolerance" in text
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["advised_method"] == "lora" and set(saved["outcomes"]) == {"full", "lora", "qlora"}


def test_compare_check_and_rules_on_real_runs(real, capsys):
    _, _, db, _ = real
    assert cli("check", "--db", str(db), "--json", "--rules") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["runs"] == 3
    rules = {r["rule"]: r for r in out["rules"]}
    # The compare runs are a few steps long: each pair is found, but counts as inconclusive evidence
    # (below the audits' minimum of steps, docs/checks.md), so the gate can not pass on it.
    assert rules["TP023"]["inconclusive"] == 1 and rules["TP021"]["inconclusive"] == 2
    assert rules["TP023"]["tested"] == 0 and rules["TP021"]["status"] == "inconclusive"


# ------------------------------------------------------------------------- fake runner


def fake_runner(behaviour: dict[str, str]):
    """A run_plan stand-in: writes a run directory like the runner and records it, then
    succeeds, fails (RuntimeError) or is interrupted according to behaviour[method]."""

    def run(
        plan_path, *, data=None, db=None, output_dir=None, max_steps=None, progress=None, model_path=None
    ):
        plan = Plan.model_validate_json(Path(plan_path).read_text())
        what = behaviour.get(plan.method, "ok")
        run_id = f"run-{plan.method}"
        run_dir = Path(output_dir) / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "plan.json").write_text(Path(plan_path).read_text())
        status = {"ok": "succeeded", "fail": "failed", "interrupt": "interrupted"}[what]
        result = RunResult(
            run_id=run_id,
            status=status,
            plan_hash="0" * 16,
            method=plan.method,
            model="tiny",
            hardware="cpu",
            started_at="2025-01-01T00:00:00Z",
            run_dir=str(run_dir),
            predicted_peak_bytes=plan.memory.per_device_bytes,
            measured=MeasuredMemory(device_kind="cpu", peak_bytes=1_000_000),
            eval_loss_before=2.0,
            eval_loss_after=1.5 if status == "succeeded" else None,
            forgetting_loss_before=3.0,
            forgetting_loss_after=3.01 if status == "succeeded" else None,
            forgetting_tolerance=plan.inputs.task.forgetting_tolerance,
            domain_distance=plan.inputs.task.domain_distance,
            error=None if status == "succeeded" else "RuntimeError: boom",
        )
        (run_dir / "result.json").write_text(result.model_dump_json())
        store.record(db, result)
        if what == "fail":
            raise RuntimeError("boom")
        if what == "interrupt":
            raise KeyboardInterrupt
        return result

    return run


@pytest.fixture
def plan_file(tmp_path) -> Path:
    return write_plan(tmp_path, "tiny-model-not-loaded", tolerance="medium")


def test_failed_method_does_not_stop_the_others(tmp_path, plan_file, monkeypatch, capsys):
    import tuneplan.executor.runner as runner

    monkeypatch.setattr(runner, "run_plan", fake_runner({"full": "fail"}))
    db = tmp_path / "runs.duckdb"
    assert cli("compare", str(plan_file), "--db", str(db), "--output", str(tmp_path / "o")) == 1
    cols, rows = store.query(
        db, "SELECT method, status FROM comparison_runs JOIN runs USING (run_id) ORDER BY method"
    )
    assert rows == [("full", "failed"), ("lora", "succeeded"), ("qlora", "succeeded")]
    captured = capsys.readouterr()
    assert "full failed: RuntimeError: boom" in captured.err
    assert "not tested: full fine-tuning did not succeed" in captured.out


def test_interrupt_stops_and_exits_130(tmp_path, plan_file, monkeypatch, capsys):
    import tuneplan.executor.runner as runner

    monkeypatch.setattr(runner, "run_plan", fake_runner({"lora": "interrupt"}))
    db = tmp_path / "runs.duckdb"
    assert cli("compare", str(plan_file), "--db", str(db), "--output", str(tmp_path / "o")) == 130
    cols, rows = store.query(
        db, "SELECT method, status FROM comparison_runs JOIN runs USING (run_id) ORDER BY method"
    )
    assert rows == [("full", "succeeded"), ("lora", "interrupted")]  # qlora never started
    assert "interrupted" in capsys.readouterr().err


def test_bad_input_exits_2(tmp_path, plan_file, capsys):
    assert cli("compare", str(tmp_path / "missing.json")) == 2
    assert cli("compare", str(plan_file), "--methods", "full,bogus") == 2
    assert "--methods" in capsys.readouterr().err
    assert (
        cli(
            "compare",
            str(plan_file),
            "--methods",
            "lora",
            "--output",
            str(tmp_path / "o"),
            "--db",
            str(tmp_path / "r.duckdb"),
            "--model-path",
            str(tmp_path / "no-model"),
        )
        == 2
    )


# ------------------------------------------------------------------------------ judging


def o(method, learning, forgetting, measured=1000, status="succeeded"):
    return Outcome(
        method=method, status=status, learning=learning, forgetting=forgetting, measured_bytes=measured
    )


def test_judge_lora_low_tolerance():
    v, s = judge("lora", "low", {"full": o("full", 0.5, 0.10), "lora": o("lora", 0.3, 0.02)})
    assert v == "supported" and "forgot no more than full" in s and s.count(".") >= 1
    v, s = judge("lora", "low", {"full": o("full", 0.5, 0.01), "lora": o("lora", 0.3, 0.02)})
    assert v == "not supported" and "forgot more than full" in s
    v, s = judge("lora", "low", {"full": o("full", 0.5, 0.10), "lora": o("lora", -0.1, 0.0)})
    assert v == "not supported" and "did not learn" in s


def test_judge_full_high_tolerance():
    outs = {"full": o("full", 0.6, 0.3), "lora": o("lora", 0.4, 0.05)}
    assert judge("full", "high", outs)[0] == "supported"
    outs["lora"] = o("lora", 0.7, 0.05)
    v, s = judge("full", "high", outs)
    assert v == "not supported" and "LoRA learned more" in s
    v, s = judge("full", "medium", {"full": o("full", 0.6, 0.3), "lora": o("lora", 0.4, 0.05)})
    assert v == "not supported" and "beyond the medium limit" in s


def test_judge_qlora_and_missing_runs():
    outs = {
        "full": o("full", 0.5, 0.1),
        "lora": o("lora", 0.5, 0.05, 2000),
        "qlora": o("qlora", 0.45, 0.05, 1200),
    }
    assert judge("qlora", "medium", outs)[0] == "supported"
    outs["qlora"] = o("qlora", 0.45, 0.05, 2500)
    assert judge("qlora", "medium", outs)[0] == "not supported"
    v, s = judge("lora", "medium", {"lora": o("lora", 0.3, 0.0)})
    assert v == "supported" and "not tested: full fine-tuning did not run" in s
    v, s = judge("lora", "medium", {"lora": o("lora", None, None, status="failed")})
    assert v == "undecided" and "cannot judge" in s


def test_parse_methods():
    assert compare.parse_methods("qlora, LoRA") == ["qlora", "lora"]
    for bad in ("", "lora,lora", "x"):
        with pytest.raises(InputError):
            compare.parse_methods(bad)


def test_outcome_memory_error_is_like_for_like_on_tensor_bytes(tmp_path):
    """A CPU peak includes the runtime (MeasuredMemory.runtime_bytes): the comparison takes it out
    of the measurement as it takes the framework overhead out of the prediction."""
    from tuneplan.executor.compare import _outcome
    from tuneplan.executor.ledger.memory_compare import from_result

    plan = make_plan("lora", "tiny")
    tensors = plan.memory.per_device_bytes - plan.memory.breakdown.framework_overhead
    runtime = 400 << 20
    result = RunResult(
        run_id="r",
        status="succeeded",
        plan_hash="0" * 16,
        method="lora",
        model="tiny",
        hardware="cpu",
        started_at="2025-01-01T00:00:00Z",
        run_dir=str(tmp_path),
        predicted_peak_bytes=plan.memory.per_device_bytes,
        measured=MeasuredMemory(device_kind="cpu", peak_bytes=tensors + runtime, runtime_bytes=runtime),
    )
    out = _outcome("lora", plan, result)
    assert out.predicted_comparable_bytes == tensors and out.measured_comparable_bytes == tensors
    assert out.measured_bytes == tensors + runtime
    assert out.memory_error == 0.0 == from_result(result, plan).error
    assert (
        compare._as_dict(
            compare.Comparison("c", "lora", "lora", "low", "near", str(tmp_path), {"lora": out})
        )["outcomes"]["lora"]["memory_error"]
        == 0.0
    )
