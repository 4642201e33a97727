"""The run ledger (tuneplan.executor.ledger) as a package: migrations as numbered .sql files,
every view defined once, derived numbers defined once (Python mirrors equal to the views on real
rows), plan values recorded as columns, reads that never write, comparisons that survive ingest,
and the planned next to the used device. Real DuckDB files and rows throughout."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ledger_fixtures import FROZEN, old_ledger_schema
from tuneplan.executor import ledger
from tuneplan.executor.ledger import calibrate, check
from tuneplan.executor.ledger.memory_compare import from_result, like_for_like
from tuneplan.schemas.run import MeasuredMemory, RunResult

PACKAGE = Path(ledger.__file__).parent
migrate = importlib.import_module("tuneplan.executor.ledger.migrate")  # the package exports the function
MIB = 1 << 20


def _plan(overhead: int, *, gpu: str = "H200 SXM 141GB", lr: float = 2e-4, rank: int = 16) -> dict:
    return {
        "method": "lora",
        "inputs": {"model": {"name": "tiny"}, "hardware": {"kind": "gpu", "name": gpu}},
        "training": {"learning_rate": lr, "per_device_batch_size": 2, "gradient_accumulation_steps": 4},
        "lora": {"rank": rank, "target_modules": ["q_proj", "v_proj"]},
        "memory": {"breakdown": {"framework_overhead": overhead}},
    }


def _result(
    run_dir: Path,
    run_id: str,
    *,
    predicted=1000 * MIB,
    measured=900 * MIB,
    runtime=0,
    status="succeeded",
    hardware="cuda: NVIDIA H200",
    method="lora",
    **kw,
) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    mem = (
        None
        if measured is None
        else MeasuredMemory(device_kind="cuda", peak_bytes=measured, runtime_bytes=runtime)
    )
    fields = dict(
        run_id=run_id,
        status=status,
        plan_hash="h",
        method=method,
        model="tiny",
        hardware=hardware,
        started_at="2025-01-01T10:00:00Z",
        finished_at="2025-01-01T10:01:00Z",
        predicted_peak_bytes=predicted,
        predicted_fits=True,
        measured=mem,
        run_dir=str(run_dir),
        eval_loss_before=2.0,
        eval_loss_after=1.5,
        forgetting_loss_before=3.0,
        forgetting_loss_after=3.1,
        forgetting_tolerance="medium",
        steps=30,
    )
    fields.update(kw)
    return RunResult(**fields)


def _record(db: Path, root: Path, run_id: str, plan: dict | None, **kw) -> RunResult:
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if plan is not None:
        (run_dir / "plan.json").write_text(json.dumps(plan))
    result = _result(run_dir, run_id, **kw)
    (run_dir / "result.json").write_text(result.model_dump_json())  # as the runner writes it
    ledger.record(db, result)
    return result


# ------------------------------------------------------------------------------ the SQL files


def test_migrations_are_numbered_sql_files_shipped_as_package_data():
    files = sorted(p.name for p in (PACKAGE / "migrations").glob("*.sql"))
    assert (
        [int(f[:4]) for f in files] == list(range(1, len(files) + 1)) == [v for v, _, _ in ledger.MIGRATIONS]
    )
    assert ledger.SCHEMA_VERSION == len(files) >= 7
    pyproject = (PACKAGE.parents[1] / "pyproject.toml").read_text()
    assert '"tuneplan.executor.ledger" = ["*.sql", "migrations/*.sql"]' in pyproject


def test_migration_1_creates_the_tables_schema_1_shipped():
    """The .sql file of migration 1 is the frozen schema 1 (same tables, same columns, same types)."""

    def tables(sql: str) -> list:
        con = duckdb.connect()
        con.execute(sql)
        return con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE NOT internal ORDER BY table_name, column_index"
        ).fetchall()

    assert tables((PACKAGE / "migrations" / "0001_runs_and_metrics.sql").read_text()) == tables(
        (FROZEN / "0001.sql").read_text()
    )


def test_every_view_is_defined_once_in_views_sql_and_none_reads_the_plan_blob():
    names = migrate.view_names()
    assert len(names) == len(set(names)) >= 12
    for path in list(PACKAGE.rglob("*.py")) + list(PACKAGE.rglob("*.sql")):
        if path.name != "views.sql":
            assert not re.search(r"CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+\w+\s+AS", path.read_text(), re.I), path
    views = (PACKAGE / "views.sql").read_text()
    assert "plan_json" not in views and "json_extract" not in views
    # the plan JSON is read in exactly one file (macros.sql), used at record time and by migration 7
    readers = [
        p.name
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".sql") and "json_extract" in p.read_text() and "migrations" not in p.parts
    ]
    assert readers == ["macros.sql"]


def test_views_are_recreated_on_writable_connect(tmp_path):
    db = tmp_path / "runs.duckdb"
    ledger.connect(db).close()
    con = duckdb.connect(str(db))
    con.execute("CREATE OR REPLACE VIEW run_learning AS SELECT 1 AS stale")
    con.execute("UPDATE schema_views SET hash = 'another-version'")
    con.close()
    con = ledger.connect(db)
    try:
        assert [r[0] for r in con.execute("DESCRIBE run_learning").fetchall()] == [
            "run_id",
            "learning",
            "forgetting",
        ]
        assert con.execute("SELECT hash FROM schema_views").fetchall() == [(migrate.VIEWS_HASH,)]
    finally:
        con.close()


# ------------------------------------------------------------------------ one definition each


def test_python_mirror_equals_the_view_on_real_rows(tmp_path):
    """ledger/memory_compare.py (used before a run is a row) gives exactly the numbers of the
    run_memory_checks view and list_runs, on runs with and without plan, runtime or measurement."""
    db = tmp_path / "runs.duckdb"
    cases = [
        ("cuda", _plan(300 * MIB), dict(predicted=1500 * MIB, measured=1000 * MIB, runtime=0)),
        ("cpu", _plan(420 * MIB), dict(predicted=1000 * MIB, measured=1000 * MIB, runtime=400 * MIB)),
        ("noplan", None, dict(predicted=800 * MIB, measured=1000 * MIB, runtime=0)),
        ("unmeasured", _plan(5), dict(measured=None, status="failed", error="boom")),
        ("under", _plan(0), dict(predicted=500, measured=1000, runtime=100)),
    ]
    results = {rid: _record(db, tmp_path / "runs", rid, plan, **kw) for rid, plan, kw in cases}
    _, rows = ledger.query(
        db,
        "SELECT run_id, predicted_comparable_bytes, measured_comparable_bytes, "
        "memory_error, memory_error_comparable, memory_under_predicted "
        "FROM run_memory_checks ORDER BY run_id",
    )
    listed = {r["run_id"]: r for r in ledger.list_runs(db)}
    checked = {r["run_id"]: r for r in check.check_runs(db)["runs"]}
    assert len(rows) == len(cases)
    for run_id, pred, meas, raw, lfl_error, under in rows:
        lfl = from_result(results[run_id])
        assert (lfl.predicted_comparable_bytes, lfl.measured_comparable_bytes) == (pred, meas)
        assert lfl.error == lfl_error and lfl.raw_error == raw  # the same float, not just close
        assert listed[run_id]["memory_error_comparable"] == lfl_error
        assert listed[run_id]["memory_error"] == raw
        assert checked[run_id]["memory_error_comparable"] == lfl_error
        assert checked[run_id]["memory_under_predicted"] == (None if lfl_error is None else under)
        mirror = like_for_like(
            listed[run_id]["predicted_peak_bytes"],
            listed[run_id]["predicted_overhead_bytes"],
            listed[run_id]["measured_peak_bytes"],
            listed[run_id]["runtime_bytes"],
        )
        assert mirror.error == lfl_error
    assert listed["under"]["memory_error_comparable"] == pytest.approx((500 - 900) / 900)
    assert checked["under"]["verdict"] == "broken" and checked["cuda"]["verdict"] == "held"
    # learning and forgetting: the view's numbers are the ones check and list_runs report
    _, learn = ledger.query(db, "SELECT run_id, learning, forgetting FROM run_learning ORDER BY run_id")
    for run_id, learning, forgetting in learn:
        assert listed[run_id]["learning"] == checked[run_id]["learning"] == learning == 0.5
        assert listed[run_id]["forgetting"] == checked[run_id]["forgetting"] == forgetting
        assert forgetting == pytest.approx(0.1)


def test_memory_error_has_one_name_across_views(tmp_path):
    """memory_error (raw) and memory_error_comparable (like-for-like), in run_memory_checks only;
    relative_error survives only as run_predictions' documented alias; aggregates are mean_<name>."""
    db = tmp_path / "runs.duckdb"
    _record(db, tmp_path / "runs", "a", _plan(10))
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal "
            "AND (column_name LIKE '%memory_error%' OR column_name LIKE '%relative_error%')"
        ).fetchall()
        same = con.execute(
            "SELECT m.memory_error, p.relative_error FROM run_memory_checks m "
            "JOIN run_predictions p USING (run_id)"
        ).fetchone()
    finally:
        con.close()
    per_run = {(t, c) for t, c in cols if not c.startswith("mean_")}
    assert per_run == {
        ("run_memory_checks", "memory_error"),
        ("run_memory_checks", "memory_error_comparable"),
        ("run_predictions", "relative_error"),
    }
    assert {c for _, c in cols if c.startswith("mean_")} <= {
        "mean_memory_error",
        "mean_abs_memory_error",
        "mean_memory_error_comparable",
        "mean_abs_memory_error_comparable",
    }
    assert same[0] == same[1] is not None


