"""One rank of a multi-process run: ``python -m tuneplan.executor.distributed.worker PLAN [options]``.

Started by `tuneplan run --num-processes N` through torchrun (CPU, gloo) or ``accelerate launch``
(GPUs), never by hand: the launcher (executor/distributed/launch.py) sets TUNEPLAN_RUN_ID / TUNEPLAN_RUN_DIR /
TUNEPLAN_STRATEGY / TUNEPLAN_CPU_OFFLOAD, and torchrun sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT. Output: see :func:`console_on_stdout`. Each rank reads the plan once, joins the process group
(executor/distributed/context.py) and runs the same run_plan as one process does, its DistContext
passed explicitly; only rank 0 writes the run directory and the database row. A rank that fails leaves ``error-rank<R>.txt`` in the run directory for the launcher.

Exit codes: 0 succeeded, 1 failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from . import context as dist_mod
from . import layout


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuneplan.executor.distributed.worker")
    p.add_argument("plan")
    p.add_argument("--data")
    p.add_argument("--db")
    p.add_argument("--output")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--model-path")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--resume")
    p.add_argument("--report-to")
    return p


def console_on_stdout() -> None:
    """When the launcher asks for it (ENV_CONSOLE): swap the two output channels of this process.

    torchrun's agent and every worker share one stderr, where torch's C++ warnings, the
    profiler's lines and the agent's own notices also land. The launcher reads that stream into
    run.log and prints this process's stdout to the user instead. So: ``sys.stderr`` (what
    tuneplan prints, Python tracebacks, ERROR records of the run log's console handler) is
    rebound to a line-buffered stream on the launcher's stdout pipe, and file descriptor 1 is
    pointed at stderr, so third-party writes to stdout (Python or C) go to the log as well.
    Called first, before torch or transformers create logging handlers on the old sys.stderr."""
    if os.environ.get(layout.ENV_CONSOLE) != "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.dup(1)
    os.dup2(2, 1)
    sys.stderr = open(console, "w", buffering=1, encoding="utf-8", errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    console_on_stdout()
    args = _parser().parse_args(argv)
    from tuneplan.base.errors import InputError

    from ..run.prepare import load_plan, read_once
    from ..runner import run_plan

    rank = layout.env_rank()
    run_dir = os.environ.get(layout.ENV_RUN_DIR)
    ctx = None
    try:
        loaded = read_once(args.plan)
        plan, _, _ = load_plan(loaded, trust_remote_code=args.trust_remote_code)
        strategy = os.environ.get(layout.ENV_STRATEGY) or (
            "ddp" if plan.distributed.strategy == "none" else plan.distributed.strategy
        )
        offload = os.environ.get(layout.ENV_OFFLOAD, "0") == "1"
        ctx = dist_mod.init_worker(
            plan,
            strategy=strategy,
            cpu_offload=offload,
            model_dir=Path(args.model_path) if args.model_path else None,
        )
        run_plan(
            loaded,
            ctx=ctx,
            data=args.data,
            db=args.db,
            output_dir=args.output,
            max_steps=args.max_steps,
            model_path=args.model_path,
            progress=False,
            trust_remote_code=args.trust_remote_code,
            resume=args.resume,
            report_to=args.report_to,
        )
        return 0
    except KeyboardInterrupt:
        return 130
    except InputError as exc:
        if run_dir:
            dist_mod.write_error(Path(run_dir), rank, f"InputError: {exc.render()}")
        if rank == 0:
            print(exc.render(), file=sys.stderr)
        return 2
    except BaseException as exc:  # noqa: BLE001 - reported through the error file
        if run_dir:
            tail = "".join(traceback.format_exception(exc)[-6:])
            dist_mod.write_error(Path(run_dir), rank, f"{type(exc).__name__}: {exc}\n\n{tail}")
        print(f"rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            try:
                ctx.close()
            except Exception:  # noqa: BLE001 - the group may already be broken
                pass


if __name__ == "__main__":
    sys.exit(main())
