"""SQL that answers the questions (issue 13): the run_settings view, `tuneplan sql --schema`, and
the worked queries of docs/sql.md, run against real recorded rows."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from test_store import make_result, metrics_rows
from tuneplan.cli.main import main
from tuneplan.executor import ledger as store
from tuneplan.executor.ledger.sqldocs import TABLE_DOCS, describe

ROOT = Path(__file__).resolve().parent.parent
SWEEP_SETTINGS = {"learning_rate", "lora_rank"}


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "runs.duckdb"
    for i, (name, measured) in enumerate((("lora", 1000), ("qlora", 700), ("full", 3000))):
        run_dir = tmp_path / "runs" / f"r{i}"
        run_dir.mkdir(parents=True)
        shutil.copy(ROOT / "examples" / "plans" / f"{name}.json", run_dir / "plan.json")
        store.record(
            path,
            make_result(run_dir, f"r{i}", method=name, measured=measured, predicted=1200),
            metrics_rows(3),
        )
    return path


def _sql(db: Path, query: str, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["sql", query, "--db", str(db), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_run_settings_has_each_runs_training_settings(db, capsys) -> None:
    plan = json.loads((ROOT / "examples" / "plans" / "lora.json").read_text())
    (row,) = _sql(db, "SELECT * FROM run_settings WHERE run_id = 'r0'", capsys)
    t = plan["training"]
    assert row["planned_method"] == "lora" and row["planned_model"] == plan["inputs"]["model"]["name"]
    assert row["learning_rate"] == t["learning_rate"] and row["lr_scheduler"] == t["lr_scheduler"]
    assert row["lora_rank"] == plan["lora"]["rank"] and row["lora_alpha"] == plan["lora"]["alpha"]
    assert row["target_modules"] == plan["lora"]["target_modules"]
    assert row["seq_len"] == t["seq_len"] and row["gradient_checkpointing"] == t["gradient_checkpointing"]
    assert row["effective_batch"] == t["per_device_batch_size"] * t["gradient_accumulation_steps"]
    assert row["planned_gpu"] == plan["inputs"]["hardware"]["name"]
    (full,) = _sql(db, "SELECT lora_rank, target_modules FROM run_settings WHERE run_id = 'r2'", capsys)
    assert full == {"lora_rank": None, "target_modules": None}


def test_run_settings_joins_every_view_using_run_id(db) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'run_id' "
                "AND table_name <> 'run_settings'"
            ).fetchall()
        ]
        settings = {r[0] for r in con.execute("DESCRIBE run_settings").fetchall()}
        assert len(names) >= 6
        for name in names:
            cols = {r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()}
            # sweep_trials repeats the two settings a sweep varies (the same values, read from the
            # same plan): select them qualified after a join
            allowed = {"run_id"} | (SWEEP_SETTINGS if name == "sweep_trials" else set())
            assert settings & cols <= allowed, (name, settings & cols - allowed)
            shared = allowed - {"run_id"}
            select = ", ".join(
                sorted((settings | cols) - shared) + [f"run_settings.{c}" for c in sorted(shared)]
            )
            con.execute(f"SELECT {select} FROM run_settings JOIN {name} USING (run_id)").fetchall()
    finally:
        con.close()


def test_sql_schema_describes_every_table_view_and_column(capsys) -> None:
    capsys.readouterr()
    assert main(["sql", "--schema", "--format", "json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    names = {t["name"] for t in tables}
    assert {"runs", "metrics", "comparisons", "run_settings", "method_summary"} <= names
    missing = [t["name"] for t in tables if not t["description"]]
    missing += [f"{t['name']}.{c['name']}" for t in tables for c in t["columns"] if not c["description"]]
    assert not missing, f"add descriptions to executor/sqldocs.py: {missing}"
    assert set(TABLE_DOCS) == names
    assert main(["sql", "--schema"]) == 0
    text = capsys.readouterr().out
    assert "run_settings  (view)" in text and describe("run_settings", "learning_rate") in text


def test_sql_without_query_or_schema_exits_2(capsys) -> None:
    assert main(["sql"]) == 2
    assert "--schema" in capsys.readouterr().err


def _doc_queries() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "sql.md").read_text()
    # Each worked query is a "## title" section holding one ```sql block; prose-only sections skip.
    pairs = []
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0].strip()
        blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
        assert len(blocks) <= 1, f"section {title!r} holds {len(blocks)} sql blocks"
        pairs += [(title, b) for b in blocks]
    assert len(pairs) >= 5
    return pairs


@pytest.mark.parametrize("title,query", _doc_queries(), ids=[t for t, _ in _doc_queries()])
def test_worked_queries_in_docs_run(db, capsys, title, query) -> None:
    rows = _sql(db, query, capsys)
    if title.startswith(("Best learning rate", "Memory error", "Loss per step", "The settings")):
        assert rows, f"{title}: no rows from three recorded runs"
    if title.startswith("Loss per step"):
        assert len(rows) == 9 and rows[0]["step"] == 1


def test_json_columns_come_out_as_json(db, capsys) -> None:
    (row,) = _sql(
        db,
        "SELECT run_id, plan_json, versions, json_extract(plan_json, '$.lora') AS lora, "
        "plan_json->>'$.method' AS method_text FROM runs WHERE run_id = 'r0'",
        capsys,
    )
    assert isinstance(row["plan_json"], dict) and row["plan_json"]["method"] == "lora"
    assert isinstance(row["versions"], dict) and "tuneplan" in row["versions"]
    assert isinstance(row["lora"], dict) and row["lora"]["rank"] == row["plan_json"]["lora"]["rank"]
    assert row["method_text"] == "lora", "text extracted with ->> stays text"


def test_the_demos_query_runs_on_recorded_rows(db, capsys) -> None:
    """`make demo`'s last step (examples/demo.sh) answers "did the advice hold?" with this query."""
    script = (ROOT / "examples" / "demo.sh").read_text()
    query = re.search(r'\$TP sql --db "\$OUT/runs.duckdb" "(.*?)"', script, re.DOTALL).group(1)
    (row,) = _sql(db, query, capsys)
    assert row["run_id"] == "r2" and row["method"] == "full"
    assert row["error_pct"] == pytest.approx(100 * (1200 - 3000) / 3000, abs=0.1)
