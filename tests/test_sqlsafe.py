"""executor/sqlsafe.py: `tuneplan sql` cannot write or reach out — each layer alone (the sealed
connection, the parser-based statement check), every attack of issue 9 through the CLI, the row
limit and streaming, and a property test over generated statements asserting the database and
the whole filesystem tree around it are byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneplan.executor import ledger as store
from tuneplan.executor.ledger import sqlsafe
from tuneplan.schemas.run import RunResult
from helpers import cli


def _result(run_dir: Path, run_id: str) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunResult(
        run_id=run_id,
        status="succeeded",
        plan_hash="0123456789abcdef",
        method="lora",
        model="tiny",
        hardware="cpu",
        started_at="2025-01-01T10:00:00Z",
        run_dir=str(run_dir),
        predicted_peak_bytes=1200,
        finished_at="2025-01-01T10:05:00+00:00",
        eval_loss_before=2.5,
        eval_loss_after=2.0,
        forgetting_loss_before=3.0,
        forgetting_loss_after=3.25,
        steps=10,
        tokens=5120,
        tokens_per_second=512.0,
        wall_seconds=12.5,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The project built once per module (recording runs is the slow part); copied per test."""
    proj = tmp_path_factory.mktemp("template") / "proj"
    db = proj / ".tuneplan" / "runs.duckdb"
    for rid in ("a1", "b2"):
        store.record(
            db,
            _result(proj / "runs" / rid, rid),
            [dict(step=1, loss=2.0, lr=1e-4, grad_norm=0.5, tokens=512, elapsed_s=0.5)],
        )
    assert (proj / "runs" / "a1" / "run.parquet").exists()
    return proj


@pytest.fixture
def project(template, tmp_path, monkeypatch):
    """tmp_path/proj (the cwd): .tuneplan/runs.duckdb with two runs, runs/<id>/run.parquet;
    tmp_path/outside.txt a file outside it. Returns (tmp_path, db): snapshots cover both."""
    proj = tmp_path / "proj"
    shutil.copytree(template, proj)
    db = proj / ".tuneplan" / "runs.duckdb"
    (tmp_path / "outside.txt").write_text("secret\n")
    monkeypatch.chdir(proj)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where an extension would be installed
    return tmp_path, db


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (directories too) with a digest of its bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------------------------
# The attacks of issue 9, through `tuneplan sql`

ISSUE_ATTACKS = [
    "EXPLAIN ANALYZE /* /* */ SELECT ' */ COPY (SELECT 42) TO 'pwn--.csv'",
    "WITH d AS (DELETE FROM runs RETURNING *) SELECT * FROM d",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/home/**')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM 'https://example.com/x.parquet'",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
]

MORE_ATTACKS = [
    "COPY runs TO 'runs/leak.csv'",  # into an allowed (--read) dir
    "COPY (SELECT 42) TO '.tuneplan/runs.duckdb'",  # over the database itself
    "EXPORT DATABASE 'runs/export'",
    "EXPLAIN COPY runs TO 'leak.csv'",
    "EXPLAIN ANALYZE DELETE FROM runs",
    "explain /* -- */ analyze -- x\n COPY runs TO 'leak.csv'",
    "WITH x AS (INSERT INTO comparisons SELECT * FROM comparisons RETURNING *) FROM x",
    "WITH x AS (UPDATE runs SET status = 'failed' RETURNING *) SELECT count(*) FROM x",
    "SELECT * FROM (WITH y AS (DELETE FROM metrics RETURNING *) SELECT * FROM y)",
    "ATTACH 'other.duckdb' AS o",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SET VARIABLE x = 1",
    "PRAGMA enable_profiling",
    "PRAGMA memory_limit = '1GB'",
    "CALL checkpoint()",
    "SELECT * FROM checkpoint()",
    "CHECKPOINT",
    "SELECT 1; COPY runs TO 'leak.csv'",
    "/* SELECT */ DELETE FROM runs",
    "SELECT '; DELETE FROM runs'; DELETE FROM runs",
    "SELECT * FROM read_text('../outside.txt')",
    "SELECT * FROM read_blob('.tuneplan/../../outside.txt')",
    "SELECT * FROM glob('runs/../../**')",
]


