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
VIEWS_SQL = ROOT / "executor" / "ledger" / "views.sql"


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "runs.duckdb"
    for i, (name, measured) in enumerate((("lora", 1000), ("qlora", 700), ("full", 3000))):
        run_dir = tmp_path / "runs" / f"r{i}"
        run_dir.mkdir(parents=True)
        shutil.copy(ROOT / "examples" / "plans" / f"{name}.json", run_dir / "plan.json")
        store.record(
            path,
            make_result(
                run_dir, f"r{i}", method=name, measured=measured, predicted=1200, domain_distance="far"
            ),
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


@pytest.fixture
def trials_db(db, tmp_path) -> Path:
    """``db`` plus what `tuneplan compare` and `tuneplan sweep` record: r0-r2 as one comparison of
    the three methods, and a two-trial learning-rate sweep (l0, l1) around an advised 2e-4."""
    for rid, method in (("r0", "lora"), ("r1", "qlora"), ("r2", "full")):
        store.record_comparison(db, "c1", rid, method, "lora", "medium")
    plan = json.loads((ROOT / "examples" / "plans" / "lora.json").read_text())
    for rid, lr, loss in (("l0", 1e-4, 2.1), ("l1", 3e-4, 1.9)):
        run_dir = tmp_path / "runs" / rid
        run_dir.mkdir(parents=True)
        plan["training"]["learning_rate"] = lr
        (run_dir / "plan.json").write_text(json.dumps(plan))
        metrics, evaluated = metrics_rows(2), {}
        if rid == "l1":  # evaluated during training at step 2 (run_eval_steps, run_best_eval)
            metrics[1].update(eval_loss=loss, probe_loss=3.05)
            evaluated = dict(best_step=2, best_eval_loss=loss)
        store.record(db, make_result(run_dir, rid, eval_loss_after=loss, **evaluated), metrics)
        store.record_comparison(
            db,
            "s1",
            rid,
            "lora",
            "lora",
            "medium",
            axis="learning_rate",
            value=str(lr),
            advised_value="0.0002",
        )
    return db


# Views without a run_id are keyed by what they group by: those keys are the only columns they
# share with runs (a new aggregate view must say its keys here).
GROUP_KEYS = {
    "method_summary": ("method", "model"),
    "audit_memory_predictions": ("method", "device_kind"),
    "audit_learning_rate": ("compare_id", "model"),
}
# Shared between views: the keys of a per-trial view (comparison_runs, sweep_trials).
VIEW_KEYS = {"run_id", "compare_id"}


def _columns(con, name: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]


def _select_all_unqualified(con, left: str, right: str, on: str) -> int:
    """Every column of both sides named without a table prefix (an ambiguous name raises), the
    join keys once; the row count."""
    names = list(dict.fromkeys(_columns(con, left) + _columns(con, right)))
    rows = con.execute(f"SELECT {', '.join(names)} FROM {left} JOIN {right} {on}").fetchall()
    star = con.execute(f"SELECT * FROM {left} JOIN {right} {on}").fetchall()
    assert len(star) == len(rows)
    return len(rows)


def test_every_view_joins_runs_run_settings_and_each_other_without_ambiguity(trials_db) -> None:
    """Issue 13: views repeated the runs columns, so JOIN ... USING (run_id) was ambiguous. Every
    view carries only its own columns and keys: joined to runs and to run_settings (USING run_id,
    or ON its named run ids, or USING its group keys), to each other USING their shared keys, with
    every column selected unqualified, on recorded runs, comparisons and a sweep."""
    con = duckdb.connect(str(trials_db), read_only=True)
    try:
        views = [
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name"
            ).fetchall()
        ]
        defined = re.findall(r"^CREATE OR REPLACE VIEW (\w+)", VIEWS_SQL.read_text(), re.MULTILINE)
        assert sorted(defined) == views and len(views) >= 12
        runs_cols = set(_columns(con, "runs"))
        with_run_id = []
        for name in views:
            cols = _columns(con, name)
            assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0, f"{name} has no rows"
            run_ids = [c for c in cols if c.endswith("_run_id")]
            for other in ("runs", "run_settings"):
                if other == name:
                    continue
                if "run_id" in cols:
                    assert set(cols) & set(_columns(con, other)) == {"run_id"}, (name, other)
                    assert _select_all_unqualified(con, other, name, "USING (run_id)") > 0
                for rid in run_ids:
                    n = _select_all_unqualified(con, other, name, f"ON {other}.run_id = {name}.{rid}")
                    assert n > 0, (name, rid, other)
            if "run_id" in cols:
                with_run_id.append(name)
            elif not run_ids:
                keys = GROUP_KEYS.get(name)
                assert keys, f"{name}: neither a run id nor declared group keys (GROUP_KEYS)"
                shared = sorted(set(cols) & runs_cols)
                assert shared and set(shared) <= set(keys), (name, shared)
                assert _select_all_unqualified(con, "runs", name, f"USING ({', '.join(shared)})") > 0
            else:
                assert not set(cols) & runs_cols, (name, set(cols) & runs_cols)
        assert {"comparison_runs", "sweep_trials", "run_settings", "run_learning"} <= set(with_run_id)
        for i, a in enumerate(with_run_id):
            for b in with_run_id[i + 1 :]:
                shared = set(_columns(con, a)) & set(_columns(con, b))
                assert shared <= VIEW_KEYS, (a, b, shared - VIEW_KEYS)
                using = ", ".join(sorted(shared))
                assert _select_all_unqualified(con, a, b, f"USING ({using})") > 0, (a, b)
    finally:
        con.close()


