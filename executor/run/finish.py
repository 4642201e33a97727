"""Stage 3, finish: the RunResult completed from what the execute stage got to (steps, tokens,
speed, checkpoints, best step), the final result.json, then the database row — inside a critical
section, whatever ended the run — and an honest account of what landed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

from tuneplan.base.fileio import write_text_atomic
from tuneplan.schemas import RunResult

from ..signals import Recorded, RecordingFailed, RunSignals, no_space, pause
from .execute import Execution
from .prepare import Prepared, utc_now


def finish(
    p: Prepared, ex: Execution, ctx, db: Optional[str], signals: RunSignals, recorded: Recorded
) -> None:
    """Complete p.result and write it (rank 0); a signal now waits for both writes."""
    result, state = p.result, ex.state
    with signals.critical():
        if ex.bar is not None:
            ex.bar.close()
        if ex.meter is not None and result.measured is None and state.steps:
            result.measured = ex.meter.result()
        result.steps = state.steps
        result.tokens = state.tokens
        result.tokens_per_second = state.tokens / state.train_seconds if state.train_seconds > 0 else None
        result.wall_seconds = round(time.perf_counter() - ex.t_wall, 3)
        result.finished_at = utc_now()
        result.substitutions = ex.substitutions
        training_outcome(result, state)
        if ex.trackers is not None:
            ex.trackers.finish()
            ex.substitutions += ex.trackers.notes
            result.substitutions = ex.substitutions
        if ctx.is_main and recorded.run_dir is not None and p.run_dir.is_dir():
            final_write(db, p.run_dir, result, state.metrics, recorded, signals, p.copy_text)


def check_recorded(p: Prepared, ctx, recorded: Recorded) -> None:
    """RecordingFailed naming what is missing when result.json or the row lags the outcome."""
    result = p.result
    if not ctx.is_main or (recorded.result_status == result.status and recorded.db_status == result.status):
        return
    missing = (
        []
        if recorded.result_status == result.status
        else [f"result.json ({recorded.result_error or 'not written'})"]
    )
    if recorded.db_status != result.status:
        missing.append(f"the database row ({recorded.db_error or 'not written'})")
    full = " - no space left on device" if any("no space left" in m.lower() for m in missing) else ""
    raise RecordingFailed(
        f"run {p.run_id} {result.status} but could not be recorded{full}: "
        f"{'; '.join(missing)}. {recorded.describe()}",
        recorded,
        result,
    )


def training_outcome(result: RunResult, state) -> None:
    """Checkpoint, padding, best-step and stop fields of the result, from the loop's state."""
    ck = state.checkpointer
    if ck is not None:
        result.checkpoints_saved += ck.saved
        if ck.seconds:
            result.checkpoint_seconds = round(sum(ck.seconds) / len(ck.seconds), 3)
        if ck.last_bytes is not None:
            result.checkpoint_bytes = ck.last_bytes
    from ..checkpoint import newest_checkpoint

    newest = newest_checkpoint(Path(result.run_dir))
    result.checkpoint_dir = str(newest) if newest is not None else None
    if state.positions:
        result.padding_fraction = round(max(0.0, 1 - state.tokens / state.positions), 4)
        if state.train_seconds > 0:
            result.padded_tokens_per_second = state.positions / state.train_seconds
    result.best_step, result.best_eval_loss = state.best_step, state.best_eval_loss
    result.early_stopped = state.early_stopped
    if state.stop_reason:
        result.stop_reason = state.stop_reason
    elif result.status == "failed" and result.error and "checkpoint at step" in result.error:
        result.stop_reason = result.error


def final_write(
    db,
    run_dir: Path,
    result: RunResult,
    metrics: list[dict],
    recorded: Recorded,
    signals: Optional[RunSignals] = None,
    plan_text: Optional[str] = None,
) -> None:
    """Write the final result.json, then the database row; note in ``recorded`` what landed.

    On a full disk the atomic write (a temporary file, then a rename) needs space the disk does
    not have; result.json is then rewritten in place, compact, when that fits in the blocks the
    "running" one already holds (a 4 KiB page or block: it usually does), so it does not stay "running" (see :func:`rewrite_in_place`)."""
    path = run_dir / "result.json"
    try:
        write_text_atomic(path, result.model_dump_json(indent=2), fsync=True)
        recorded.result_status, recorded.result_error = result.status, None
    except OSError as exc:
        recorded.result_error = os_reason(exc)
        if no_space(exc) and rewrite_in_place(path, result.model_dump_json()):
            recorded.result_status = result.status
            recorded.notes.append("result.json rewritten in place (compact): the disk is full")
            print(
                f"warning: {path}: {recorded.result_error}; rewritten in place (compact JSON) with "
                f"status {result.status}",
                file=sys.stderr,
            )
        else:
            print(f"warning: could not write {path}: {recorded.result_error}", file=sys.stderr)
    pause("final", signals)
    error = record(db, result, metrics, recorded, plan_text)
    if error is None:
        recorded.db_status, recorded.db_error = result.status, None
    pause("recorded", signals)


def rewrite_in_place(path: Path, text: str) -> bool:
    """Overwrite an existing file with ``text`` without allocating: only when ``text`` fits in the
    blocks the file already holds (written from offset 0, then truncated, then fsynced). Not atomic — used only
    where the atomic write already failed for want of space. True when it was written."""
    data = text.encode("utf-8")
    try:
        st = path.stat()
        if max(st.st_size, getattr(st, "st_blocks", 0) * 512) < len(data):  # the blocks it holds
            return False
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def record(
    db: Optional[str],
    result: RunResult,
    metrics: list[dict],
    recorded: Optional[Recorded] = None,
    plan_text: Optional[str] = None,
) -> Optional[str]:
    """Land the run in DuckDB; never lose it when the store is missing or fails.
    Returns None when the row was written, else why not (also noted in ``recorded``)."""
    try:
        from tuneplan.executor import ledger as store
    except ImportError as exc:
        error = f"run database unavailable ({exc})"
    else:
        try:
            store.record(db, result, metrics=metrics, plan_text=plan_text)
            return None
        except Exception as exc:  # the run itself is safe in result.json
            error = os_reason(exc) if no_space(exc) else f"{type(exc).__name__}: {exc}"
    if recorded is not None:
        recorded.db_error = error
    print(
        f"warning: recording run {result.run_id} ({result.status}) in the database failed: {error}; "
        f"it is saved in {result.run_dir}/result.json and `tuneplan runs ingest {result.run_dir}` "
        "will recover it",
        file=sys.stderr,
    )
    return error


def os_reason(exc: BaseException) -> str:
    if no_space(exc):
        return f"no space left on device ({exc})"
    return f"{type(exc).__name__}: {exc}"