def test_per_run_views_join_with_runs_and_each_other_using_run_id(tmp_path):
    db = tmp_path / "runs.duckdb"
    _record(db, tmp_path / "runs", "a", _plan(10))
    con = duckdb.connect(str(db), read_only=True)
    try:
        views = ["run_memory_checks", "run_predictions", "run_learning", "run_settings"]
        columns = {n: {r[0] for r in con.execute(f"DESCRIBE {n}").fetchall()} for n in views + ["runs"]}
        for i, a in enumerate(views + ["runs"]):
            for b in (views + ["runs"])[i + 1 :]:
                assert columns[a] & columns[b] == {"run_id"}, (a, b, columns[a] & columns[b])
        joined = " ".join(f"JOIN {v} USING (run_id)" for v in views)
        cur = con.execute(f"SELECT * FROM runs {joined}")
        row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
        assert row["method"] == "lora" and row["learning"] == 0.5 and row["lora_rank"] == 16
        assert len(cur.description) == len(set().union(*columns.values()))
    finally:
        con.close()


# ------------------------------------------------------------------------ recorded columns


def test_plan_values_are_columns_written_at_record_time(tmp_path):
    db = tmp_path / "runs.duckdb"
    _record(db, tmp_path / "runs", "a", _plan(123, gpu="A100 80GB", lr=1e-3, rank=8))
    (tmp_path / "runs" / "a" / "plan.json").unlink()  # a later write without plan.json keeps it all
    ledger.record(db, _result(tmp_path / "runs" / "a", "a", status="succeeded"))
    _, rows = ledger.query(
        db,
        "SELECT predicted_overhead_bytes, planned_hardware, hardware, "
        "s.settings.learning_rate, s.settings.lora_rank, s.settings.target_modules "
        "FROM runs JOIN plan_settings s USING (run_id)",
    )
    assert rows == [(123, "A100 80GB", "cuda: NVIDIA H200", 1e-3, 8, ["q_proj", "v_proj"])]
    _, settings = ledger.query(db, "SELECT planned_gpu, effective_batch FROM run_settings")
    assert settings == [("A100 80GB", 8)]
    (listed,) = ledger.list_runs(db)
    assert (listed["planned_hardware"], listed["hardware"]) == ("A100 80GB", "cuda: NVIDIA H200")


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_every_old_schema_upgrades_in_place_with_backfilled_columns(tmp_path, version):
    db = tmp_path / f"v{version}.duckdb"
    con = duckdb.connect(str(db))
    assert old_ledger_schema(con, version) == list(range(1, version + 1))
    con.execute(
        "INSERT INTO runs (run_id, status, method, predicted_peak_bytes, measured_peak_bytes, "
        "plan_json, result_json) VALUES ('old', 'succeeded', 'lora', 1500, 1000, ?, ?), "
        "('bare', 'failed', 'full', 10, NULL, NULL, NULL)",
        [
            json.dumps(_plan(300, gpu="L4 24GB", rank=4)),
            json.dumps(
                {
                    "measured": {"peak_bytes": 1000, "runtime_bytes": 200},
                    "best_step": 1,
                    "best_eval_loss": 1.25,
                    "early_stopped": True,
                    "stop_reason": "early stop",
                }
            ),
        ],
    )
    con.execute("INSERT INTO metrics VALUES ('old', 1, 2.0, 1e-4, 0.5, 10, 0.1)")
    con.close()
    before = db.read_bytes()
    with pytest.raises(ledger.SchemaOutdated, match=f"schema version {version}"):
        ledger.list_runs(db)
    assert db.read_bytes() == before  # a read never upgrades

    con = ledger.connect(db)
    try:
        assert ledger.schema_version(con) == ledger.SCHEMA_VERSION
        assert [r[0] for r in con.execute("DESCRIBE runs").fetchall()] == [c for c, _ in ledger.RUN_COLUMNS]
        assert con.execute(
            "SELECT run_id, predicted_overhead_bytes, planned_hardware, runtime_bytes "
            "FROM runs ORDER BY run_id"
        ).fetchall() == [("bare", 0, None, None), ("old", 300, "L4 24GB", 200 if version < 4 else None)]
        assert con.execute(
            "SELECT run_id, lora_rank, planned_gpu FROM run_settings ORDER BY run_id"
        ).fetchall() == [("bare", None, None), ("old", 4, "L4 24GB")]
        assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == 1
        # migration 10: the run's best step back-filled from result_json; old metrics rows keep NULL
        assert con.execute(
            "SELECT run_id, best_step, eval_loss_best, early_stopped, stop_reason FROM runs ORDER BY run_id"
        ).fetchall() == [("bare", None, None, None, None), ("old", 1, 1.25, True, "early stop")]
        assert con.execute(
            "SELECT eval_loss, probe_loss, trained_tokens, positions FROM metrics"
        ).fetchall() == [(None, None, None, None)]
    finally:
        con.close()
    (old,) = [r for r in ledger.list_runs(db) if r["run_id"] == "old"]
    expected = like_for_like(1500, 300, 1000, 200 if version < 4 else 0).error
    assert old["memory_error_comparable"] == expected


