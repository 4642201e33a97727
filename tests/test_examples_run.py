"""plan.json committed and executed in CI: the example plans run on the embedded SmolLM2 for a few
steps through the real CLI, and land in DuckDB.

`tuneplan compare examples/plan.json` re-advises the example task with each method pinned — the
very plans committed as examples/plans/{full,lora,qlora}.json (checked below) — and runs all three:
that is both "each example plan executed" and "a compare of all three methods on the embedded
model". examples/plan.json itself is run once more with `tuneplan run`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import noise_in, tuneplan
from tuneplan.executor.runlog import RUN_LOG

ROOT = Path(__file__).resolve().parents[1]
STEPS = "2"
COMPARE_STEPS = "1"  # three real runs: one step each records every column this test asserts
pytestmark = pytest.mark.slow


def tp(*args: str) -> subprocess.CompletedProcess:
    return tuneplan(*args, cwd=ROOT)


def _comparable(plan: dict) -> dict:
    plan = {k: v for k, v in plan.items() if k not in ("$schema", "tuneplan_version", "data")}
    return plan


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ci") / "runs.duckdb"


def test_compare_runs_the_three_example_plans(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    r = tp(
        "compare",
        "examples/plan.json",
        "--methods",
        "full,lora,qlora",
        "--max-steps",
        COMPARE_STEPS,
        "--db",
        str(db),
        "--output",
        str(out),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert noise_in(r.stderr + r.stdout) == {}, r.stderr  # third-party noise in each run.log instead
    logs = {p.parent.name: p.read_text() for p in out.rglob(RUN_LOG)}
    assert len(logs) == 3 and all("torch profiler (libkineto)" in noise_in(t) for t in logs.values()), logs
    for method in ("full", "lora", "qlora"):
        variant = json.loads((out / f"plan-{method}.json").read_text())
        committed = json.loads((ROOT / "examples" / "plans" / f"{method}.json").read_text())
        assert _comparable(variant) == _comparable(committed), f"{method} variant differs from examples/plans"
    assert "supports" in r.stdout or "evidence" in r.stdout
    from tuneplan.executor import ledger as store

    runs = store.list_runs(db)
    assert sorted(x["method"] for x in runs) == ["full", "lora", "qlora"]
    for row in runs:
        assert row["status"] == "succeeded"
        assert row["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert row["measured_peak_bytes"] > 0 and row["predicted_peak_bytes"] > 0
        assert row["eval_loss_before"] is not None and row["eval_loss_after"] is not None
        assert row["forgetting_loss_before"] is not None and row["tokens_per_second"] > 0
    cols, rows = store.query(db, "SELECT count(*) FROM comparisons")
    assert rows[0][0] == 3


def test_run_example_plan_and_check(db: Path, tmp_path: Path) -> None:
    r = tp("run", "examples/plan.json", "--max-steps", STEPS, "--db", str(db), "--output", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert noise_in(r.stderr + r.stdout) == {}, r.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "succeeded" and result["steps"] == int(STEPS)
    assert (run_dir / "adapter").is_dir()
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    c = tp("check", "--db", str(db), "--json")
    assert c.returncode == 0, c.stderr
    report = json.loads(c.stdout)
    assert result["run_id"] in {x["run_id"] for x in report["runs"]}
    s = tp(
        "sql",
        "--db",
        str(db),
        "--format",
        "json",
        f"SELECT method, status FROM runs WHERE run_id = '{result['run_id']}'",
    )
    assert json.loads(s.stdout) == [{"method": "lora", "status": "succeeded"}]


def test_example_plan_on_two_processes(db: Path, tmp_path: Path) -> None:
    """DDP with 2 processes (gloo on CPU) runs the example plan and lands ONE record."""
    r = tp(
        "run",
        "examples/plan.json",
        "--num-processes",
        "2",
        "--max-steps",
        "1",
        "--db",
        str(db),
        "--output",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert noise_in(r.stderr + r.stdout) == {}, r.stderr
    from tuneplan.executor import ledger as store

    cols, rows = store.query(
        db, "SELECT num_processes, strategy, status, steps FROM runs WHERE num_processes = 2"
    )
    assert rows == [(2, "ddp", "succeeded", 1)]