def test_comparison_and_sweep_views_read_through_runs(trials_db) -> None:
    """The per-trial views hold only the comparison's columns; the outcome comes from runs and
    run_settings, and the audits that read it join runs themselves."""
    con = duckdb.connect(str(trials_db), read_only=True)
    try:
        assert con.execute(
            "SELECT run_id, method, status, chosen_method FROM comparison_runs JOIN runs USING (run_id) "
            "WHERE compare_id = 'c1' ORDER BY run_id"
        ).fetchall() == [
            ("r0", "lora", "succeeded", "lora"),
            ("r1", "qlora", "succeeded", "lora"),
            ("r2", "full", "succeeded", "lora"),
        ]
        trials = con.execute(
            "SELECT run_id, axis, value, learning_rate, eval_loss_after FROM sweep_trials "
            "JOIN runs USING (run_id) JOIN run_settings USING (run_id) WHERE compare_id = 's1' ORDER BY run_id"
        ).fetchall()
        assert trials == [
            ("l0", "learning_rate", "0.0001", 1e-4, 2.1),
            ("l1", "learning_rate", "0.0003", 3e-4, 1.9),
        ]
        (lr,) = con.execute(
            "SELECT trials, best_learning_rate, ratio, within_2x FROM audit_learning_rate"
        ).fetchall()
        assert lr[:2] == (2, 3e-4) and lr[2] == pytest.approx(1.5) and lr[3] is True
        (q,) = con.execute(
            "SELECT lora_run_id, qlora_run_id, qlora_measured_bytes, lora_measured_bytes, holds "
            "FROM audit_qlora_vs_lora_memory"
        ).fetchall()
        assert q == ("r0", "r1", 700, 1000, True)
        assert con.execute(
            "SELECT adapter_run_id, far_domain, full_learns_more FROM audit_lora_vs_full_learning "
            "ORDER BY adapter_run_id"
        ).fetchall() == [("r0", True, False), ("r1", True, False)]
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
def test_worked_queries_in_docs_run(db, capsys, request, title, query) -> None:
    if title.startswith(("Did LoRA", "Every trial")):
        rows = _sql(request.getfixturevalue("trials_db"), query, capsys)
        assert rows, f"{title}: no rows from a recorded comparison and sweep"
        return
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