def test_schema_9_upgrades_to_per_step_eval_losses_and_ingest_fills_them(tmp_path):
    """A database as schema 9 wrote it (metrics without eval columns) upgrades in place; the run's
    metrics.jsonl, ingested again, fills eval_loss / probe_loss; run_best_eval reads them."""
    from tuneplan.executor.ledger.migrate import migrate

    db = tmp_path / "v9.duckdb"
    run_dir = tmp_path / "runs" / "a"
    # a run directory with result.json (best step 3) and plan.json
    _record(db, tmp_path / "runs", "a", _plan(10), best_step=3, best_eval_loss=1.6)
    steps = [
        {
            "step": 1,
            "loss": 2.0,
            "lr": 1e-4,
            "grad_norm": 0.5,
            "tokens": 10,
            "trained_tokens": 6,
            "positions": 16,
            "elapsed_s": 0.1,
            "eval_loss": 1.8,
            "probe_loss": 3.0,
        },
        {
            "step": 2,
            "loss": 1.5,
            "lr": 1e-4,
            "grad_norm": 0.4,
            "tokens": 12,
            "trained_tokens": 7,
            "positions": 16,
            "elapsed_s": 0.2,
        },
        {
            "step": 3,
            "loss": 1.2,
            "lr": 1e-4,
            "grad_norm": 0.3,
            "tokens": 11,
            "trained_tokens": 6,
            "positions": 16,
            "elapsed_s": 0.3,
            "eval_loss": 1.6,
            "probe_loss": 3.1,
        },
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    migrate(con, target=9)
    con.execute(
        "INSERT INTO runs (run_id, status, method, run_dir) VALUES ('a', 'succeeded', 'lora', ?)",
        [str(run_dir)],
    )
    con.execute("INSERT INTO metrics VALUES ('a', 1, 2.0, 1e-4, 0.5, 10, 0.1)")
    con.close()
    con = ledger.connect(old)
    try:
        assert ledger.schema_version(con) == ledger.SCHEMA_VERSION
        assert [r[0] for r in con.execute("DESCRIBE metrics").fetchall()] == [
            c for c, _ in ledger.METRIC_COLUMNS
        ]
        assert con.execute("SELECT step, eval_loss FROM metrics").fetchall() == [(1, None)]
        assert con.execute("SELECT count(*) FROM run_best_eval").fetchone()[0] == 0
    finally:
        con.close()
    assert ledger.ingest(old, [run_dir]) == ["a"]
    _, rows = ledger.query(
        old, "SELECT step, eval_loss, probe_loss, trained_tokens, positions FROM metrics ORDER BY step"
    )
    assert rows == [(1, 1.8, 3.0, 6, 16), (2, None, None, 7, 16), (3, 1.6, 3.1, 6, 16)]
    _, best = ledger.query(
        old,
        "SELECT run_id, evaluations, best_step, eval_loss_best, round(best_learning, 6), "
        "round(forgetting_at_best, 6) FROM run_best_eval JOIN runs USING (run_id)",
    )
    assert best == [("a", 2, 3, 1.6, 0.4, 0.1)]  # eval_loss_before 2.0, probe before 3.0
    _, curve = ledger.query(
        old, "SELECT step, round(step_learning, 6), is_best_step FROM run_eval_steps ORDER BY step"
    )
    assert curve == [(1, 0.2, False), (3, 0.4, True)]


# ------------------------------------------------------------------------------ reads never write


def test_read_only_entry_points_refuse_an_outdated_database_and_leave_it_unchanged(tmp_path):
    db = tmp_path / "runs.duckdb"
    _record(db, tmp_path / "runs", "a", _plan(10))
    con = duckdb.connect(str(db))
    con.execute("UPDATE schema_views SET hash = 'views-of-another-version'")
    con.close()
    before = db.read_bytes()
    from tuneplan.executor.ledger.report import write_report

    for read in (
        lambda: ledger.list_runs(db),
        lambda: check.check_runs(db),
        lambda: check.audit_rules(db),
        lambda: ledger.query(db, "SELECT 1"),
        lambda: calibrate.fit(db),
        lambda: write_report(db, tmp_path / "report"),
    ):
        with pytest.raises(
            ledger.SchemaOutdated, match="views from another tuneplan version.*tuneplan runs upgrade"
        ):
            read()
    assert db.read_bytes() == before
    ledger.connect(db).close()  # what a writing command does
    assert [r["run_id"] for r in ledger.list_runs(db)] == ["a"]


def test_listing_runs_imports_no_training_stack_and_no_other_executor_module(tmp_path):
    db = tmp_path / "runs.duckdb"
    _record(db, tmp_path / "runs", "a", _plan(10))
    code = (
        "import sys\n"
        "from tuneplan.executor import ledger\n"
        f"assert [r['run_id'] for r in ledger.list_runs({str(db)!r})] == ['a']\n"
        f"ledger.query({str(db)!r}, 'SELECT * FROM run_settings')\n"
        "from tuneplan.executor.ledger import check, report, calibrate, sqldocs, markdown\n"
        f"check.check_runs({str(db)!r})\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', "
        "'bitsandbytes', 'accelerate', 'textual')]\n"
        "other = [m for m in sys.modules if m.startswith('tuneplan.executor.') "
        "and not m.startswith('tuneplan.executor.ledger')]\n"
        "print(heavy, other)\n"
        "assert not heavy and not other\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout


# ------------------------------------------------------------------------- ingest and trials


def test_ingest_brings_comparison_and_sweep_trials_back(tmp_path):
    """Pooled run directories: a fresh database ingesting them gets the comparisons rows, so the
    rule audits work on pooled runs (trial.json in each run directory)."""
    db = tmp_path / "runs.duckdb"
    root = tmp_path / "out"
    for rid, method, lr in (
        ("l", "lora", 1e-4),
        ("q", "qlora", 1e-4),
        ("s1", "lora", 1e-3),
        ("s2", "lora", 3e-3),
    ):
        _record(
            db, root, rid, _plan(10, lr=lr), method=method, measured=(500 if method == "qlora" else 900) * MIB
        )
    ledger.record_comparison(db, "cmp1", "l", "lora", "lora", "medium", run_dir=root / "l")
    ledger.record_comparison(db, "cmp1", "q", "qlora", "lora", "medium")  # run_dir looked up
    for rid, value in (("s1", "0.001"), ("s2", "0.003")):
        ledger.record_comparison(
            db,
            "sw1",
            rid,
            "lora",
            "lora",
            "medium",
            axis="learning_rate",
            value=value,
            advised_value="0.0002",
            run_dir=root / rid,
        )
    assert json.loads((root / "q" / "trial.json").read_text())["compare_id"] == "cmp1"
    query = (
        "SELECT compare_id, run_id, method, chosen_method, forgetting_tolerance, axis, value, "
        "advised_value FROM comparisons ORDER BY compare_id, run_id"
    )
    _, recorded = ledger.query(db, query)

    pooled = tmp_path / "pooled.duckdb"
    assert sorted(ledger.ingest(pooled, [root])) == ["l", "q", "s1", "s2"]
    _, ingested = ledger.query(pooled, query)
    assert ingested == recorded and len(ingested) == 4
    _, audit = ledger.query(pooled, "SELECT compare_id, qlora_less_memory FROM audit_qlora_vs_lora_memory")
    assert audit == [("cmp1", True)]
    _, trials = ledger.query(
        pooled,
        "SELECT run_id, learning_rate FROM sweep_trials JOIN run_settings USING (run_id) "
        "WHERE compare_id = 'sw1' ORDER BY run_id",
    )
    assert trials == [("s1", 1e-3), ("s2", 3e-3)]


def test_ingest_reads_comparison_json_of_compare_outputs_without_trial_files(tmp_path):
    root = tmp_path / "out"
    for rid, method in (("f", "full"), ("l", "lora")):
        _result(root / rid, rid, method=method)
        (root / rid / "result.json").write_text(_result(root / rid, rid, method=method).model_dump_json())
    (root / "comparison.json").write_text(
        json.dumps(
            {
                "compare_id": "c-old",
                "advised_method": "lora",
                "forgetting_tolerance": "low",
                "outcomes": {"full": {"run_id": "f"}, "lora": {"run_id": "l"}, "qlora": {"run_id": None}},
            }
        )
    )
    db = tmp_path / "runs.duckdb"
    assert ledger.ingest(db, [root]) == ["f", "l"]
    _, rows = ledger.query(
        db,
        "SELECT compare_id, run_id, method, chosen_method, forgetting_tolerance, "
        "axis FROM comparisons ORDER BY run_id",
    )
    assert rows == [
        ("c-old", "f", "full", "lora", "low", "method"),
        ("c-old", "l", "lora", "lora", "low", "method"),
    ]


# ------------------------------------------------------------------------------- the commands


def _old_db(tmp_path: Path) -> Path:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    old_ledger_schema(con, 6)
    con.execute(
        "INSERT INTO runs (run_id, status, method, predicted_peak_bytes, measured_peak_bytes, "
        "plan_json) VALUES ('old', 'succeeded', 'lora', 1500, 1000, ?)",
        [json.dumps(_plan(300))],
    )
    con.close()
    return db


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["check", "--rules"],
        ["runs"],
        ["runs", "--json"],
        ["sql", "SELECT 1"],
        ["calibrate"],
        ["report", "--out", "REPORT"],
    ],
)
def test_read_only_commands_exit_2_on_an_old_database_and_name_the_upgrade(tmp_path, capsys, argv):
    from helpers import cli

    db = _old_db(tmp_path)
    before = db.read_bytes()
    argv = [str(tmp_path / "report") if a == "REPORT" else a for a in argv]
    assert cli(*argv, "--db", str(db)) == 2
    text = capsys.readouterr().err
    assert "schema version 6" in text and f"tuneplan runs upgrade --db {db}" in text
    assert db.read_bytes() == before


