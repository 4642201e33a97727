"""The run in stages: plan.json read once per `tuneplan run`, bitsandbytes only for QLoRA, the
same plan measured the same alone and twice in one process, an honest result.json on a full disk,
and a launcher that says what it really recorded after an interrupt."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuneplan.executor.distributed import launch as LA
from tuneplan.executor.run import finish as F
from tuneplan.executor.signals import Recorded
from tuneplan.schemas import RunResult

PROBE = Path(__file__).resolve().parent / "run_probe.py"
PEAK_BAND = 0.02
"""Two processes' CPU peaks of one plan differ by RSS noise (0.03% measured); 2% is the band."""


def _probe(root: Path, method: str, n: int, *extra: str) -> dict:
    env = {**os.environ, "TUNEPLAN_EVAL_BATCHES": "1"}
    out = subprocess.run(
        [sys.executable, str(PROBE), str(root), method, str(n), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict:
    """One LoRA run through `tuneplan run`, in a process of its own."""
    return _probe(tmp_path_factory.mktemp("alone"), "lora", 1, "--cli")


def test_tuneplan_run_reads_the_plan_file_once_and_lora_never_imports_bitsandbytes(alone):
    assert alone["rc"] == 0 and [r["status"] for r in alone["runs"]] == ["succeeded"]
    assert alone["reads"]["plan"] == 1
    assert alone["reads"]["copy"] == 0  # the ledger records the run directory's copy from memory
    assert alone["bitsandbytes"] is False


def test_the_same_plan_twice_in_one_process_measures_as_it_does_alone(alone, tmp_path):
    twice = _probe(tmp_path, "lora", 2)
    (ref,) = alone["runs"]
    for run in twice["runs"]:
        assert run["status"] == "succeeded"
        assert abs(run["peak_bytes"] - ref["peak_bytes"]) <= PEAK_BAND * ref["peak_bytes"], (run, ref)
        assert abs(run["runtime_bytes"] - ref["runtime_bytes"]) <= PEAK_BAND * ref["runtime_bytes"]
        assert run["tensor_bytes"] == ref["tensor_bytes"]
        assert run["eval_loss_after"] == pytest.approx(ref["eval_loss_after"], rel=1e-6)
        assert run["forgetting_loss_after"] == pytest.approx(ref["forgetting_loss_after"], rel=1e-6)
    first, second = twice["runs"]
    assert second["runtime_bytes"] == first["runtime_bytes"]  # not the first run's leftover heap
    assert twice["reads"]["plan"] == 2  # once per run


def _result(tmp_path: Path, status: str = "running", **kw) -> RunResult:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return RunResult(
        run_id="r1",
        status=status,
        plan_hash="0" * 16,
        method="lora",
        model="m",
        hardware="cpu",
        started_at="2026-01-01T00:00:00+00:00",
        run_dir=str(run_dir),
        predicted_peak_bytes=1,
        predicted_fits=True,
        **kw,
    )


def test_full_disk_under_the_run_directory_leaves_result_json_honest(tmp_path, monkeypatch, capsys):
    running = _result(tmp_path)
    path = Path(running.run_dir) / "result.json"
    path.write_text(running.model_dump_json(indent=2))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F, "write_text_atomic", full)
    final = _result(tmp_path, "failed", error="OSError: [Errno 28] No space left on device", steps=2)
    recorded = Recorded(run_dir=running.run_dir, result_status="running")
    F.final_write(str(tmp_path / "db.duckdb"), Path(running.run_dir), final, [], recorded)
    on_disk = RunResult.model_validate_json(path.read_text())
    assert on_disk.status == "failed" and on_disk.steps == 2 and on_disk.error == final.error
    assert recorded.result_status == "failed" and "no space left" in recorded.result_error
    assert recorded.db_status == "failed"
    assert "rewritten in place" in capsys.readouterr().err
    # When the final text would need more room than the old file's blocks hold, nothing is overwritten.
    path.write_text("{}")
    big = _result(tmp_path, "failed", error="x" * (1 << 16))
    recorded = Recorded(run_dir=running.run_dir, result_status="running")
    F.final_write(str(tmp_path / "db.duckdb"), Path(running.run_dir), big, [], recorded)
    assert path.read_text() == "{}" and recorded.result_status == "running"
    assert "could not write" in capsys.readouterr().err


def _launch(tmp_path: Path, db: str) -> SimpleNamespace:
    from tuneplan.executor.distributed.layout import Layout

    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "result.json").write_text(_result(tmp_path).model_dump_json(indent=2))
    return SimpleNamespace(
        run_dir=run_dir,
        run_id="r1",
        args=SimpleNamespace(db=db),
        plan=None,
        data_path=tmp_path / "train.jsonl",
        recorded=None,
        layout=Layout(num_processes=2, strategy="ddp"),
    )


def test_an_interrupted_launch_says_recorded_only_when_it_was(tmp_path):
    db = tmp_path / "db.duckdb"
    L = _launch(tmp_path, str(db))
    result = LA._finish(L, 130, True, [])
    assert result.status == "interrupted"
    assert json.loads((L.run_dir / "result.json").read_text())["status"] == "interrupted"
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
    assert LA.interrupted_message(L.recorded).startswith("the run was recorded as interrupted")

    blocked = tmp_path / "not-a-db"
    blocked.mkdir()  # a directory where the database file should be: the row cannot be written
    L = _launch(tmp_path, str(blocked))
    LA._finish(L, 130, True, [])
    message = LA.interrupted_message(L.recorded)
    assert "recorded as interrupted;" not in message
    assert "result.json says interrupted" in message and "database" in message
