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
