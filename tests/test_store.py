"""The DuckDB run store: migrations, upserts, metrics, parquet, views, read-only SQL, locks, ingest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from ledger_fixtures import old_ledger_schema
from tuneplan.base.errors import InputError
from tuneplan.executor import ledger as store
from tuneplan.schemas.run import MeasuredMemory, RunResult

REQUIRED_LIST_KEYS = {
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


def make_result(
    run_dir: Path,
    run_id: str = "r1",
    *,
    status: str = "succeeded",
    predicted: int = 1200,
    measured: int | None = 1000,
    method: str = "lora",
    model: str = "tiny",
    started_at: str = "2025-01-01T10:00:00Z",
    runtime: int = 0,
    **extra,
) -> RunResult:
    """A RunResult built by hand; run_dir is created."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fields = dict(
        run_id=run_id,
        status=status,
        plan_hash="0123456789abcdef",
        method=method,
        model=model,
        hardware="cpu (2 cores)",
        started_at=started_at,
        run_dir=str(run_dir),
        predicted_peak_bytes=predicted,
    )
    if status != "running":
        fields.update(
            finished_at="2025-01-01T10:05:00+00:00",
            eval_loss_before=2.5,
            eval_loss_after=2.0,
            forgetting_loss_before=3.0,
            forgetting_loss_after=3.25,
            steps=10,
            tokens=5120,
            tokens_per_second=512.0,
            wall_seconds=12.5,
            substitutions=["bf16-mixed -> fp32 on CPU"],
            versions={"tuneplan": "0.1.0", "duckdb": duckdb.__version__},
        )
        if measured is not None:
            fields["measured"] = MeasuredMemory(
                device_kind="cpu",
                peak_bytes=measured,
                params_bytes=400,
                grads_bytes=100,
                optimizer_bytes=200,
                saved_tensors_peak_bytes=300,
                rss_peak_bytes=10_000,
                runtime_bytes=runtime,
            )
    fields.update(extra)
    return RunResult(**fields)


def metrics_rows(n: int) -> list[dict]:
    return [
        dict(step=i, loss=3.0 - 0.1 * i, lr=1e-4, grad_norm=0.5, tokens=512 * i, elapsed_s=0.5 * i)
        for i in range(1, n + 1)
    ]