def test_runs_upgrade_upgrades_in_place_and_then_reads_work(tmp_path, capsys):
    from helpers import cli

    db = _old_db(tmp_path)
    assert cli("runs", "upgrade", "--db", str(db)) == 0
    assert f"schema version 6 -> {ledger.SCHEMA_VERSION}" in capsys.readouterr().out
    assert cli("runs", "upgrade", "--db", str(db)) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli("runs", "--json", "--db", str(db)) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["predicted_overhead_bytes"] == 300 and row["memory_error_comparable"] == pytest.approx(0.2)
    assert cli("check", "--db", str(db)) == 0
    assert cli("runs", "upgrade", "--db", str(tmp_path / "none.duckdb")) == 2
    assert not (tmp_path / "none.duckdb").exists()


def test_runs_ingest_upgrades_an_old_database(tmp_path, capsys):
    from helpers import cli

    db = _old_db(tmp_path)
    run_dir = tmp_path / "runs" / "new"
    result = _result(run_dir, "new")
    (run_dir / "result.json").write_text(result.model_dump_json())
    assert cli("runs", "ingest", str(run_dir), "--db", str(db)) == 0
    assert "ingested 1 run" in capsys.readouterr().out
    assert cli("runs", "--json", "--db", str(db)) == 0
    assert {r["run_id"] for r in json.loads(capsys.readouterr().out)} == {"old", "new"}


