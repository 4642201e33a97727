"""The pilot (`--pilot-steps N`): a short LoRA-vs-full run through `compare` on a subset of the
data. The share and its guard, how it moves the verdict, the plan's evidence and the DuckDB
columns joined to runs/comparisons; real runs of a tiny Llama built from a config; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from exec_fixtures import tiny_llama_dir, write_jsonl
from helpers import cli_captured

from tuneplan.executor.distance import verdict
from tuneplan.executor.distance.pilot import MIN_FULL_DROP, share_of, split_rows

FAST = ["--tokens-per-batch", "8", "--micro-batches", "2", "--depths", "1", "--measure-seq-len", "64"]


def test_share_and_its_guard():
    assert share_of(0.5, 0.2) == (pytest.approx(0.4), None)
    assert share_of(0.5, -0.1)[0] == pytest.approx(-0.2)  # LoRA got worse: a negative share, far
    for full in (0.0, MIN_FULL_DROP / 2, -0.3):  # ~0 or a rise: no share
        share, why = share_of(full, 0.1)
        assert share is None and "guard" in why
    assert share_of(None, 0.1) == (None, "a pilot run did not succeed")


@pytest.mark.parametrize(
    "share, band",
    [(1.2, "near"), (0.8, "near"), (0.79, "moderate"), (0.5, "moderate"), (0.49, "far"), (-1, "far")],
)
def test_pilot_band(share, band):
    assert verdict.pilot_band(share) == band


@pytest.mark.parametrize(
    "signals, pilot, combined",
    [
        ("near", None, "near"),
        ("near", "far", "far"),  # the pilot raises to its own verdict
        ("near", "moderate", "moderate"),
        ("far", "near", "moderate"),  # ... lowers by one step at most
        ("moderate", "near", "near"),
        ("far", "far", "far"),
    ],
)
def test_pilot_moves_the_verdict(signals, pilot, combined):
    assert verdict.with_pilot(signals, pilot) == combined


def test_split_rows_is_seeded_and_holds_out_a_quarter():
    rows = [{"text": str(i)} for i in range(40)]
    train, ev = split_rows(rows, seed=3)
    assert (len(train), len(ev)) == (30, 10) and not {r["text"] for r in train} & {r["text"] for r in ev}
    assert split_rows(rows, seed=3) == (train, ev)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pilot")
    model = tiny_llama_dir(root)
    months = ["January", "February", "March", "April", "May", "June", "July", "August"]
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"convert the date {m} {d}"},
                {"role": "assistant", "content": f"2021-{i + 1:02d}-{d:02d}"},
            ]
        }
        for i, m in enumerate(months)
        for d in (5, 17)
    ]
    return model, write_jsonl(root / "train.jsonl", rows)


def _fake_runner(drops: dict[str, float]):
    """A run_plan stand-in that records a succeeded run with eval loss 2.0 -> 2.0 - drops[method]."""
    from tuneplan.executor import ledger
    from tuneplan.schemas import Plan
    from tuneplan.schemas.run import MeasuredMemory, RunResult

    def run(
        plan_path, *, data=None, db=None, output_dir=None, max_steps=None, progress=None, model_path=None
    ):
        plan = Plan.model_validate_json(Path(plan_path).read_text())
        run_id = f"pilot-{plan.method}-{Path(output_dir).name}"
        run_dir = Path(output_dir) / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "plan.json").write_text(Path(plan_path).read_text())
        result = RunResult(
            run_id=run_id,
            status="succeeded",
            plan_hash="0" * 16,
            method=plan.method,
            model="tiny",
            hardware="cpu",
            started_at="2025-01-01T00:00:00Z",
            run_dir=str(run_dir),
            predicted_peak_bytes=plan.memory.per_device_bytes,
            measured=MeasuredMemory(device_kind="cpu", peak_bytes=1_000_000),
            eval_loss_before=2.0,
            eval_loss_after=2.0 - drops[plan.method],
            forgetting_loss_before=3.0,
            forgetting_loss_after=3.01,
            forgetting_tolerance=plan.inputs.task.forgetting_tolerance,
            domain_distance=plan.inputs.task.domain_distance,
            steps=max_steps,
        )
        (run_dir / "result.json").write_text(result.model_dump_json())
        ledger.record(db, result)
        return result

    return run


def test_advise_pilot_far_sets_the_plans_distance_and_lands_in_duckdb(setup, tmp_path, monkeypatch):
    """LoRA reaching 40% of full fine-tuning's drop says far: the plan is advised far, records
    the pilot in inputs.distance, and the measurement row joins the pilot's runs and comparison."""
    import tuneplan.executor.runner as runner

    monkeypatch.setattr(runner, "run_plan", _fake_runner({"full": 0.5, "lora": 0.2}))
    model, data = setup
    db, out = tmp_path / "runs.duckdb", tmp_path / "plan.json"
    args = ["advise", "--model", str(model), "--cpu", "--forgetting", "medium", "--data", str(data)]
    args += ["--measure-distance", *FAST, "--pilot-steps", "4", "--pilot-dir", str(tmp_path / "p")]
    code, stdout, err = cli_captured(*args, "--db", str(db), "-o", str(out))
    assert code in (0, 3), err
    plan = json.loads(out.read_text())
    ev = plan["inputs"]["distance"]
    p = ev["pilot"]
    assert (p["steps"], p["full_drop"], p["lora_drop"], p["share"], p["verdict"]) == (4, 0.5, 0.2, 0.4, "far")
    assert p["train_rows"] + p["eval_rows"] == 16 and p["eval_rows"] == 4
    assert ev["measured"] == "far" and ev["source"] == "measured"
    assert plan["inputs"]["task"]["domain_distance"] == "far"
    assert "pilot: 4 steps" in stdout and "LoRA reached 40%" in stdout
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(
            "SELECT d.pilot_steps, d.pilot_share, d.pilot_verdict, d.verdict, f.method, l.method, "
            "count(c.run_id) FROM distance_measurements d "
            "JOIN runs f ON f.run_id = d.pilot_full_run_id JOIN runs l ON l.run_id = d.pilot_lora_run_id "
            "JOIN comparisons c ON c.compare_id = d.pilot_compare_id "
            "WHERE d.measure_id = ? GROUP BY ALL",
            [ev["measure_id"]],
        ).fetchall()
    finally:
        con.close()
    assert row == [(4, 0.4, "far", "far", "full", "lora", 2)]
    # the subset files and the re-advised variants are in the pilot's folder
    folder = tmp_path / "p" / f"pilot-{ev['measure_id']}"
    assert {"pilot-train.jsonl", "pilot-eval.jsonl", "plan-full.json", "plan-lora.json"} <= {
        f.name for f in folder.iterdir()
    }