def count(db: Path, table: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Migrations


def test_connect_creates_schema_and_is_idempotent(tmp_path):
    db = tmp_path / "sub" / "runs.duckdb"
    con = store.connect(db)
    con.close()
    assert db.exists()
    con = store.connect(db)  # second time: nothing to do
    try:
        versions = con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        assert [v for (v,) in versions] == [m[0] for m in store.MIGRATIONS]
        assert store.schema_version(con) == store.SCHEMA_VERSION
        assert store.migrate(con) == []
        names = {
            r[0]: r[1]
            for r in con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall()
        }
        assert names["runs"] == "BASE TABLE" and names["metrics"] == "BASE TABLE"
        for view in ("run_predictions", "run_learning", "method_summary"):
            assert names[view] == "VIEW"
        cols = [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
        assert cols == [c for c, _ in store.RUN_COLUMNS]
        assert [r[0] for r in con.execute("DESCRIBE metrics").fetchall()] == [
            "run_id",
            "step",
            "loss",
            "lr",
            "grad_norm",
            "tokens",
            "elapsed_s",
            "eval_loss",  # migration 10: evaluation during training
            "probe_loss",
            "trained_tokens",
            "positions",
        ]
    finally:
        con.close()


def test_older_database_is_upgraded_and_keeps_rows(tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    assert old_ledger_schema(con, 1) == [1]
    con.execute(
        "INSERT INTO runs (run_id, status, method, predicted_peak_bytes, "
        "measured_peak_bytes) VALUES ('old', 'succeeded', 'full', 150, 100)"
    )
    assert store.schema_version(con) == 1
    con.close()

    con = store.connect(db)
    try:
        assert store.schema_version(con) == store.SCHEMA_VERSION
        assert con.execute("SELECT run_id, relative_error FROM run_predictions").fetchall() == [("old", 0.5)]
    finally:
        con.close()


def test_v3_database_is_upgraded_to_v4_and_keeps_rows(tmp_path):
    """Migration 4 adds runs.runtime_bytes (at the end, as a new database has it), fills it for
    measured runs (0: results before it was recorded), re-creates run_memory_checks on tensor
    bytes on both sides, keeps every row, and is idempotent."""
    db = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(db))
    assert old_ledger_schema(con, 3) == [1, 2, 3]
    plan = json.dumps({"memory": {"breakdown": {"framework_overhead": 300}}})
    old_result = json.dumps({"measured": {"device_kind": "cpu", "peak_bytes": 1000}})
    con.execute(
        "INSERT INTO runs (run_id, status, method, predicted_peak_bytes, "
        "measured_peak_bytes, plan_json, result_json) VALUES "
        "('old', 'succeeded', 'lora', 1500, 1000, ?, ?), "
        "('unmeasured', 'failed', 'full', 1500, NULL, ?, NULL)",
        [plan, old_result, plan],
    )
    con.execute("INSERT INTO metrics VALUES ('old', 1, 2.0, 1e-4, 0.5, 10, 0.1)")
    con.execute(
        "INSERT INTO comparisons VALUES ('c1', 'old', 'lora', 'lora', 'medium', "
        "TIMESTAMP '2025-01-01 00:00:00')"
    )
    assert "runtime_bytes" not in [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
    v3_view = [r[0] for r in con.execute("DESCRIBE run_memory_checks").fetchall()]
    assert "measured_comparable_bytes" not in v3_view
    con.close()

    con = store.connect(db)
    try:
        assert store.schema_version(con) == store.SCHEMA_VERSION >= 4
        assert [r[0] for r in con.execute("DESCRIBE runs").fetchall()] == [c for c, _ in store.RUN_COLUMNS]
        assert con.execute("SELECT run_id, runtime_bytes FROM runs ORDER BY run_id").fetchall() == [
            ("old", 0),
            ("unmeasured", None),
        ]
        assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM comparisons").fetchone()[0] == 1
        rows = con.execute(
            "SELECT run_id, predicted_comparable_bytes, measured_comparable_bytes, memory_error, "
            "memory_error_comparable FROM run_memory_checks ORDER BY run_id"
        ).fetchall()
        assert rows == [("old", 1200, 1000, 0.5, 0.2), ("unmeasured", 1200, None, None, None)]
        assert con.execute(
            "SELECT runs, measured_runs FROM audit_memory_predictions WHERE method = 'lora'"
        ).fetchall() == [(1, 1)]
    finally:
        con.close()
    con = store.connect(db)  # idempotent: nothing left to apply
    try:
        assert store.migrate(con) == []
    finally:
        con.close()

    # the upgraded database records new results with their runtime bytes
    run_dir = tmp_path / "runs" / "new"
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(plan)
    store.record(db, make_result(run_dir, "new", predicted=1500, measured=1000, runtime=400))
    _, rows = store.query(
        db,
        "SELECT runtime_bytes, measured_comparable_bytes, "
        "memory_error_comparable FROM runs JOIN run_memory_checks "
        "USING (run_id) WHERE run_id = 'new'",
    )
    assert rows == [(400, 600, pytest.approx((1200 - 600) / 600))]


def test_read_only_connect_does_not_create_or_migrate(tmp_path):
    db = tmp_path / "none.duckdb"
    with pytest.raises(store.NoDatabase, match="no runs yet"):
        store.connect(db, read_only=True)
    assert not db.exists() and not db.parent.joinpath(".tuneplan").exists()


def test_default_db_path(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEPLAN_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert store.default_db_path() == tmp_path / ".tuneplan" / "runs.duckdb"
    monkeypatch.setenv("TUNEPLAN_DB", str(tmp_path / "x.duckdb"))
    assert store.default_db_path() == tmp_path / "x.duckdb"
    monkeypatch.delenv("TUNEPLAN_DB")
    store.record(None, make_result(tmp_path / "run", status="running"))
    assert (tmp_path / ".tuneplan" / "runs.duckdb").exists()


# --------------------------------------------------------------------------------------------
# record


def test_record_running_then_succeeded_upserts_one_row(tmp_path):
    db = tmp_path / "runs.duckdb"
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(json.dumps({"method": "lora", "tuneplan_version": "9.9"}))
    store.record(db, make_result(run_dir, status="running"))
    assert not (run_dir / "run.parquet").exists()  # only once the run has ended
    (run_dir / "plan.json").unlink()  # a later write without plan.json keeps the plan
    store.record(db, make_result(run_dir, runtime=300), metrics_rows(3))

    cols, rows = store.query(db, "SELECT * FROM runs")
    assert len(rows) == 1
    row = dict(zip(cols, rows[0]))
    assert row["status"] == "succeeded"
    assert json.loads(row["plan_json"]) == {"method": "lora", "tuneplan_version": "9.9"}
    assert row["tuneplan_version"] == "0.1.0"  # versions["tuneplan"] wins over the plan
    assert row["measured_peak_bytes"] == 1000 and row["params_bytes"] == 400
    assert row["device_kind"] == "cpu" and row["rss_peak_bytes"] == 10_000
    assert row["runtime_bytes"] == 300
    assert row["substitutions"] == ["bf16-mixed -> fp32 on CPU"]
    assert json.loads(row["versions"])["tuneplan"] == "0.1.0"
    assert row["started_at"].isoformat() == "2025-01-01T10:00:00"
    assert row["finished_at"].isoformat() == "2025-01-01T10:05:00"
    assert RunResult.model_validate_json(row["result_json"]).run_id == "r1"
    assert count(db, "metrics") == 3


def test_record_replaces_metrics_only_when_given(tmp_path):
    db = tmp_path / "runs.duckdb"
    run_dir = tmp_path / "r1"
    store.record(db, make_result(run_dir, status="running"), metrics_rows(5))
    assert count(db, "metrics") == 5
    store.record(db, make_result(run_dir, status="running"))  # None: keep them
    assert count(db, "metrics") == 5
    rows = metrics_rows(2) + [{"step": 2, "loss": 9.0}, {"event": "no step"}, "junk"]
    store.record(db, make_result(run_dir), rows)
    _, got = store.query(db, "SELECT step, loss, lr, tokens FROM metrics ORDER BY step")
    assert got == [(1, pytest.approx(2.9), 1e-4, 512), (2, 9.0, None, None)]


def test_parquet_files_pool_across_run_dirs(tmp_path):
    db = tmp_path / "runs.duckdb"
    runs = tmp_path / "runs"
    store.record(db, make_result(runs / "a", "a", predicted=1100), metrics_rows(2))
    store.record(db, make_result(runs / "b", "b", method="full", predicted=900), metrics_rows(3))
    for name in ("a", "b"):
        assert (runs / name / "run.parquet").is_file()
        assert (runs / name / "metrics.parquet").is_file()
        assert not list((runs / name).glob(".*.tmp"))
    con = duckdb.connect()
    glob = str(runs / "*" / "run.parquet")
    got = con.execute(
        f"SELECT run_id, method, predicted_peak_bytes, measured_peak_bytes, substitutions "
        f"FROM read_parquet('{glob}') ORDER BY run_id"
    ).fetchall()
    assert got == [
        ("a", "lora", 1100, 1000, ["bf16-mixed -> fp32 on CPU"]),
        ("b", "full", 900, 1000, ["bf16-mixed -> fp32 on CPU"]),
    ]
    mglob = str(runs / "*" / "metrics.parquet")
    assert con.execute(
        f"SELECT run_id, count(*) FROM read_parquet('{mglob}') GROUP BY ALL ORDER BY 1"
    ).fetchall() == [("a", 2), ("b", 3)]


# --------------------------------------------------------------------------------------------
# list_runs and views


def test_list_runs_keys_and_order(tmp_path):
    db = tmp_path / "runs.duckdb"
    store.record(db, make_result(tmp_path / "old", "old", started_at="2025-01-01T09:00:00Z"))
    store.record(
        db,
        make_result(
            tmp_path / "new", "new", started_at="2025-01-02T09:00:00Z", num_processes=2, strategy="ddp"
        ),
    )
    store.record(
        db, make_result(tmp_path / "mid", "mid", status="running", started_at="2025-01-01T12:00:00+01:00")
    )
    runs = store.list_runs(db)
    assert [r["run_id"] for r in runs] == ["new", "mid", "old"]
    for r in runs:
        assert REQUIRED_LIST_KEYS <= set(r)
        assert set(r) == set(store.LIST_KEYS)
    new = runs[0]
    assert new["num_processes"] == 2 and new["strategy"] == "ddp"
    assert new["memory_error"] == pytest.approx(0.2)
    assert new["learning"] == pytest.approx(0.5) and new["forgetting"] == pytest.approx(0.25)
    assert new["started_at"] == "2025-01-02T09:00:00Z"
    assert runs[1]["started_at"] == "2025-01-01T11:00:00Z"  # stored as UTC
    assert runs[1]["measured_peak_bytes"] is None and runs[1]["memory_error"] is None
    assert [r["run_id"] for r in store.list_runs(db, limit=1)] == ["new"]


def test_views_compute_error_learning_forgetting(tmp_path):
    db = tmp_path / "runs.duckdb"
    store.record(
        db,
        make_result(
            tmp_path / "a",
            "a",
            predicted=1200,
            measured=1000,
            eval_loss_before=2.0,
            eval_loss_after=1.5,
            forgetting_loss_before=3.0,
            forgetting_loss_after=3.5,
            tokens_per_second=100.0,
        ),
    )
    store.record(
        db,
        make_result(
            tmp_path / "b",
            "b",
            predicted=900,
            measured=1000,
            eval_loss_before=2.0,
            eval_loss_after=1.0,
            forgetting_loss_before=3.0,
            forgetting_loss_after=3.0,
            tokens_per_second=300.0,
        ),
    )
    store.record(
        db, make_result(tmp_path / "c", "c", status="failed", measured=None, error="RuntimeError: boom")
    )
    store.record(
        db, make_result(tmp_path / "d", "d", method="qlora", model="other", predicted=500, measured=400)
    )

    # the per-run views carry only their own columns: the runs columns come from a join
    _, pred = store.query(
        db,
        "SELECT run_id, predicted_peak_bytes, measured_peak_bytes, "
        "error_bytes, relative_error FROM runs JOIN run_predictions "
        "USING (run_id) ORDER BY run_id",
    )
    assert pred[0] == ("a", 1200, 1000, 200, pytest.approx(0.2))
    assert pred[1] == ("b", 900, 1000, -100, pytest.approx(-0.1))
    assert pred[2] == ("c", 1200, None, None, None)
    assert pred[3][4] == pytest.approx(0.25)

    _, learn = store.query(
        db, "SELECT run_id, learning, forgetting FROM run_learning WHERE run_id IN ('a', 'b') ORDER BY run_id"
    )
    assert learn == [
        ("a", pytest.approx(0.5), pytest.approx(0.5)),
        ("b", pytest.approx(1.0), pytest.approx(0.0)),
    ]

    cols, summary = store.query(db, "SELECT * FROM method_summary ORDER BY method, model")
    assert cols == [
        "method",
        "model",
        "runs",
        "succeeded",
        "mean_memory_error",
        "mean_abs_memory_error",
        "mean_learning",
        "mean_forgetting",
        "mean_tokens_per_second",
    ]
    lora = dict(zip(cols, summary[0]))
    assert (lora["method"], lora["model"], lora["runs"], lora["succeeded"]) == ("lora", "tiny", 3, 2)
    assert lora["mean_memory_error"] == pytest.approx(0.05)
    assert lora["mean_abs_memory_error"] == pytest.approx(0.15)
    assert lora["mean_learning"] == pytest.approx(0.75)
    assert lora["mean_forgetting"] == pytest.approx(0.25)
    assert lora["mean_tokens_per_second"] == pytest.approx(200.0)
    assert summary[1][:4] == ("qlora", "other", 1, 1)


# --------------------------------------------------------------------------------------------
# Read-only SQL


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO runs (run_id, status) VALUES ('x', 'failed')",
        "DELETE FROM runs",
        "UPDATE runs SET status = 'failed'",
        "DROP TABLE metrics",
        "DROP VIEW method_summary",
        "CREATE TABLE t AS SELECT 1",
        "ATTACH '{tmp}/other.duckdb' AS other",
        "COPY runs TO '{tmp}/leak.csv'",
        "EXPORT DATABASE '{tmp}/export'",
        "SELECT 1; DELETE FROM runs",
        "EXPLAIN ANALYZE DELETE FROM runs",
        "WITH x AS (SELECT 1) INSERT INTO metrics SELECT 'r1', 99, 0, 0, 0, 0, 0 FROM x",
        "PRAGMA enable_profiling",
        "SET threads = 1",
        "INSTALL httpfs",
        "CHECKPOINT",
    ],
)
def test_query_refuses_writes_and_changes_nothing(tmp_path, sql):
    db = tmp_path / "runs.duckdb"
    store.record(db, make_result(tmp_path / "r1"), metrics_rows(2))
    before = db.read_bytes()
    with pytest.raises(store.QueryRefused, match="refused"):
        store.query(db, sql.format(tmp=tmp_path))
    assert count(db, "runs") == 1 and count(db, "metrics") == 2
    assert db.read_bytes() == before
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "other.duckdb").exists()
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT run_id FROM runs",
        "  -- comment\nWITH a AS (SELECT run_id FROM runs) SELECT * FROM a",
        "FROM runs SELECT run_id",
        "DESCRIBE runs",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM runs",
        "PRAGMA table_info('runs')",
        "SUMMARIZE metrics",
    ],
)
def test_query_allows_reads(tmp_path, sql):
    db = tmp_path / "runs.duckdb"
    store.record(db, make_result(tmp_path / "r1"), metrics_rows(2))
    cols, rows = store.query(db, sql)
    assert cols and rows