def test_wide_results_print_one_field_per_line(tmp_path, capsys, monkeypatch):
    """SELECT * FROM runs is 49 columns: instead of a table crushed to slivers, one "column |
    value" line per field (long values cut, with a note); narrow results stay a table."""
    from helpers import cli

    db = tmp_path / "runs.duckdb"
    _record(db, tmp_path / "runs", "r1", _plan(10, gpu="A100 80GB"))
    capsys.readouterr()
    assert cli("sql", "SELECT * FROM runs", "--db", str(db)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("-[ 1 ]")
    fields = dict(line.split(" | ", 1) for line in lines[1:] if " | " in line)
    assert fields["run_id".ljust(len(max(fields, key=len)))].strip() == "r1"
    assert any(k.strip() == "planned_hardware" and v == "A100 80GB" for k, v in fields.items())
    assert "… (+" in out and "--format csv or json prints them whole" in out  # result_json is long
    assert max(len(line) for line in lines if not line.startswith(("result_json", "plan_json"))) < 600
    assert cli("sql", "SELECT run_id, learning FROM run_learning", "--db", str(db)) == 0
    assert "┃ run_id ┃ learning ┃" in capsys.readouterr().out
    assert (
        cli("sql", "SELECT run_id, learning FROM run_learning", "--db", str(db), "--format", "vertical") == 0
    )
    assert capsys.readouterr().out.splitlines()[1:3] == ["run_id   | r1", "learning | 0.5"]

    import tuneplan.cli.output as output
    from rich.console import Console

    monkeypatch.setattr(output, "console", lambda stderr=False: Console(width=80, highlight=False))
    import tuneplan.cli.runs as runs_cmd

    monkeypatch.setattr(runs_cmd, "console", lambda stderr=False: Console(width=80, highlight=False))
    assert cli("runs", "--db", str(db)) == 0  # 13 columns do not fit 80: one per line
    out = capsys.readouterr().out
    assert "device planned / used | A100 80GB / cuda: NVIDIA H200" in out
    assert "err like-for-like     | " in out and max(len(line) for line in out.splitlines()) <= 80 + 100