@pytest.mark.parametrize("sql", ISSUE_ATTACKS + MORE_ATTACKS)
def test_attack_is_refused_with_exit_2_and_changes_nothing(project, sql, capsys):
    root, db = project
    before = snapshot(root)
    assert cli("sql", sql, "--db", str(db), "--format", "json") == 2
    captured = capsys.readouterr()
    assert "refused" in captured.err or "invalid SQL" in captured.err
    assert "secret" not in captured.out and "root:" not in captured.out
    assert snapshot(root) == before
    assert not (root / "home" / ".duckdb").exists()  # no extension was fetched or installed


def test_each_layer_alone_stops_the_issue_attacks(project):
    """The statement check refuses every attack without touching a database, and the sealed
    connection by itself (no statement check) cannot write outside, read outside or unlock."""
    root, db = project
    for sql in ISSUE_ATTACKS[:2] + MORE_ATTACKS[:4]:
        with pytest.raises(store.QueryRefused):
            sqlsafe.check_statement(sql)
    before = snapshot(root)
    con = sqlsafe.sealed_connection(db, read_paths=[root / "proj" / "runs"])
    try:
        for sql in (
            "COPY (SELECT 42) TO 'pwn--.csv'",
            "SELECT * FROM read_text('/etc/passwd')",
            "SELECT * FROM glob('/home/**')",
            "SELECT * FROM 's3://b/x.parquet'",
            "ATTACH 'other.duckdb'",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        for sql in (
            "SET enable_external_access = true",
            "RESET allowed_directories",
            "SET lock_configuration = false",
        ):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM runs")
        # and the pooled read still works on the sealed connection
        assert con.execute("SELECT count(*) FROM read_parquet('runs/*/run.parquet')").fetchone()[0] == 2
    finally:
        con.close()
    assert snapshot(root) == before


# --------------------------------------------------------------------------------------------
# Reads that must keep working


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT run_id FROM runs ORDER BY 1",
        "  -- comment\nWITH a AS (SELECT run_id FROM runs) SELECT * FROM a ORDER BY 1",
        "FROM runs SELECT run_id ORDER BY 1",
        "SELECT ' COPY x TO ''y'' ' AS s, run_id FROM runs ORDER BY 2",
        "/* /* nested */ still comment */ SELECT run_id FROM runs ORDER BY 1",
        "EXPLAIN ANALYZE SELECT run_id FROM runs",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2) "
        "SELECT run_id FROM runs ORDER BY 1",
        "PRAGMA table_info('runs')",
        "DESCRIBE runs",
        "SUMMARIZE metrics",
    ],
)
def test_reads_are_allowed(project, sql):
    _, db = project
    cols, rows, truncated = sqlsafe.fetch(sql, db)
    assert cols and rows and not truncated


def test_parquet_pooling_with_default_and_named_read_dirs(project, capsys):
    root, db = project
    q = "SELECT run_id FROM read_parquet('runs/*/run.parquet') ORDER BY 1"
    assert cli("sql", q, "--db", str(db), "--format", "csv") == 0  # ./runs by default
    assert capsys.readouterr().out.split() == ["run_id", "a1", "b2"]
    q_abs = f"SELECT count(*) AS n FROM read_parquet('{root}/proj/runs/*/run.parquet')"
    assert cli("sql", q_abs, "--db", str(db), "--format", "csv", "--read", str(root / "proj" / "runs")) == 0
    assert capsys.readouterr().out.split() == ["n", "2"]
    # a directory not named is not readable, even when ./runs is
    assert cli("sql", q, "--db", str(db), "--read", str(root / "proj" / ".tuneplan")) == 2
    assert "--read DIR" in capsys.readouterr().err
    assert cli("sql", "SELECT 1", "--db", str(db), "--read", str(root / "proj" / "nope")) == 2
    assert "not a directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Row limit and streaming


def test_huge_result_is_cut_at_the_default_limit(project, capsys):
    _, db = project
    assert cli("sql", "SELECT * FROM range(10000000)", "--db", str(db), "--format", "json") == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert len(rows) == sqlsafe.DEFAULT_ROW_LIMIT == 1000
    assert rows[0] == {"range": 0} and rows[-1] == {"range": 999}
    assert "first 1000 rows" in captured.err and "--no-limit" in captured.err
    assert cli("sql", "SELECT * FROM range(10000000)", "--db", str(db), "--limit", "3") == 0
    assert "3 rows" in capsys.readouterr().out
    assert cli("sql", "SELECT * FROM range(5)", "--db", str(db), "--limit", "5", "--format", "csv") == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["range", "0", "1", "2", "3", "4"] and captured.err == ""


