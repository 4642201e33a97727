"""`tuneplan check --format markdown` and compare's markdown (issue 13): a pull-request comment."""

from __future__ import annotations

import re

from test_check import CASES, cli, record_run
from tuneplan.executor.compare import Comparison, Outcome
from tuneplan.executor.ledger.markdown import compare_markdown


def _table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


def test_check_markdown_is_a_table_per_run_with_the_verdict_first(tmp_path, capsys) -> None:
    db = tmp_path / "runs.duckdb"
    for run_id, (kw, _, _) in CASES.items():
        record_run(db, tmp_path / "runs", run_id, **kw)
    capsys.readouterr()
    assert cli("check", "--db", str(db), "--format", "markdown", "--strict") == 1
    text = capsys.readouterr().out
    broken = sum(v == "broken" for _, v, _ in CASES.values())
    first = text.splitlines()[0]
    assert (
        first.startswith("### ❌")
        and f"{len(CASES) - broken} of {len(CASES)} runs held, {broken} broken" in first
    )
    rows = _table_rows(text)
    assert rows[0][:3] == ["run", "method", "status"] and set(rows[1][0]) == {"-"}
    body = {r[0].strip("`"): r for r in rows[2:]}
    assert set(body) == set(CASES)
    for run_id, (_, verdict, _) in CASES.items():
        assert body[run_id][7] == ("held" if verdict == "held" else "**broken**")
    assert all(len(r) == 9 for r in rows), "a pipe inside a cell would break the table"


def test_check_markdown_all_held(tmp_path, capsys) -> None:
    db = tmp_path / "good.duckdb"
    record_run(db, tmp_path / "good", "fine")
    capsys.readouterr()
    assert cli("check", "--db", str(db), "--format", "markdown", "--strict") == 0
    assert capsys.readouterr().out.startswith("### ✅ tuneplan check: 1 of 1 runs held, 0 broken")


def test_compare_markdown() -> None:
    cmp = Comparison(
        compare_id="cmp-1",
        advised_method="lora",
        plan_method="lora",
        forgetting_tolerance="low",
        domain_distance="near",
        output_dir="runs/cmp-1",
        sentence="LoRA learned as much | forgot less.",
    )
    cmp.outcomes["lora"] = Outcome(
        method="lora",
        status="succeeded",
        run_id="r1",
        predicted_comparable_bytes=2 * 1024**3,
        measured_comparable_bytes=2 * 1024**3,
        learning=0.5,
        forgetting=0.01,
        tokens_per_second=1234.0,
    )
    cmp.outcomes["full"] = Outcome(method="full", status="failed", run_id="r2", error="CUDA out of memory")
    text = compare_markdown(cmp)
    assert text.startswith("### ❌ tuneplan compare `cmp-1`")
    rows = _table_rows(text)
    assert rows[2][:5] == ["lora (advised)", "succeeded", "2.00 GiB", "2.00 GiB", "+0.0%"]
    assert rows[3][:2] == ["full", "failed"]
