"""run_plan: a plan executed in three stages (executor/run/): prepare → execute → finish.

Run directory `<output_dir or ./runs>/<run_id>/`:
  plan.json      the plan as given
  metrics.jsonl  one JSON object per optimizer step (step, loss, lr, grad_norm, tokens, trained_tokens,
                 positions, elapsed_s; eval_loss and probe_loss on evaluated steps)
  checkpoints/   resumable checkpoints (executor/checkpoint.py): step-<N>/, the last K kept
  result.json    the RunResult, rewritten atomically at start, and at the end whatever happens
  run.log        third-party warnings and log lines (executor/runlog.py), appended by each attempt
  adapter/       PEFT adapter (lora, qlora) or model/ full weights (full), with the tokenizer
The run is also recorded in DuckDB through tuneplan.executor.ledger; when that fails, result.json
still holds everything and `tuneplan runs ingest` recovers the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tuneplan.base.planio import LoadedPlan, plan_hash  # noqa: F401 - plan_hash re-exported
from tuneplan.schemas import Plan, RunResult

from .run.prepare import DEFAULT_OUTPUT_DIR, create_run_dir, load_plan, prepare  # noqa: F401 - re-exported
from .runlog import RUN_LOG
from .signals import Recorded, RunInterrupted, RunSignals, pause


def run_plan(
    plan: "Plan | LoadedPlan | str | Path",
    *,
    data: Optional[str] = None,
    db: Optional[str] = None,
    output_dir: Optional[str] = None,
    max_steps: Optional[int] = None,
    progress: Optional[bool] = None,
    model_path: Optional[str] = None,
    trust_remote_code: bool = False,
    resume: Optional[str] = None,
    report_to: Optional[str] = None,
    ctx=None,
) -> RunResult:
    """Execute a plan on real weights and return its RunResult.

    ``plan`` is a Plan, a plan.json path, or the LoadedPlan the caller already read (not read
    again). ``ctx`` is the distributed context (executor/distributed/context.py): a worker of
    `tuneplan run --num-processes N` passes its DistContext; None is one process.

    Everything is validated before anything is created (InputError: plan, data files and rows,
    model location, --max-steps). SIGINT / SIGTERM are handled from the first line to after the
    last write (executor/signals.py): the run ends as "interrupted" and :class:`RunInterrupted`
    (a KeyboardInterrupt) says what was recorded; a signal before the run directory exists
    creates nothing. Any other exception ends the run as "failed" and propagates. In every case
    result.json and the database row hold the outcome and the metrics so far; when the final
    write itself fails (full disk, locked database) a succeeded run raises
    :class:`RecordingFailed` naming what is missing. ``trust_remote_code`` is the command line's
    ``--trust-remote-code``; the plan's field never turns it on (executor/remote_code.py).

    ``resume`` (a run directory, or "latest": the newest resumable run under the output
    directory) continues that run, same id, from its newest checkpoint (executor/checkpoint.py);
    ``plan`` may then be None (the run's plan.json is used) and must otherwise be the same plan.
    """
    if ctx is None:
        from .distributed.context import SingleProcess

        ctx = SingleProcess()
    from .runlog import run_log

    signals = RunSignals(announce=ctx.is_main).install()
    recorded = Recorded()
    try:
        with run_log(rank=ctx.rank) as log:
            return _stages(
                plan,
                ctx=ctx,
                db=db,
                progress=progress,
                signals=signals,
                recorded=recorded,
                log=log,
                data=data,
                output_dir=output_dir,
                max_steps=max_steps,
                model_path=model_path,
                trust_remote_code=trust_remote_code,
                resume=resume,
                report_to=report_to,
            )
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise RunInterrupted(str(exc) or "interrupted", recorded) from None
    except Exception as exc:
        try:
            exc.recorded = recorded  # type: ignore[attr-defined]
        except AttributeError:
            pass
        raise
    finally:
        signals.restore()


def _stages(plan, *, ctx, db, progress, signals: RunSignals, recorded: Recorded, log, **inputs) -> RunResult:
    from .run.execute import execute, start
    from .run.finish import check_recorded, finish

    pause("preflight", signals)
    p = prepare(plan, ctx=ctx, **inputs)
    ex = start(p)
    try:
        create_run_dir(p, ctx, db, signals, recorded)
        if p.run_dir.is_dir():
            log.attach(p.run_dir / RUN_LOG, f"run {p.run_id}" + (" (resumed)" if p.prior is not None else ""))
        pause("started", signals)
        execute(p, ex, ctx, signals, progress)
    except KeyboardInterrupt as exc:
        p.result.status = "interrupted"
        p.result.error = f"KeyboardInterrupt: {exc or 'interrupted'}"
        raise
    except BaseException as exc:
        p.result.status = "failed"
        p.result.error = f"{type(exc).__name__}: {exc}"
        _free_cuda_after_oom(exc, ctx)
        raise
    finally:
        finish(p, ex, ctx, db, signals, recorded)
    check_recorded(p, ctx, recorded)
    return p.result


def _free_cuda_after_oom(exc: BaseException, ctx) -> None:
    if ctx.device.type == "cuda":
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
