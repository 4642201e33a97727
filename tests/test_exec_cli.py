"""The executor's subcommands (run, runs, runs ingest, sql, merge) through the root parser + dispatch()."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import duckdb
import pytest

import tuneplan.executor
from tuneplan.base.errors import InputError
from tuneplan.executor import ledger as store
from tuneplan.schemas.run import MeasuredMemory, RunResult
from helpers import cli
from tuneplan.cli.main import build_parser, dispatch

LIST_KEYS = {
    "run_id",
    "status",
    "method",
    "model",
    "num_processes",
    "predicted_peak_bytes",
    "measured_peak_bytes",
    "eval_loss_before",
    "eval_loss_after",
    "forgetting_loss_before",
    "forgetting_loss_after",
    "tokens_per_second",
    "wall_seconds",
}


def make_result(run_dir: Path, run_id: str = "r1", status: str = "succeeded", **extra) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    fields = dict(
        run_id=run_id,
        status=status,
        plan_hash="0123456789abcdef",
        method="lora",
        model="tiny",
        hardware="cpu (2 cores)",
        started_at="2025-01-01T10:00:00Z",
        finished_at="2025-01-01T10:05:00Z",
        run_dir=str(run_dir),
        predicted_peak_bytes=3 * 1024**3,
        measured=MeasuredMemory(device_kind="cpu", peak_bytes=2 * 1024**3),
        eval_loss_before=2.5,
        eval_loss_after=2.0,
        forgetting_loss_before=3.0,
        forgetting_loss_after=3.1,
        steps=10,
        tokens=4096,
        tokens_per_second=1234.0,
        wall_seconds=12.0,
    )
    fields.update(extra)
    return RunResult(**fields)


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "runs.duckdb"
    store.record(
        path,
        make_result(tmp_path / "runs" / "r1", "r1"),
        [{"step": 1, "loss": 2.4}, {"step": 2, "loss": 2.1}],
    )
    store.record(
        path,
        make_result(
            tmp_path / "runs" / "r2",
            "r2",
            status="failed",
            started_at="2025-01-02T10:00:00Z",
            measured=None,
            error="RuntimeError: boom",
        ),
    )
    return path


def test_module_import_stays_light():
    code = (
        "import sys, tuneplan.cli.main; "
        "print(sorted(m for m in ('duckdb', 'torch', 'rich', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_register_sets_func_on_every_subcommand():
    parser = build_parser()
    for argv in (["run", "p.json"], ["runs"], ["runs", "ingest", "x"], ["sql", "SELECT 1"], ["merge", "d"]):
        assert callable(parser.parse_args(argv).func)
    assert dispatch(argparse.Namespace()) == 2


# --------------------------------------------------------------------------------------------
# runs


def test_runs_json_keys_and_order(db, capsys):
    assert cli("runs", "--db", str(db), "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == ["r2", "r1"]
    for r in rows:
        assert LIST_KEYS <= set(r)
    assert rows[1]["memory_error"] == pytest.approx(0.5)
    assert rows[0]["status"] == "failed" and rows[0]["error"] == "RuntimeError: boom"
    assert cli("runs", "--db", str(db), "--json", "--limit", "1") == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r2"]


def test_runs_table(db, capsys):
    assert cli("runs", "--db", str(db)) == 0
    out = capsys.readouterr().out
    for text in (
        "r1",
        "r2",
        "succeeded",
        "failed",
        "lora",
        "3.00 / 2.00",
        "+50.0%",
        "2.500→2.000",
        "3.000→3.100",
        "1,234",
        "12.0",
    ):
        assert text in out


GIB = 1024**3
LFL_PLAN = {"memory": {"breakdown": {"framework_overhead": GIB // 2}}}
"""A plan.json that is all the like-for-like comparison reads: 0.5 GiB framework overhead."""


def lfl_result(tmp_path: Path, run_id: str) -> RunResult:
    """A CPU run predicted at 3 GiB (0.5 framework overhead) that measured 2 GiB, 0.5 of it the
    runtime: like-for-like 2.5 vs 1.5 GiB of tensors, +66.7% (raw +50.0%)."""
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(json.dumps(LFL_PLAN))
    return make_result(
        run_dir,
        run_id,
        measured=MeasuredMemory(device_kind="cpu", peak_bytes=2 * GIB, runtime_bytes=GIB // 2),
    )


def test_runs_show_like_for_like_error(tmp_path, capsys):
    from tuneplan.executor.ledger.memory_compare import from_result

    db = tmp_path / "runs.duckdb"
    result = lfl_result(tmp_path, "r-lfl")
    store.record(db, result)
    assert from_result(result).error == pytest.approx(1 / 1.5)
    assert cli("runs", "--db", str(db), "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["memory_error"] == pytest.approx(0.5)
    assert row["memory_error_comparable"] == from_result(result).error
    assert row["runtime_bytes"] == GIB // 2 and row["predicted_overhead_bytes"] == GIB // 2
    _, sql = store.query(db, "SELECT memory_error_comparable FROM run_memory_checks")
    assert sql[0][0] == from_result(result).error
    assert cli("runs", "--db", str(db)) == 0
    out = capsys.readouterr().out
    for text in ("err like-for-like", "3.00 / 2.00", "+50.0%", "+66.7%"):
        assert text in out


def test_runs_missing_db_is_empty_not_an_error(tmp_path, capsys):
    missing = tmp_path / "nope" / "runs.duckdb"
    assert cli("runs", "--db", str(missing), "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "no runs yet" in captured.err and str(missing) in captured.err
    assert cli("runs", "--db", str(missing)) == 0
    assert "no runs yet" in capsys.readouterr().err
    assert not missing.exists()


def test_runs_ingest(tmp_path, capsys):
    result = make_result(tmp_path / "runs" / "abc", "abc")
    (tmp_path / "runs" / "abc" / "result.json").write_text(result.model_dump_json())
    (tmp_path / "runs" / "abc" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    db = tmp_path / "db" / "runs.duckdb"
    assert cli("runs", "ingest", str(tmp_path / "runs"), "--db", str(db)) == 0
    out = capsys.readouterr().out
    assert "ingested 1 run" in out and "abc" in out and str(db) in out
    # --db before the subcommand works too
    assert cli("runs", "--db", str(db), "ingest", str(tmp_path / "runs" / "abc")) == 0
    capsys.readouterr()
    assert [r["run_id"] for r in store.list_runs(db)] == ["abc"]

    assert cli("runs", "ingest", str(tmp_path / "missing"), "--db", str(db)) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "no such file" in err


# --------------------------------------------------------------------------------------------
# sql


def test_sql_formats(db, capsys):
    query = (
        "SELECT run_id, status, relative_error FROM runs JOIN run_predictions USING (run_id) ORDER BY run_id"
    )
    assert cli("sql", query, "--db", str(db), "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines() == [
        "run_id,status,relative_error",
        "r1,succeeded,0.5",
        "r2,failed,",
    ]
    assert cli("sql", query, "--db", str(db), "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {"run_id": "r1", "status": "succeeded", "relative_error": 0.5},
        {"run_id": "r2", "status": "failed", "relative_error": None},
    ]
    assert (
        cli(
            "sql",
            "SELECT run_id, started_at, substitutions FROM runs ORDER BY 1",
            "--db",
            str(db),
            "--format",
            "json",
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"run_id": "r1", "started_at": "2025-01-01T10:00:00", "substitutions": []}
    assert cli("sql", query, "--db", str(db)) == 0
    out = capsys.readouterr().out
    assert "relative_error" in out and "r1" in out and "2 rows" in out


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM runs",
        "DROP TABLE runs",
        "INSERT INTO metrics VALUES ('r1', 9, 0, 0, 0, 0, 0)",
        "CREATE TABLE x (a INT)",
        "COPY runs TO 'out.csv'",
        "ATTACH 'other.duckdb'",
    ],
)
def test_sql_refuses_writes(db, capsys, sql, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("sql", sql, "--db", str(db)) == 2
    captured = capsys.readouterr()
    assert "refused" in captured.err and "read-only" in captured.err
    assert captured.out == ""
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM metrics").fetchone() == (2,)
    con.close()
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_sql_missing_db_and_bad_sql_exit_2(tmp_path, db, capsys):
    missing = tmp_path / "missing.duckdb"
    assert cli("sql", "SELECT 1", "--db", str(missing)) == 2
    err = capsys.readouterr().err
    assert "no runs yet" in err and str(missing) in err
    assert not missing.exists()
    assert cli("sql", "SELECT * FROM nope", "--db", str(db)) == 2
    assert "nope" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# run (with a stand-in runner: the real one trains)


@pytest.fixture
def plan(tmp_path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text("{}")
    return path


def fake_runner(monkeypatch, behaviour):
    calls = []

    def run_plan(
        plan_path,
        *,
        data=None,
        db=None,
        output_dir=None,
        max_steps=None,
        progress=None,
        model_path=None,
        trust_remote_code=False,
        resume=None,
        report_to=None,
    ):
        calls.append(
            dict(
                plan_path=plan_path,
                data=data,
                db=db,
                output_dir=output_dir,
                max_steps=max_steps,
                model_path=model_path,
            )
        )
        assert trust_remote_code is False and resume is None and report_to is None
        return behaviour(db)

    module = types.ModuleType("tuneplan.executor.runner")
    module.run_plan = run_plan
    monkeypatch.setitem(sys.modules, "tuneplan.executor.runner", module)
    return calls


def test_run_success_prints_summary(tmp_path, plan, monkeypatch, capsys):
    result = make_result(tmp_path / "out" / "r9", "r9", substitutions=["bf16-mixed -> fp32 on CPU"])
    calls = fake_runner(monkeypatch, lambda db: result)
    code = cli(
        "run",
        str(plan),
        "--data",
        "d.jsonl",
        "--db",
        "x.duckdb",
        "--output",
        "out",
        "--max-steps",
        "3",
        "--model-path",
        "m",
    )
    assert code == 0
    assert calls == [
        dict(
            plan_path=str(plan), data="d.jsonl", db="x.duckdb", output_dir="out", max_steps=3, model_path="m"
        )
    ]
    out = capsys.readouterr().out
    for text in (
        "r9",
        str(tmp_path / "out" / "r9"),
        "predicted 3.00 GiB",
        "measured 2.00 GiB",
        "+50.0%",
        "2.500→2.000",
        "3.000→3.100",
        "1,234 tokens/s",
        "bf16-mixed -> fp32 on CPU",
    ):
        assert text in out
    # no plan.json in the run directory and no runtime: like-for-like is the raw comparison
    assert "like-for-like error +50.0%" in out


def test_run_summary_shows_like_for_like_error(tmp_path, plan, monkeypatch, capsys):
    result = lfl_result(tmp_path, "r-lfl")
    fake_runner(monkeypatch, lambda db: result)
    assert cli("run", str(plan), "--db", str(tmp_path / "x.duckdb")) == 0
    out = capsys.readouterr().out
    assert "peak       predicted 3.00 GiB, measured 2.00 GiB (prediction +50.0%) [cpu]" in out
    assert (
        "tensors    predicted 2.50 GiB, measured 1.50 GiB (like-for-like error +66.7%; "
        "prediction less 0.50 GiB framework overhead, peak less 0.50 GiB runtime)"
    ) in out


def test_run_input_error_exits_2(plan, monkeypatch, capsys):
    def bad(db):
        raise InputError.one("training.learning_rate", "must be < 1", "use 2e-4")

    fake_runner(monkeypatch, bad)
    assert cli("run", str(plan)) == 2
    err = capsys.readouterr().err
    assert "training.learning_rate" in err and "use 2e-4" in err


def test_run_missing_plan_exits_2(tmp_path, capsys):
    assert cli("run", str(tmp_path / "nope.json")) == 2
    assert "nope.json" in capsys.readouterr().err


def test_run_interrupted_exits_130(plan, monkeypatch, capsys):
    def interrupted(db):
        raise KeyboardInterrupt

    fake_runner(monkeypatch, interrupted)
    assert cli("run", str(plan)) == 130
    assert "interrupted" in capsys.readouterr().err


def test_run_failure_exits_1_and_names_run_dir(tmp_path, plan, monkeypatch, capsys):
    db = tmp_path / "runs.duckdb"
    run_dir = tmp_path / "out" / "failed-run"

    def fail(db_arg):
        from datetime import datetime, timezone

        from tuneplan.executor.signals import Recorded

        now = datetime.now(timezone.utc).isoformat()
        store.record(
            db_arg,
            make_result(
                run_dir, "failed-run", status="failed", started_at=now, error="RuntimeError: out of memory"
            ),
        )
        exc = RuntimeError("out of memory")
        exc.recorded = Recorded(run_dir=str(run_dir), result_status="failed", db_status="failed")
        raise exc

    fake_runner(monkeypatch, fail)
    assert cli("run", str(plan), "--db", str(db)) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: out of memory" in err and str(run_dir) in err
    assert "result.json says failed, the database row matches" in err


def test_run_multi_process_calls_launcher(plan, monkeypatch):
    seen = []
    module = types.ModuleType("tuneplan.executor.distributed.launch")
    module.launch = lambda plan_path, args, **_: seen.append((plan_path, args.num_processes)) or 0
    monkeypatch.setitem(sys.modules, "tuneplan.executor.distributed.launch", module)
    monkeypatch.setattr(tuneplan.executor, "launch", module, raising=False)
    from tuneplan.executor import preflight

    monkeypatch.setattr(preflight, "preflight", lambda *a, **k: None)  # the plan is a stand-in "{}"
    assert cli("run", str(plan), "--num-processes", "4") == 0
    assert seen == [(str(plan), 4)]


def test_run_rejects_bad_numbers(plan):
    with pytest.raises(SystemExit) as info:
        cli("run", str(plan), "--max-steps", "0")
    assert info.value.code == 2


# --------------------------------------------------------------------------------------------
# merge


def test_merge_calls_merge_run(tmp_path, monkeypatch, capsys):
    seen = []
    module = types.ModuleType("tuneplan.executor.merge")

    def merge_run(run_dir, out=None, *, trust_remote_code=False):
        seen.append((run_dir, out, trust_remote_code))
        return Path(out or run_dir) / "merged"

    module.merge_run = merge_run
    monkeypatch.setitem(sys.modules, "tuneplan.executor.merge", module)
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    assert cli("merge", str(run_dir), "--out", str(tmp_path / "m")) == 0
    assert seen == [(str(run_dir), str(tmp_path / "m"), False)]
    assert str(tmp_path / "m" / "merged") in capsys.readouterr().out
    assert cli("merge", str(tmp_path / "missing")) == 2
