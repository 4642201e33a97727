"""No run lost at any moment: a signal at each phase of a real `tuneplan run`, SIGKILL + ingest,
a dead or reused pid, and a full disk under the database or the run directory.

The signal tests run the real command line in its own session and aim the signal with the hidden
hook TUNEPLAN_TEST_PAUSE_AT (executor/signals.py), which waits at a named phase until a signal
arrives. The full-disk tests mount a small tmpfs (root only; skipped elsewhere) and fill it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
from helpers import TUNEPLAN
from tuneplan.executor import ledger as store
from tuneplan.executor import owner
from tuneplan.schemas import RunResult


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("signals"))


@pytest.fixture()
def plan_file(tiny, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    path = tmp_path / "plan.json"
    path.write_text(
        make_plan("lora", str(tiny), train_path=str(train), training={"max_steps": 2}).model_dump_json()
    )
    return path


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def _rows(db: Path) -> list[dict]:
    return store.list_runs(str(db)) if db.exists() else []


def _start(plan_file: Path, out: Path, db: Path, phase: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNEPLAN_TEST_PAUSE_AT": phase}
    return subprocess.Popen(
        [*TUNEPLAN, "run", str(plan_file), "--output", str(out), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _wait_for_pause(proc: subprocess.Popen, phase: str) -> list[str]:
    seen = []
    for line in proc.stderr:  # the hook prints one line, then waits for the signal
        seen.append(line)
        if line.strip() == f"tuneplan-test: paused at {phase}":
            return seen
    proc.wait(timeout=30)
    raise AssertionError(f"never paused at {phase}: rc={proc.returncode}\n{''.join(seen)}")


def _signal_at(plan_file, out, db, phase, sig) -> tuple[int, str]:
    proc = _start(plan_file, out, db, phase)
    try:
        before = _wait_for_pause(proc, phase)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, "".join(before) + err


# phase -> the status both result.json and the row must end with (None: nothing created)
EXPECTED = {
    "preflight": None,  # handlers installed, no run directory yet
    "created": "interrupted",  # directory made; the signal waits until the first files are whole
    "started": "interrupted",  # result.json and row say running
    "training": "interrupted",  # after the first optimizer step
    "final": "succeeded",  # final result.json written, row not yet: the row is still written
    "recorded": "succeeded",  # row written, handlers still installed
    "returned": "succeeded",  # handlers restored, summary not yet printed
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(EXPECTED))
def test_signal_at_each_phase_leaves_a_whole_record(phase, sig, plan_file, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    rc, err = _signal_at(plan_file, out, db, phase, sig)
    status = EXPECTED[phase]
    assert "Traceback" not in err, err
    if phase == "returned" and sig == signal.SIGTERM:
        assert rc == -signal.SIGTERM  # default action: everything was written before
    else:
        assert rc == 130, err
    if status is None:
        assert _run_dirs(out) == [] and _rows(db) == []
        assert "nothing was recorded" in err
        return
    (run_dir,) = _run_dirs(out)
    result = RunResult.model_validate_json((run_dir / "result.json").read_text())
    (row,) = _rows(db)
    assert result.status == row["status"] == status, err
    assert result.finished_at and row["steps"] == result.steps
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert result.steps == len(lines) == (2 if status == "succeeded" else result.steps)
    if phase == "training":
        assert result.steps >= 1 and result.measured is not None
    if status == "interrupted":
        assert "result.json says interrupted, the database row matches" in err
    elif phase != "returned":  # the message tells the truth: the run was not recorded as interrupted
        assert "recorded as interrupted" not in err
        assert "result.json says succeeded, the database row matches" in err
    elif sig == signal.SIGINT:
        assert "recorded as succeeded" in err


def test_sigkill_then_ingest_records_the_lost_run(plan_file, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    proc = _start(plan_file, out, db, "training")
    try:
        _wait_for_pause(proc, "training")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_dir,) = _run_dirs(out)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "running"
    assert [r["status"] for r in _rows(db)] == ["running"]
    ing = subprocess.run(
        [*TUNEPLAN, "runs", "ingest", str(out), "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert ing.returncode == 0, ing.stderr
    assert "recorded as interrupted (lost:" in ing.stdout
    result = RunResult.model_validate_json((run_dir / "result.json").read_text())
    (row,) = _rows(db)
    assert result.status == row["status"] == "interrupted"
    assert result.error.startswith("lost: process ") and "no longer exists" in result.error
    assert result.steps == row["steps"] == 1 and result.tokens > 0 and result.finished_at
    assert store.query(str(db), "SELECT count(*) FROM metrics")[1] == [(1,)]


def _running_dir(tmp_path: Path, process: dict) -> Path:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(
        RunResult(
            run_id="r1",
            status="running",
            plan_hash="0" * 16,
            method="lora",
            model="m",
            hardware="cpu",
            started_at="2026-01-01T00:00:00+00:00",
            run_dir=str(run_dir),
            predicted_peak_bytes=1,
        ).model_dump_json()
    )
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": 2.0, "lr": 1e-3, "grad_norm": 1.0, "tokens": 64, "elapsed_s": 0.5})
        + "\n"
    )
    (run_dir / owner.FILE).write_text(json.dumps(process))
    return run_dir


def test_ingest_leaves_a_live_run_running_and_marks_a_reused_pid_lost(tmp_path):
    me = owner.identity()
    run_dir = _running_dir(tmp_path, me)
    notes: list[str] = []
    store.ingest(str(tmp_path / "db.duckdb"), [run_dir], notes=notes)
    assert [r["status"] for r in _rows(tmp_path / "db.duckdb")] == ["running"]
    assert "still running" in notes[0]
    # same pid, but started an hour earlier: the pid was reused by this process
    (run_dir / owner.FILE).write_text(json.dumps({**me, "process_started": me["process_started"] - 3600}))
    store.ingest(str(tmp_path / "db.duckdb"), [run_dir], notes=notes)
    (row,) = _rows(tmp_path / "db.duckdb")
    assert row["status"] == "interrupted" and row["steps"] == 1
    assert (
        "pid now belongs to a process started later"
        in json.loads((run_dir / "result.json").read_text())["error"]
    )


# ---------------------------------------------------------------------------------- full disk


@pytest.fixture()
def tmpfs(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


def _run_cli_filling(monkeypatch, capsys, argv, fill_dir: Path, at: str = "started") -> tuple[int, str]:
    import tuneplan.cli.main as cli
    from tuneplan.executor import runner

    real = runner.pause

    def pause(phase, signals=None):
        if phase == at:
            _fill(fill_dir)
        return real(phase, signals)

    monkeypatch.setattr(runner, "pause", pause)
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def test_full_disk_under_the_database_says_so_and_exits_1(plan_file, tmpfs, tmp_path, monkeypatch, capsys):
    out, db = tmp_path / "runs", tmpfs / "db.duckdb"
    rc, err = _run_cli_filling(
        monkeypatch, capsys, ["run", str(plan_file), "--output", str(out), "--db", str(db)], tmpfs
    )
    assert rc == 1, err
    assert "no space left on device" in err and "Traceback" not in err and "rollback" not in err.lower()
    (run_dir,) = _run_dirs(out)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "succeeded"
    (tmpfs / "filler").unlink()  # space again: ingest brings the row in line with result.json
    store.ingest(str(db), [run_dir])
    assert [r["status"] for r in _rows(db)] == ["succeeded"]


def test_full_disk_under_the_run_directory_says_so_and_exits_1(
    plan_file, tmpfs, tmp_path, monkeypatch, capsys
):
    db = tmp_path / "db.duckdb"
    rc, err = _run_cli_filling(
        monkeypatch, capsys, ["run", str(plan_file), "--output", str(tmpfs), "--db", str(db)], tmpfs
    )
    assert rc == 1, err
    assert "no space left on device" in err.lower() and "Traceback" not in err
    (row,) = _rows(db)
    assert row["status"] == "failed" and "No space left on device" in row["error"]
    (run_dir,) = _run_dirs(tmpfs)  # result.json tells the same, not "running" (rewritten in place)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"


def test_in_training_a_second_sigint_stops_at_once_a_repeated_sigterm_does_not():
    """Issue 12 item 3, in the training loop (RunSignals.soft): the first signal only asks for a
    checkpoint at the end of the step; a second SIGINT raises at once; a repeated SIGTERM (torchrun
    forwards it to its workers) is ignored so the checkpoint completes."""
    import time

    from tuneplan.executor.signals import RunSignals

    for first, second, raises in (("SIGINT", "SIGINT", True), ("SIGTERM", "SIGTERM", False)):
        s = RunSignals().install()
        try:
            with s.soft():
                os.kill(os.getpid(), getattr(signal, first))
                time.sleep(0.05)  # the handler runs in the main thread, between bytecodes
                assert s.stop_requested == first
                if raises:
                    with pytest.raises(KeyboardInterrupt, match="twice: stopped at once"):
                        os.kill(os.getpid(), getattr(signal, second))
                        time.sleep(1)
                else:
                    os.kill(os.getpid(), getattr(signal, second))
                    time.sleep(0.05)
                    assert s.stop_requested == first
        finally:
            s.restore()
