"""tuneplan report: PNG figures (valid, non-empty) and report.md that embeds them."""

from __future__ import annotations


from test_check import record_run
from tuneplan.executor import ledger as store
from tuneplan.executor.ledger.report import FIGURES
from helpers import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_figures_and_markdown(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    runs = tmp_path / "runs"
    steps = [{"step": i, "loss": 3.0 - 0.1 * i} for i in range(1, 6)]
    record_run(
        db,
        runs,
        "r-full",
        method="full",
        measured=3000,
        predicted=3500,
        metrics=steps,
        eval_losses=(2.0, 1.2),
        probe_losses=(3.0, 3.2),
    )
    record_run(
        db,
        runs,
        "r-lora",
        method="lora",
        measured=1500,
        predicted=1400,
        metrics=steps,
        eval_losses=(2.0, 1.5),
        probe_losses=(3.0, 3.02),
    )
    record_run(
        db,
        runs,
        "r-qlora",
        method="qlora",
        measured=2000,
        predicted=1000,
        eval_losses=(2.0, 1.6),
        probe_losses=(3.0, 3.01),
    )
    # a CPU peak including 400 MiB of runtime: compared on tensor bytes, 1100 MiB vs 1100 MiB
    mib = 1 << 20
    record_run(
        db,
        runs,
        "r-cpu",
        method="lora",
        predicted=1500 * mib,
        overhead=400 * mib,
        measured=1500 * mib,
        runtime=400 * mib,
    )
    record_run(
        db,
        runs,
        "r-failed",
        method="lora",
        status="failed",
        measured=None,
        eval_losses=None,
        probe_losses=None,
        error="RuntimeError: x",
    )
    store.record_comparison(db, "c1", "r-full", "full", "lora", "medium")
    store.record_comparison(db, "c1", "r-lora", "lora", "lora", "medium")
    out = tmp_path / "report"
    assert cli("report", "--db", str(db), "--out", str(out)) == 0
    assert "report.md" in capsys.readouterr().out
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name
    md = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in md
    for text in ("r-full", "r-qlora", "r-failed", "broken", "held", "TP021", "| run | method |"):
        assert text in md
    assert "5 runs" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| `r-cpu` |")]
    assert "| 1100.00 | 1100.00 | +0.0% |" in row and "held" in row
    assert "like-for-like error" in md


def test_report_on_empty_and_missing_db(tmp_path, capsys):
    assert cli("report", "--db", str(tmp_path / "missing.duckdb"), "--out", str(tmp_path / "o")) == 2
    empty = tmp_path / "empty.duckdb"
    store.connect(empty).close()
    assert cli("report", "--db", str(empty), "--out", str(tmp_path / "o")) == 0
    for name in FIGURES:
        assert (tmp_path / "o" / name).read_bytes().startswith(PNG_MAGIC)
    assert "0 runs" in (tmp_path / "o" / "report.md").read_text()


def test_report_draws_eval_loss_vs_learning_rate_and_rank_from_the_recorded_trials(tmp_path, capsys):
    """A recorded 2 x 2 sweep over learning rate and rank (hand-made runs whose plans carry the
    rates and ranks): sweeps.png is written, and its two panels plot exactly the recorded
    (rate, eval loss) per rank and (rank, eval loss) per rate, read back from the drawn lines."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from exec_fixtures import make_plan
    from tuneplan.executor.ledger.report import sweep_figure

    db, runs = tmp_path / "runs.duckdb", tmp_path / "runs"
    losses = {(1e-4, 8): 1.9, (1e-3, 8): 1.4, (1e-4, 64): 1.8, (1e-3, 64): 1.2}
    for (lr, rank), loss in losses.items():
        plan = make_plan("lora", "tiny", training={"learning_rate": lr}, lora={"rank": rank})
        run_id = f"r-{lr:g}-{rank}"
        record_run(db, runs, run_id, plan=plan, eval_losses=(2.0, loss))
        store.record_comparison(
            db,
            "sw1",
            run_id,
            "lora",
            "lora",
            "medium",
            axis="learning_rate,lora_rank",
            value=f"{lr:g},{rank}",
            advised_value="0.0003,16",
        )
    record_run(db, runs, "r-failed", status="failed", eval_losses=None, probe_losses=None, error="x")
    store.record_comparison(
        db, "sw1", "r-failed", "lora", "lora", "medium", axis="learning_rate,lora_rank", value="0.01,8"
    )
    out = tmp_path / "report"
    assert cli("report", "--db", str(db), "--out", str(out)) == 0
    data = (out / "sweeps.png").read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    cols, rows = store.query(
        db,
        "SELECT t.*, r.status, r.eval_loss_after, s.learning_rate, s.lora_rank FROM sweep_trials t "
        "JOIN runs r USING (run_id) JOIN run_settings s USING (run_id)",
    )
    drawn = sweep_figure(plt, [dict(zip(cols, r)) for r in rows], tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert drawn["learning_rate"] == {
        f"sw1 lora_rank={rank}": [(lr, losses[(lr, rank)]) for lr in (1e-4, 1e-3)] for rank in (8, 64)
    }
    assert drawn["lora_rank"] == {
        f"sw1 learning_rate={lr:g}": [(rank, losses[(lr, rank)]) for rank in (8, 64)] for lr in (1e-4, 1e-3)
    }
