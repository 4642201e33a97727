"""tuneplan sweep: 3 learning rates on a tiny Llama (2 steps each) and on the embedded SmolLM2,
every trial recorded with its axis and value, the lowest eval loss picked, the tuned plan citing
the run ids, the figure drawn, the LR audit; the comparisons table upgraded in place."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import duckdb
import pytest

from exec_fixtures import make_plan, one_torch_thread, overfit_rows, tiny_llama_dir, write_jsonl
from ledger_fixtures import old_ledger_schema
from tuneplan.base.errors import InputError
from tuneplan.executor import ledger as store
from tuneplan.executor import sweep
from tuneplan.executor.ledger import check
from helpers import cli_captured, noise_in
from tuneplan.schemas import Plan, Task

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv: str) -> tuple[int, str]:
    """The exit code and stdout of `tuneplan ARGV...` (stderr captured apart)."""
    code, out, _ = cli_captured(*argv)
    return code, out


def tiny_plan(root: Path) -> Path:
    tiny = tiny_llama_dir(root)
    write_jsonl(root / "train.jsonl", overfit_rows(8))
    write_jsonl(root / "eval.jsonl", overfit_rows(8))
    plan = make_plan("lora", str(tiny), train_path="train.jsonl", eval_path="eval.jsonl")
    task = Task(domain_distance="near", forgetting_tolerance="high", seq_len=64, batch_size=4)
    plan = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={"task": task})})
    path = root / "plan.json"
    path.write_text(plan.model_dump_json(indent=2))
    return path


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    plan = tiny_plan(root)
    db, out = root / "runs.duckdb", root / "out"
    with one_torch_thread():
        code, text = cli(
            "sweep",
            str(plan),
            "--lr",
            "1e-4,1e-2,3e-2",
            "--max-steps",
            "2",
            "--db",
            str(db),
            "--output",
            str(out),
        )
    return code, text, db, out


def test_sweep_runs_every_trial_records_it_and_picks_lowest_eval_loss(tiny_sweep):
    code, text, db, out = tiny_sweep
    assert code == 0, text
    cols, rows = store.query(
        db,
        "SELECT axis, value, learning_rate, status, eval_loss_after, run_id, advised_value "
        "FROM sweep_trials JOIN runs USING (run_id) JOIN run_settings USING (run_id) ORDER BY learning_rate",
    )
    assert [r[0] for r in rows] == ["learning_rate"] * 3
    assert [r[1] for r in rows] == ["0.0001", "0.01", "0.03"]
    assert [r[2] for r in rows] == pytest.approx([1e-4, 1e-2, 3e-2])
    assert all(r[3] == "succeeded" for r in rows)
    losses = {r[1]: r[4] for r in rows}
    best_value = min(losses, key=losses.get)
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["trials"][doc["best"]]["values"]["learning_rate"] == pytest.approx(float(best_value))
    tuned = Plan.model_validate_json((out / "plan-tuned.json").read_text())
    assert tuned.training.learning_rate == pytest.approx(float(best_value))
    last = tuned.decisions[-1]
    assert last.rule == "TP060" and doc["sweep_id"] in last.message
    assert all(r[5] in last.message for r in rows)  # the evidence: every trial's run id
    assert (out / "sweep.png").stat().st_size > 5000
    assert "best" in text and doc["sweep_id"] in text
    # the advisor's own rate is recorded next to each trial, and the LR audit reads it
    advised = float(rows[0][6])
    assert advised == pytest.approx(doc["advised"]["learning_rate"])
    audit = {r["rule"]: r for r in check.audit_rules(db)}["TP040"]
    assert audit["tested"] == 1
    within = 0.5 <= float(best_value) / advised <= 2.0
    assert audit["held"] == int(within)


def test_pick_best_respects_the_forgetting_tolerance():
    a = sweep.Trial(values={"learning_rate": 1e-3}, status="succeeded", eval_loss_after=1.0, forgetting=0.4)
    b = sweep.Trial(values={"learning_rate": 3e-4}, status="succeeded", eval_loss_after=1.2, forgetting=0.01)
    c = sweep.Trial(values={"learning_rate": 1e-4}, status="failed")
    assert sweep.pick_best([a, b, c], "high")[0] == 0
    i, sentence = sweep.pick_best([a, b, c], "low")
    assert i == 1 and "within the low forgetting tolerance" in sentence
    i, sentence = sweep.pick_best([a], "low")
    assert i == 0 and "no trial kept forgetting" in sentence
    assert sweep.pick_best([c], "low")[0] is None


def test_parsers_and_bad_input(tmp_path):
    plan = make_plan("lora", "x")
    assert sweep.parse_lr("band", plan) == pytest.approx(
        [plan.training.learning_rate / 3, plan.training.learning_rate, plan.training.learning_rate * 3],
        rel=1e-2,
    )
    assert sweep.parse_targets("attention,q_proj+v_proj") == [["attention"], ["q_proj", "v_proj"]]
    for bad in ("abc", "2", "1e-3,1e-3"):
        with pytest.raises(InputError):
            sweep.parse_lr(bad, plan)
    with pytest.raises(InputError):
        sweep.parse_ranks("8,x")
    path = tiny_plan(tmp_path)
    code, _ = cli("sweep", str(path), "--lr", "5", "--db", str(tmp_path / "db.duckdb"))
    assert code == 2


def test_v4_comparisons_upgraded_in_place(tmp_path):
    db = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(db))
    assert old_ledger_schema(con, 4) == [1, 2, 3, 4]
    con.execute(
        "INSERT INTO comparisons VALUES ('c1', 'old', 'lora', 'full', 'medium', "
        "TIMESTAMP '2025-01-01 00:00:00')"
    )
    con.close()
    con = store.connect(db)
    try:
        assert con.execute(
            "SELECT compare_id, method, chosen_method, axis, value, advised_value FROM comparisons"
        ).fetchall() == [("c1", "lora", "full", "method", "lora", "full")]
        con.execute("SELECT * FROM comparison_runs").fetchall()  # the old view still works
    finally:
        con.close()
    store.record_comparison(db, "c2", "r2", "lora", "lora", "low")
    _, rows = store.query(db, "SELECT axis, value FROM comparisons WHERE compare_id = 'c2'")
    assert rows == [("method", "lora")]


@pytest.mark.slow
def test_sweep_three_learning_rates_on_the_embedded_model(tmp_path, monkeypatch, capfd):
    """The embedded SmolLM2-135M: a real advised plan, three rates, 2 steps of one short row each
    (the first step is warmup at rate 0), evaluations of one batch: cheap on a shared CPU."""
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    from tuneplan.cli.main import main as advise_main
    from tuneplan.executor.data import probe_text

    rows = [json.loads(line) for line in (ROOT / "examples/data/train.jsonl").read_text().splitlines()[:4]]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "eval.jsonl", rows[:2])
    (tmp_path / "probe.txt").write_text(probe_text()[:300])
    plan = tmp_path / "plan.json"
    with contextlib.redirect_stdout(io.StringIO()):
        code = advise_main(
            [
                "advise",
                "--model",
                "HuggingFaceTB/SmolLM2-135M-Instruct",
                "--cpu",
                "--domain",
                "near",
                "--forgetting",
                "high",
                "--batch-size",
                "1",
                "--data",
                str(tmp_path / "train.jsonl"),
                "--eval-data",
                str(tmp_path / "eval.jsonl"),
                "--probe-data",
                str(tmp_path / "probe.txt"),
                "-o",
                str(plan),
            ]
        )
    assert code == 0
    db, out = tmp_path / "runs.duckdb", tmp_path / "out"
    capfd.readouterr()
    code, text, err = cli_captured(
        "sweep",
        str(plan),
        "--lr",
        "1e-5,1e-3,3e-1",
        "--max-steps",
        "2",
        "--db",
        str(db),
        "--output",
        str(out),
    )
    assert code == 0, text + err
    fd = capfd.readouterr()  # what reached the terminal below Python (C extensions' stderr)
    assert noise_in(text + err + fd.out + fd.err) == {}, err + fd.err
    assert [line for line in err.splitlines() if line.startswith("step ")], err  # our progress lines
    _, trials = store.query(
        db,
        "SELECT learning_rate, eval_loss_after, status FROM sweep_trials JOIN runs USING (run_id) "
        "JOIN run_settings USING (run_id) ORDER BY learning_rate",
    )
    assert [t[0] for t in trials] == pytest.approx([1e-5, 1e-3, 3e-1]) and all(
        t[2] == "succeeded" for t in trials
    )
    best = min(trials, key=lambda t: t[1])
    tuned = Plan.model_validate_json((out / "plan-tuned.json").read_text())
    assert tuned.training.learning_rate == pytest.approx(best[0])
    assert best[0] != pytest.approx(3e-1)  # a rate 300x too high does not win


def test_sweep_over_target_sets_records_each_and_tunes_the_plan(tmp_path):
    """`--targets attention,all-linear` on the tiny Llama (2 steps each, the first is warmup): both trials land in DuckDB
    with axis target_modules, the tuned plan carries the best trial's resolved modules and its
    decision cites both run ids; the figure draws eval loss per target set."""
    plan = tiny_plan(tmp_path)
    db, out = tmp_path / "runs.duckdb", tmp_path / "out"
    with one_torch_thread():
        code, text = cli(
            "sweep",
            str(plan),
            "--targets",
            "attention,all-linear",
            "--max-steps",
            "2",
            "--db",
            str(db),
            "--output",
            str(out),
        )
    assert code == 0, text
    _, rows = store.query(
        db,
        "SELECT t.value, t.advised_value, r.status, r.eval_loss_after, t.run_id, s.target_modules "
        "FROM sweep_trials t JOIN runs r USING (run_id) JOIN run_settings s USING (run_id) "
        "WHERE t.axis = 'target_modules' ORDER BY t.value",
    )
    assert [r[0] for r in rows] == ["all-linear", "attention"]
    assert all(r[2] == "succeeded" and r[3] is not None for r in rows)
    assert {r[1] for r in rows} == {"q_proj+k_proj+v_proj+o_proj+gate_proj+up_proj+down_proj"}
    ran = {r[0]: json.loads((out / f"plan-{i:02d}.json").read_text()) for i, r in enumerate(reversed(rows))}
    assert ran["attention"]["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert len(ran["all-linear"]["lora"]["target_modules"]) == 7
    assert {r[0]: list(r[5]) for r in rows} == {k: v["lora"]["target_modules"] for k, v in ran.items()}
    assert rows[0][3] != rows[1][3]  # the adapted modules made a difference
    best = min(rows, key=lambda r: r[3])
    tuned = Plan.model_validate_json((out / "plan-tuned.json").read_text())
    assert tuned.lora.target_modules == ran[best[0]]["lora"]["target_modules"]
    assert tuned.inputs.pins.target_modules == [best[0]]
    last = tuned.decisions[-1]
    assert last.rule == "TP060" and "target_modules" in last.message
    assert all(r[4] in last.message for r in rows)
    assert (out / "sweep.png").stat().st_size > 5000
    assert "target_modules" in text and "(best)" in text