def test_query_errors(tmp_path):
    db = tmp_path / "runs.duckdb"
    with pytest.raises(store.NoDatabase):
        store.query(db, "SELECT 1")
    assert not db.exists()
    store.connect(db).close()
    with pytest.raises(store.QueryError):
        store.query(db, "SELEC nonsense")
    with pytest.raises(store.QueryError):
        store.query(db, "SELECT * FROM no_such_table")
    with pytest.raises(store.QueryError, match="no SQL"):
        store.query(db, "  ")


# --------------------------------------------------------------------------------------------
# Locks and ingest


HOLD_LOCK = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")


def write_run_files(run_dir: Path, result: RunResult, metrics: list[dict], plan: dict | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(result.model_dump_json(indent=2))
    lines = [json.dumps(m) for m in metrics]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if plan is not None:
        (run_dir / "plan.json").write_text(json.dumps(plan))


def test_locked_database_raises_store_error_then_ingest_recovers(tmp_path):
    db = tmp_path / "runs.duckdb"
    store.connect(db).close()
    run_dir = tmp_path / "runs" / "r1"
    result = make_result(run_dir)
    write_run_files(run_dir, result, metrics_rows(4))

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(store.StoreError) as info:
            store.record(db, result, metrics_rows(4))
        assert isinstance(info.value, store.DatabaseLocked)
        message = str(info.value)
        assert str(db) in message and "tuneplan runs ingest" in message
        # The run can still be pooled: parquet written without the shared database.
        con = duckdb.connect()
        assert con.execute(f"SELECT run_id FROM read_parquet('{run_dir}/run.parquet')").fetchall() == [
            ("r1",)
        ]
        assert con.execute(f"SELECT count(*) FROM read_parquet('{run_dir}/metrics.parquet')").fetchone() == (
            4,
        )
        with pytest.raises(store.DatabaseLocked):
            store.query(db, "SELECT 1")
    finally:
        holder.kill()
        holder.wait()

    assert count(db, "runs") == 0
    assert store.ingest(db, [tmp_path / "runs"]) == ["r1"]
    assert [r["run_id"] for r in store.list_runs(db)] == ["r1"]
    assert count(db, "metrics") == 4


def test_ingest_rebuilds_rows_from_hand_written_files(tmp_path):
    db = tmp_path / "runs.duckdb"
    root = tmp_path / "team"
    a = make_result(root / "alice" / "a1", "a1", eval_loss_before=2.0, eval_loss_after=1.2, runtime=250)
    b = make_result(
        root / "bob" / "deep" / "b1", "b1", status="interrupted", measured=None, error="KeyboardInterrupt"
    )
    write_run_files(Path(a.run_dir), a, metrics_rows(3), plan={"method": "lora"})
    write_run_files(Path(b.run_dir), b, metrics_rows(2))
    # A killed writer can leave a cut-off last line; lines without a step are not metrics.
    with open(Path(b.run_dir) / "metrics.jsonl", "a") as fh:
        fh.write('{"event": "eval", "eval_loss": 1.0}\n{"step": 3, "loss": 1.')

    # Moved since the run: run_dir follows the files, not the stale path inside result.json.
    moved = tmp_path / "moved"
    (root / "alice").rename(moved)
    ids = store.ingest(db, [root, moved / "a1" / "result.json"])
    assert sorted(ids) == ["a1", "b1"]
    rows = {r["run_id"]: r for r in store.list_runs(db)}
    assert rows["a1"]["run_dir"] == str((moved / "a1").resolve())
    assert rows["a1"]["learning"] == pytest.approx(0.8)
    assert rows["b1"]["status"] == "interrupted" and rows["b1"]["error"] == "KeyboardInterrupt"
    assert rows["a1"]["runtime_bytes"] == 250 and rows["b1"]["runtime_bytes"] is None
    _, plan = store.query(db, "SELECT plan_json FROM runs WHERE run_id = 'a1'")
    assert json.loads(plan[0][0]) == {"method": "lora"}
    _, m = store.query(db, "SELECT run_id, count(*) FROM metrics GROUP BY ALL ORDER BY 1")
    assert m == [("a1", 3), ("b1", 2)]

    # Idempotent: ingesting again replaces, never duplicates.
    assert sorted(store.ingest(db, [tmp_path])) == ["a1", "b1"]
    assert count(db, "runs") == 2 and count(db, "metrics") == 5


def test_ingest_reads_result_json_written_before_runtime_bytes(tmp_path):
    """A result.json from before MeasuredMemory.runtime_bytes still loads (runtime 0)."""
    db = tmp_path / "runs.duckdb"
    run_dir = tmp_path / "runs" / "old"
    result = make_result(run_dir, "old")
    data = json.loads(result.model_dump_json())
    del data["measured"]["runtime_bytes"]
    (run_dir / "result.json").write_text(json.dumps(data))
    assert store.ingest(db, [run_dir]) == ["old"]
    (row,) = store.list_runs(db)
    assert row["runtime_bytes"] == 0 and row["measured_peak_bytes"] == 1000


def test_ingest_reports_every_bad_path_and_writes_nothing(tmp_path):
    db = tmp_path / "runs.duckdb"
    good = make_result(tmp_path / "good", "good")
    write_run_files(tmp_path / "good", good, [])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text(json.dumps({"run_id": "x", "status": "exploded"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as info:
        store.ingest(db, [tmp_path / "good", bad, empty, tmp_path / "missing"])
    text = info.value.render()
    assert str(bad / "result.json") in text and "status" in text
    assert str(empty) in text and "no result.json" in text
    assert str(tmp_path / "missing") in text and "no such file" in text
    assert not db.exists()
