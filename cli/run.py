"""Commands that execute a plan or turn its result into something else: ``tuneplan run`` (with
``--resume``, ``--dry-run`` and multi-process launch), ``tuneplan export`` and ``tuneplan merge``.

Exit codes: 0 success; 1 the run failed (training error, recording failed); 2 bad input; 3 an
infeasible plan; 130 interrupted. Only argparse and the standard library load with this module:
torch and the executor are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFEASIBLE, EXIT_OK

from .options import add_run_options, add_trust_option, non_negative_int, positive_int, trust_kwargs
from .output import (
    EXIT_INTERRUPTED,
    before_after,
    check_out_dir,
    err,
    gib,
    guarded,
    input_error,
    no_file,
    signed_pct,
)

_PLAN_FIX = "give the plan.json written by `tuneplan advise`"


# --------------------------------------------------------------------------------------------
# Parsers


def add_run(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "run",
        help="execute a plan.json and record what it measured",
        description="Train as plan.json says, measure peak memory, learning (in-domain eval "
        "loss before/after), forgetting (general-text probe loss before/after) and speed, and "
        "record the run in the run database. Exit 0 succeeded, 1 failed, 2 bad input, "
        "130 interrupted.",
    )
    add_run_options(p, output_help="parent directory for the run directory", plan_optional=True)
    p.add_argument(
        "--report-to",
        metavar="LIST",
        help="also log metrics and the plan's settings to experiment trackers: tensorboard, "
        "wandb, mlflow (comma list; optional extras: pip install 'tuneplan[trackers]'). All "
        "write under the run directory: TensorBoard events, MLflow's file store (unless "
        "$MLFLOW_TRACKING_URI), W&B's files (unless $WANDB_DIR; W&B uploads only when logged "
        "in and not WANDB_MODE=offline). A tracker that cannot start is a warning; the run goes on",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR|latest",
        help="continue an interrupted run (same run id) from its newest checkpoint; "
        "latest: the newest resumable run under --output (default ./runs)",
    )
    p.add_argument(
        "--num-processes",
        type=positive_int,
        metavar="N",
        default=None,
        help="processes to launch over all machines (default: as planned, "
        "distributed.num_processes); more than 1 launches workers with torchrun (CPU, "
        "gloo) or accelerate launch (GPUs)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the launch command and the accelerate config, start nothing",
    )
    p.add_argument(
        "--num-machines",
        type=positive_int,
        metavar="M",
        default=None,
        help="machines in the job (default: as planned, distributed.num_nodes)",
    )
    p.add_argument(
        "--machine-rank",
        type=non_negative_int,
        metavar="R",
        default=0,
        help="this machine's rank, 0..M-1 (default 0)",
    )
    p.add_argument("--main-process-ip", metavar="IP", help="address of machine rank 0")
    p.add_argument(
        "--main-process-port",
        type=positive_int,
        metavar="P",
        help="rendezvous port on machine rank 0 (default: a free port; 29500 "
        "when --main-process-ip is given)",
    )
    p.set_defaults(func=cmd_run)


def add_export(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "export",
        help="write the plan as a TRL, Axolotl, LLaMA-Factory or torchtune config",
        description="Write plan.json in another trainer's own config format: method, LR and schedule, "
        "rank, alpha, dropout, targets, 4-bit quantization, precision, checkpointing, batch, sequence "
        "length, data and distributed settings. What the target cannot express is listed in the file's "
        "header and on stderr. Exit 0 written, 2 bad input.",
    )
    p.add_argument("plan", metavar="PLAN", help="plan.json written by `tuneplan advise`")
    p.add_argument(
        "--to", required=True, choices=("trl", "axolotl", "llamafactory", "torchtune"), help="target trainer"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_export)


def add_merge(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge a run's LoRA adapter into full weights",
        description="Merge the adapter saved by a LoRA/QLoRA run into its base model and save "
        "the merged weights.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `tuneplan run`")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the merged model (default: "
        "RUN_DIR/merged); a non-empty directory is refused unless --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out directory (its files may be overwritten)",
    )
    add_trust_option(p)
    p.set_defaults(func=cmd_merge)


# --------------------------------------------------------------------------------------------
# run


def _launch(args: argparse.Namespace) -> int:
    """Hand --num-processes > 1, several machines and --dry-run to tuneplan.executor.distributed.launch."""
    from tuneplan.executor.distributed.launch import launch

    code = preflight_or_exit(args, resolve_model=not args.dry_run)
    if code is not None:
        return code
    return guarded(lambda: int(launch(args.plan, args, print_summary=_print_summary) or 0))


def preflight_or_exit(args: argparse.Namespace, *, resolve_model: bool) -> Optional[int]:
    """The shared pre-flight (executor/preflight.py): None when the plan may go ahead, else the
    exit code after saying why (2 bad input, 3 infeasible)."""
    from tuneplan.base.errors import InputError
    from tuneplan.executor.preflight import Infeasible, preflight

    try:
        preflight(
            _plan(args),
            data=getattr(args, "data", None),
            model_path=getattr(args, "model_path", None),
            resolve_model=resolve_model,
        )
    except InputError as exc:
        err(exc.render())
        return EXIT_BAD_INPUT
    except Infeasible as exc:
        err(str(exc))
        return EXIT_INFEASIBLE
    return None


def _print_summary(result: Any, plan: Any = None) -> None:
    from tuneplan.executor.ledger.memory_compare import from_result

    lfl = from_result(result, plan)  # the framework overhead: the plan's, else <run_dir>/plan.json's
    measured = lfl.measured_bytes
    print(f"run {result.run_id} {result.status}")
    print(f"  dir        {result.run_dir}")
    line = f"  peak       predicted {gib(result.predicted_peak_bytes)} GiB, measured {gib(measured)} GiB"
    if lfl.raw_error is not None:
        line += f" (prediction {signed_pct(lfl.raw_error)})"
    if result.measured:
        line += f" [{result.measured.device_kind}]"
    print(line)
    if measured:
        line = (
            f"  tensors    predicted {gib(lfl.predicted_comparable_bytes)} GiB, measured "
            f"{gib(lfl.measured_comparable_bytes)} GiB (like-for-like error "
            f"{signed_pct(lfl.error) or '-'}; prediction less {gib(lfl.overhead_bytes)} GiB "
            f"framework overhead, peak less {gib(lfl.runtime_bytes)} GiB runtime)"
        )
        print(line)
    print(f"  eval loss  {before_after(result.eval_loss_before, result.eval_loss_after)}")
    print(f"  probe loss {before_after(result.forgetting_loss_before, result.forgetting_loss_after)}")
    speed = "-" if result.tokens_per_second is None else f"{result.tokens_per_second:,.0f}"
    wall = "" if result.wall_seconds is None else f", {result.wall_seconds:.1f} s wall"
    print(f"  speed      {speed} tokens/s, {result.steps} steps, {result.tokens} tokens{wall}")
    for sub in result.substitutions:
        print(f"  substituted: {sub}")


def _planned_processes(args: argparse.Namespace) -> int:
    """distributed.num_processes of the plan file, read here once (base/planio.py) and kept as
    ``args.loaded_plan`` for the pre-flight, the run and the launcher (1 when it cannot be read:
    those report why, as before)."""
    from tuneplan.base.errors import InputError
    from tuneplan.base.planio import read_plan

    try:
        args.loaded_plan = read_plan(args.plan)
    except InputError:
        args.loaded_plan = None
        return 1
    return max(1, int(args.loaded_plan.plan.distributed.num_processes))


def _plan(args: argparse.Namespace) -> Any:
    """The plan as read once by :func:`_planned_processes`, else its path (read where it is used)."""
    loaded = getattr(args, "loaded_plan", None)
    return loaded if loaded is not None else args.plan


def cmd_run(args: argparse.Namespace) -> int:
    from tuneplan.base.errors import InputError

    if args.plan is None and not args.resume:
        input_error(
            "PLAN",
            "no plan given",
            "pass the plan.json written by `tuneplan advise`, or --resume RUN_DIR|latest",
        )
        return EXIT_BAD_INPUT
    if args.resume:
        from tuneplan.executor.resume import resolve_resume

        try:
            prior = resolve_resume(args.resume, args.plan, args.output)
        except InputError as exc:
            err(exc.render())
            return EXIT_BAD_INPUT
        args.plan = args.plan or str(prior.run_dir / "plan.json")
        args.resume = str(prior.run_dir)
        if args.num_processes is None:  # as the checkpoint was written
            args.num_processes = int(prior.manifest.get("num_processes") or prior.result.num_processes or 1)
    missing = no_file(args.plan, "PLAN", _PLAN_FIX)
    if missing is not None:
        return missing
    planned = _planned_processes(args)
    if args.num_processes is None:
        args.num_processes = planned
    if args.dry_run and args.num_processes == 1 and (args.num_machines or 1) == 1:
        from tuneplan.executor.distributed.launch import dry_run_in_process

        code = preflight_or_exit(args, resolve_model=False)
        if code is not None:
            return code

        return guarded(lambda: dry_run_in_process(args))
    if args.num_processes > 1 or args.dry_run or (args.num_machines or 1) > 1:
        return _launch(args)
    from tuneplan.executor.runner import run_plan

    from tuneplan.executor.preflight import Infeasible
    from tuneplan.executor.signals import RecordingFailed, RunInterrupted, pause

    try:
        result = run_plan(
            _plan(args),
            data=args.data,
            db=args.db,
            output_dir=args.output,
            max_steps=args.max_steps,
            model_path=args.model_path,
            resume=args.resume,
            report_to=args.report_to,
            **trust_kwargs(args),
        )
    except InputError as exc:
        err(exc.render())
        return EXIT_BAD_INPUT
    except Infeasible as exc:
        err(str(exc))
        return EXIT_INFEASIBLE
    except RunInterrupted as exc:
        err(f"interrupted ({exc}): {exc.recorded.describe()}")
        from tuneplan.executor.checkpoint import resume_hint

        hint = resume_hint(exc.recorded.run_dir)
        if hint:
            err(hint)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # pragma: no cover - run_plan wraps every interrupt
        err("interrupted")
        return EXIT_INTERRUPTED
    except RecordingFailed as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the runner recorded the failed run already
        recorded = getattr(exc, "recorded", None)
        err(f"error: run failed: {type(exc).__name__}: {exc}")
        if recorded is not None:
            err(f"  {recorded.describe()}")
        return EXIT_FAILED
    try:
        pause("returned")
        loaded = getattr(args, "loaded_plan", None)
        _print_summary(result, loaded.plan if loaded is not None else None)
    except KeyboardInterrupt:
        err(
            f"interrupted after the run ended: run {result.run_id} is recorded as {result.status} "
            f"in {result.run_dir}/result.json and the database"
        )
        return EXIT_INTERRUPTED
    return EXIT_OK if result.status == "succeeded" else EXIT_FAILED


# --------------------------------------------------------------------------------------------
# export


def cmd_export(args: argparse.Namespace) -> int:
    missing = no_file(args.plan, "PLAN", _PLAN_FIX)
    if missing is not None:
        return missing

    def body() -> int:
        from tuneplan.base.fileio import write_text_atomic
        from tuneplan.executor.export import export_plan

        exported = export_plan(args.plan, args.to)
        text = exported.render(Path(args.plan).name)
        if args.output:
            write_text_atomic(args.output, text)
            print(f"wrote {args.output} ({args.to}); launch: {exported.launch.replace('FILE', args.output)}")
        else:
            sys.stdout.write(text)
        for note in exported.notes:
            err(f"not expressible in {args.to}: {note}")
        return EXIT_OK

    return guarded(body, failure="export")


# --------------------------------------------------------------------------------------------
# merge


def cmd_merge(args: argparse.Namespace) -> int:
    missing = no_file(
        args.run_dir, "RUN_DIR", "give a run directory written by `tuneplan run`", directory=True
    )
    if missing is not None:
        return missing

    target = args.out if args.out is not None else str(Path(args.run_dir) / "merged")
    refused = check_out_dir(target, "--out", args.force)
    if refused is not None:
        return refused

    def body() -> int:
        from tuneplan.executor.merge import merge_run

        out = merge_run(args.run_dir, target, trust_remote_code=args.trust_remote_code)
        print(f"merged model written to {out}")
        return EXIT_OK

    return guarded(body, failure="merge")