def test_pilot_under_the_guard_moves_nothing(setup, tmp_path, monkeypatch):
    import tuneplan.executor.runner as runner

    monkeypatch.setattr(runner, "run_plan", _fake_runner({"full": 0.005, "lora": 0.2}))
    model, data = setup
    code, stdout, err = cli_captured(
        "measure", "--model", str(model), "--data", str(data), *FAST, "--pilot-steps", "3",
        "--pilot-dir", str(tmp_path / "p"), "--db", str(tmp_path / "r.duckdb"), "--json",
    )  # fmt: skip
    assert code == 0, err
    ev = json.loads(stdout)
    p = ev["pilot"]
    assert p["share"] is None and p["verdict"] is None and "0.02 guard" in p["note"]
    assert (
        ev["measured"]
        == verdict.judge(ev["rank"]["mean_rank_90_share"], ev["fit"]["high_loss_share"]).distance
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["measure", "--data", "x.jsonl", "--pilot-steps", "0"],
        ["measure", "--pilot-steps", "5"],
        ["advise", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--cpu", "--pilot-steps", "5"],
        ["advise", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--cpu", "--measure-distance",
         "--pilot-steps", "5"],
    ],
)  # fmt: skip
def test_bad_pilot_input_exits_2_naming_the_flag(argv):
    code, _, err = cli_captured(*argv)
    assert code == 2 and "--pilot-steps" in err, err


def test_real_pilot_on_a_tiny_model(setup, tmp_path):
    """Two real 2-step runs (full, LoRA) on the tiny Llama: the evidence's drops are the runs'
    recorded eval losses, and the share follows them (or the guard says why there is none)."""
    model, data = setup
    db = tmp_path / "r.duckdb"
    code, stdout, err = cli_captured(
        "measure", "--model", str(model), "--data", str(data), *FAST, "--pilot-steps", "2",
        "--pilot-dir", str(tmp_path / "p"), "--db", str(db), "--json",
    )  # fmt: skip
    assert code == 0, err
    p = json.loads(stdout)["pilot"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT r.method, r.eval_loss_before - r.eval_loss_after, r.steps FROM runs r "
            "JOIN comparisons c USING (run_id) WHERE c.compare_id = ?",
            [p["compare_id"]],
        ).fetchall()
    finally:
        con.close()
    assert sorted((m, steps) for m, _, steps in rows) == [("full", 2), ("lora", 2)]
    drops = {m: d for m, d, _ in rows}
    assert p["full_drop"] == pytest.approx(drops["full"], abs=1e-6)
    assert p["lora_drop"] == pytest.approx(drops["lora"], abs=1e-6)
    if drops["full"] >= MIN_FULL_DROP:
        assert p["share"] == pytest.approx(drops["lora"] / drops["full"], abs=1e-5)
        assert p["verdict"] == verdict.pilot_band(p["share"])
    else:
        assert p["share"] is None and "guard" in p["note"]