def test_no_limit_streams_every_row_in_batches(project, capsys):
    _, db = project
    n = 3 * sqlsafe.BATCH_ROWS + 7
    assert (
        cli(
            "sql",
            f"SELECT range AS i, 'x' || range AS s FROM range({n})",
            "--db",
            str(db),
            "--format",
            "csv",
            "--no-limit",
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "i,s" and len(lines) == n + 1 and lines[-1] == f"{n - 1},x{n - 1}"
    with sqlsafe.stream(f"SELECT * FROM range({n})", db, limit=None) as result:
        sizes = [len(b) for b in result.batches]
    assert sizes[0] == sqlsafe.BATCH_ROWS and sum(sizes) == n and len(sizes) == 4
    assert not result.truncated
    assert cli("sql", "SELECT 1 WHERE false", "--db", str(db), "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []


# --------------------------------------------------------------------------------------------
# Property test: whatever statement is generated, nothing on disk changes

_TARGETS = [
    "'pwn--.csv'",
    "'runs/p.csv'",
    "'.tuneplan/runs.duckdb'",
    "'/tmp/tp-pwn.csv'",
    "'runs/a1/run.parquet'",
    "'../up.csv'",
]
_COMMENTS = ["", "/* x */", "/* /* */ SELECT ' */", "-- c\n", "/* -- */", "/**/"]
_WRITES = [
    "COPY (SELECT 42) TO {t}",
    "COPY runs TO {t} (FORMAT parquet)",
    "EXPORT DATABASE {t}",
    "ATTACH {t} AS o",
    "DELETE FROM runs",
    "UPDATE runs SET steps = 0",
    "INSERT INTO metrics SELECT * FROM metrics",
    "DROP TABLE metrics",
    "CREATE TABLE z (a INT)",
    "CREATE VIEW v AS SELECT 1",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CHECKPOINT",
    "SELECT * FROM read_text({t})",
    "SELECT * FROM glob('/**')",
    "SELECT * FROM read_csv('https://x.invalid/a.csv')",
    "SELECT count(*) FROM read_parquet('runs/*/run.parquet')",
    "SELECT run_id FROM runs",
]


@st.composite
def statements(draw):
    body = draw(st.sampled_from(_WRITES)).format(t=draw(st.sampled_from(_TARGETS)))
    returning = " RETURNING *" if body.startswith(("DELETE", "UPDATE", "INSERT")) else ""
    wrap = draw(
        st.sampled_from(
            [
                "{b}",
                "EXPLAIN {c}{b}",
                "EXPLAIN ANALYZE {c}{b}",
                "WITH q AS ({b}{r}) SELECT * FROM q",
                "{c}{b}",
                "SELECT 1; {b}",
                "{b} {c}",
                "SELECT '{c}'; {b}",
            ]
        )
    )
    return wrap.format(b=body, c=draw(st.sampled_from(_COMMENTS)), r=returning)


PROPERTY_CASES = 150


def test_property_no_statement_changes_the_filesystem(project):
    """PROPERTY_CASES generated statements (fixed seed: derandomize) — writes in every wrapper
    and comment trick against the output, the runs dir, the database itself and paths
    outside; afterwards the project tree (database included) is byte-identical and nothing
    appeared in /tmp."""
    root, db = project
    before = snapshot(root)
    tmp_pwn = Path("/tmp/tp-pwn.csv")
    assert not tmp_pwn.exists()
    outcomes = {"refused": 0, "error": 0, "ran": 0}

    @settings(
        max_examples=PROPERTY_CASES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(statements())
    def run(sql):
        try:
            sqlsafe.fetch(sql, db, read_paths=[root / "proj" / "runs"], limit=10)
            outcomes["ran"] += 1
        except store.QueryRefused:
            outcomes["refused"] += 1
        except store.QueryError:
            outcomes["error"] += 1
        assert snapshot(root) == before, sql
        assert not tmp_pwn.exists(), sql

    run()
    print(f"property cases: {outcomes}")
    assert sum(outcomes.values()) == PROPERTY_CASES
    assert outcomes["refused"] > outcomes["ran"] > 0
