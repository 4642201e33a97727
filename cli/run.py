"""The executor's subcommands: ``tuneplan run``, ``tuneplan runs [ingest]``, ``tuneplan sql``,
``tuneplan merge``, and the ones that check the advice against runs: ``tuneplan compare``,
``tuneplan check``, ``tuneplan calibrate`` and ``tuneplan report`` (docs/checks.md).

Wiring: the root command (advisor/cli.py) calls :func:`register` with its subparsers object.
``register`` sets a ``func`` default on every subparser; the root then calls ``args.func(args)``,
which returns the process exit code (or calls :func:`dispatch`, which does exactly that).

Exit codes: 0 success; 1 the run or the store failed (locked database, training error);
2 bad input (an InputError, a refused or invalid SQL statement, a missing database for
``sql``); 130 interrupted.

Only argparse (and the standard library) is imported at module level so ``tuneplan --help`` stays
fast: torch, DuckDB and rich are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["register", "dispatch"]

GIB = 1024**3


# --------------------------------------------------------------------------------------------
# Parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


_DB_HELP = "run database (default: $TUNEPLAN_DB or ./.tuneplan/runs.duckdb)"


def _add_run_options(p: argparse.ArgumentParser, *, output_help: str, plan_optional: bool = False) -> None:
    """PLAN and the options shared by everything that executes a plan (run, compare)."""
    if plan_optional:
        p.add_argument("plan", metavar="PLAN", nargs="?", default=None,
                       help="plan.json written by `tuneplan advise` (with --resume: optional, the run's own)")
    else:
        p.add_argument("plan", metavar="PLAN", help="plan.json written by `tuneplan advise`")
    p.add_argument("--data", metavar="PATH", help="training data (JSONL, JSON, CSV or Parquet); "
                   "overrides plan.data.train_path")
    p.add_argument("--db", metavar="PATH", help=_DB_HELP)
    p.add_argument("--output", metavar="DIR", help=output_help)
    p.add_argument("--max-steps", type=_positive_int, metavar="N",
                   help="stop each run after N optimizer steps (smoke tests)")
    p.add_argument("--model-path", metavar="DIR", help="load the model from this local directory")
    _add_trust_option(p)


_TRUST_HELP = ("allow the model directory's own Python (modeling_*.py) to run; only this flag "
               "turns it on, never the plan file's trust_remote_code field (which records what "
               "was used); never in --dry-run")


def _add_trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true", help=_TRUST_HELP)


def _trust_kwargs(args: argparse.Namespace) -> dict:
    """``trust_remote_code=True`` for the runner only when the flag was given (the default is
    off everywhere, so the keyword is left out otherwise)."""
    return {"trust_remote_code": True} if getattr(args, "trust_remote_code", False) else {}


def _check_out_dir(value: Optional[str], flag: str, force: bool) -> Optional[int]:
    """Exit 2 (and the fix) when ``value`` is a file, or a non-empty directory without --force;
    None when writing there is fine."""
    if value is None:
        return None
    from tuneplan.base.errors import InputError

    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        _err(InputError.one(flag, f"{path} exists and is not a directory",
                            "give a new or empty directory").render())
        return 2
    if path.is_dir() and not force:
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as exc:
            _err(InputError.one(flag, f"cannot read {path}: {exc}",
                                "give a directory you can write to").render())
            return 2
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            _err(InputError.one(
                flag, f"{path} is not empty ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: "
                f"{shown}); writing there would overwrite files",
                f"give a new or empty directory, or pass --force to write into {path} anyway").render())
            return 2
    return None


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add the executor's subcommands (run, runs [ingest], sql, merge) to the root command's
    subparsers. Each subparser gets a ``func`` default: the root calls ``args.func(args)`` and
    exits with the int it returns."""
    # run ------------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "run",
        help="execute a plan.json and record what it measured",
        description="Train as plan.json says, measure peak memory, learning (in-domain eval "
        "loss before/after), forgetting (general-text probe loss before/after) and speed, and "
        "record the run in the run database. Exit 0 succeeded, 1 failed, 2 bad input, "
        "130 interrupted.",
    )
    _add_run_options(p, output_help="parent directory for the run directory", plan_optional=True)
    p.add_argument("--report-to", metavar="LIST",
                   help="also log metrics to experiment trackers: tensorboard, wandb, mlflow (comma "
                   "list; optional extras: pip install 'tuneplan[trackers]'); TensorBoard and MLflow "
                   "write under the run directory")
    p.add_argument("--resume", metavar="RUN_DIR|latest",
                   help="continue an interrupted run (same run id) from its newest checkpoint; "
                   "latest: the newest resumable run under --output (default ./runs)")
    p.add_argument("--num-processes", type=_positive_int, metavar="N", default=None,
                   help="processes to launch over all machines (default: as planned, "
                   "distributed.num_processes); more than 1 launches workers with torchrun (CPU, "
                   "gloo) or accelerate launch (GPUs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the launch command and the accelerate config, start nothing")
    p.add_argument("--num-machines", type=_positive_int, metavar="M", default=None,
                   help="machines in the job (default: as planned, distributed.num_nodes)")
    p.add_argument("--machine-rank", type=_non_negative_int, metavar="R", default=0,
                   help="this machine's rank, 0..M-1 (default 0)")
    p.add_argument("--main-process-ip", metavar="IP", help="address of machine rank 0")
    p.add_argument("--main-process-port", type=_positive_int, metavar="P",
                   help="rendezvous port on machine rank 0 (default: a free port; 29500 "
                   "when --main-process-ip is given)")
    p.set_defaults(func=_cmd_run)

    # export -----------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "export", help="write the plan as a TRL, Axolotl, LLaMA-Factory or torchtune config",
        description="Write plan.json in another trainer's own config format: method, LR and schedule, "
        "rank, alpha, dropout, targets, 4-bit quantization, precision, checkpointing, batch, sequence "
        "length, data and distributed settings. What the target cannot express is listed in the file's "
        "header and on stderr. Exit 0 written, 2 bad input.")
    p.add_argument("plan", metavar="PLAN", help="plan.json written by `tuneplan advise`")
    p.add_argument("--to", required=True, choices=("trl", "axolotl", "llamafactory", "torchtune"),
                   help="target trainer")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=_cmd_export)

    # runs [ingest] --------------------------------------------------------------------------
    p = subparsers.add_parser(
        "runs",
        help="list recorded runs: predicted vs measured memory, learning, forgetting, speed",
        description="List recorded runs, newest first. `tuneplan runs ingest PATH...` rebuilds "
        "database rows from run directories (result.json, metrics.jsonl).",
    )
    p.add_argument("--db", metavar="PATH", help=_DB_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--limit", type=_non_negative_int, metavar="N", help="show the N newest runs")
    p.set_defaults(func=_cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command", metavar="{ingest}")
    ing = runs_sub.add_parser(
        "ingest",
        help="rebuild database rows from run directories",
        description="Rebuild runs and metrics rows from run directories (result.json, "
        "metrics.jsonl, plan.json). PATH may be a run directory, its result.json, or a "
        "directory searched recursively.",
    )
    ing.add_argument("paths", metavar="PATH", nargs="+", help="run directory or parent directory")
    ing.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=_DB_HELP)
    ing.set_defaults(func=_cmd_ingest)

    # sql ------------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "sql",
        help="run a read-only SQL query against the run database",
        description="Run one read-only statement (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN, PRAGMA "
        "table_info) against the run database. Tables: runs, metrics, comparisons; views: "
        "run_predictions, run_learning, method_summary, run_memory_checks, comparison_runs, "
        "audit_qlora_vs_lora_memory, audit_lora_vs_full_forgetting, audit_lora_vs_full_learning, "
        "audit_memory_predictions, run_settings. The connection is sealed: read-only, no file "
        "outside the database and --read directories, no URL, no extension, configuration "
        "locked; the statement is checked with DuckDB's parser. Writes are refused (exit 2) and "
        "change nothing. `tuneplan sql --schema` lists every table and view with a line per "
        "column; docs/sql.md has worked queries.",
    )
    p.add_argument("query", metavar="QUERY", nargs="?", help='e.g. "SELECT * FROM method_summary"')
    p.add_argument("--schema", action="store_true",
                   help="list every table and view with a one-line description of each column "
                   "(with --format json: as JSON; markdown also accepted)")
    p.add_argument("--db", metavar="PATH", help=_DB_HELP)
    p.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table",
                   help="output format (default: table; markdown only with --schema); csv and "
                   "json stream row batches")
    p.add_argument("--read", metavar="DIR", action="append", default=None,
                   help="a directory queries may read files from, e.g. for "
                   "read_parquet('runs/*/run.parquet') pooling; repeatable (default: ./runs "
                   "when it exists). Nothing else on disk and no URL is reachable")
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("--limit", type=_non_negative_int, metavar="N", default=None,
                     help="return at most N rows (default: 1000; a note on stderr says when "
                     "rows were cut)")
    lim.add_argument("--no-limit", action="store_true",
                     help="return every row (use with --format csv/json, which stream)")
    p.set_defaults(func=_cmd_sql)

    # merge ----------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "merge",
        help="merge a run's LoRA adapter into full weights",
        description="Merge the adapter saved by a LoRA/QLoRA run into its base model and save "
        "the merged weights.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `tuneplan run`")
    p.add_argument("--out", metavar="DIR", help="where to write the merged model (default: "
                   "RUN_DIR/merged); a non-empty directory is refused unless --force")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out directory (its files may be overwritten)")
    _add_trust_option(p)
    p.set_defaults(func=_cmd_merge)

    # compare --------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "compare",
        help="run a plan's task as full, LoRA and QLoRA side by side and judge the advice",
        description="Re-advise the plan's inputs with each method pinned (each variant gets that "
        "method's advised settings), run every variant on the same data and step budget, record "
        "them as one comparison, print a side-by-side table and one sentence on whether the "
        "evidence supports the advisor's pick for the stated forgetting tolerance. A failed "
        "method does not stop the others. Exit 0 all succeeded, 1 any failed or was skipped, "
        "2 bad input, 130 interrupted.",
    )
    _add_run_options(p, output_help="where variant plans and run directories go "
                     "(default: runs/<compare id>)")
    p.add_argument("--methods", default="full,lora,qlora", metavar="LIST",
                   help="comma-separated methods to run (default: full,lora,qlora)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--format", choices=("table", "json", "markdown"), default=None,
                   help="output: table (default), json (same as --json), or markdown for a "
                   "pull-request comment")
    p.set_defaults(func=_cmd_compare)

    # sweep ----------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "sweep",
        help="run a plan over learning rates, ranks, targets or methods and write the tuned plan",
        description="Re-advise the plan's inputs with each combination of the swept values pinned, "
        "run every variant on the same data, seed and step budget, report eval loss (learning), "
        "probe loss (forgetting), peak memory and speed per trial, pick the lowest eval loss within "
        "the forgetting tolerance, and write a tuned plan whose decision cites the trials' run ids. "
        "Trials land in DuckDB (comparisons / sweep_trials); sweep.png draws eval loss vs learning "
        "rate (and vs rank). Exit 0 all succeeded, 1 any failed or was skipped, 2 bad input, "
        "130 interrupted.",
    )
    _add_run_options(p, output_help="where variant plans, runs, sweep.json and sweep.png go "
                     "(default: runs/<sweep id>)")
    p.add_argument("--lr", metavar="band|A,B,C",
                   help="learning rates: 'band' (the plan's LR/3, LR, 3·LR) or a comma list")
    p.add_argument("--rank", metavar="R1,R2", help="LoRA ranks, e.g. 8,16,64")
    p.add_argument("--targets", metavar="SET1,SET2",
                   help="target sets, e.g. attention,all-linear (join names with +: q_proj+v_proj)")
    p.add_argument("--methods", metavar="LIST", help="methods, e.g. full,lora (compare is this axis alone)")
    p.add_argument("--write", metavar="PLAN_JSON", help="write the tuned plan here "
                   "(default: <output>/plan-tuned.json)")
    p.add_argument("--json", action="store_true", help="print the sweep as JSON")
    p.set_defaults(func=_cmd_sweep)

    # check ----------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "check",
        help="did the advice hold? memory, learning and forgetting of every run, and rule audits",
        description="Judge every recorded run: memory error (signed), out-of-memory on a plan "
        "predicted to fit, under-prediction beyond 25%, forgetting beyond the tolerance's "
        "threshold, no learning. --rules adds the per-rule audit across comparisons (TP020, "
        "TP021, TP023, TP030). Exit 0 (with --strict: 1 when any verdict is broken); 2 when "
        "the database does not exist.",
    )
    p.add_argument("--db", metavar="PATH", help=_DB_HELP)
    p.add_argument("--json", action="store_true", help="print JSON: runs, summary (and rules)")
    p.add_argument("--format", choices=("table", "json", "markdown"), default=None,
                   help="output: table (default), json (same as --json), or markdown for a "
                   "pull-request comment")
    p.add_argument("--strict", action="store_true",
                   help="the CI gate: exit 1, with the reasons on stderr, on zero runs, any run "
                   "that did not succeed, a NaN/inf loss, any broken verdict, and with --rules a "
                   "broken or mixed audit (docs/checks.md)")
    p.add_argument("--run", metavar="ID", action="append", default=None,
                   help="judge only runs whose run_id starts with ID (repeatable)")
    p.add_argument("--plan", metavar="PLAN", action="append", default=None,
                   help="judge only runs of this plan: a plan.json file or its 16-hex plan_hash "
                   "(repeatable)")
    p.add_argument("--since", metavar="WHEN",
                   help="judge only runs started at or after WHEN (ISO date or time, UTC, e.g. "
                   "2025-01-31 or 2025-01-31T12:00)")
    p.add_argument("--rules", action="store_true",
                   help="also summarise which rules' promises held across runs")
    p.set_defaults(func=_cmd_check)

    # calibrate ------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "calibrate",
        help="fit memory-estimator correction factors from succeeded runs",
        description="Fit, per device kind and architecture family, a factor for the "
        "estimator's activation-like terms (activations, logits_and_loss) from measured peaks; "
        "write <db dir>/calibration.json for `tuneplan advise --calibrated`. Prints the mean "
        "absolute memory error before and after. Exit 0 written, 1 no usable runs, 2 no "
        "database.",
    )
    p.add_argument("--db", metavar="PATH", help=_DB_HELP)
    p.set_defaults(func=_cmd_calibrate)

    # report ---------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "report",
        help="write PNG figures and report.md from the run database",
        description="Predicted vs measured memory, learning vs forgetting per method, loss "
        "curves (PNG, matplotlib) and report.md with a summary table and the rule audit. Exit 0 "
        "written, 1 matplotlib missing or writing failed, 2 no database.",
    )
    p.add_argument("--db", metavar="PATH", help=_DB_HELP)
    p.add_argument("--out", metavar="DIR", required=True,
                   help="directory to write into; a non-empty one is refused unless --force")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out directory (report.md and the PNGs are "
                   "overwritten)")
    p.set_defaults(func=_cmd_report)


def dispatch(args: argparse.Namespace) -> int:
    """Run the handler a parsed command line selected (``args.func``) and return its exit
    code. Used by tests and by a root command that does not call ``args.func`` itself."""
    func = getattr(args, "func", None)
    if func is None:
        print("error: no command given; see `tuneplan --help`", file=sys.stderr)
        return 2
    return int(func(args) or 0)


# --------------------------------------------------------------------------------------------
# Helpers


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, width=None if is_tty else 200, soft_wrap=False,
                   highlight=False)


def _gib(value: Any) -> str:
    """Bytes as GiB: two decimals, three for small runs (under 0.1 GiB)."""
    if value is None:
        return "-"
    gib = value / GIB
    return f"{gib:.3f}" if 0 < gib < 0.1 else f"{gib:.2f}"


def _loss(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _before_after(before: Any, after: Any) -> str:
    if before is None and after is None:
        return "-"
    return f"{_loss(before)}→{_loss(after)}"


def _signed_pct(value: Any) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _db_label(db: str | None) -> str:
    from tuneplan.executor.store import default_db_path

    return str(Path(db).expanduser() if db else default_db_path())


def _no_file(path: str, where: str, fix: str, *, directory: bool = False) -> Optional[int]:
    """Exit code 2 (after saying so) when `path` is not an existing file (or directory)."""
    from tuneplan.base.errors import InputError

    ok = Path(path).is_dir() if directory else Path(path).is_file()
    if ok:
        return None
    _err(InputError.one(where, f"{path}: no such {'directory' if directory else 'file'}", fix).render())
    return 2


def _guarded(action: Callable[[], int], failure: str = "") -> int:
    """Run a command body: bad input exits 2, Ctrl-C 130, and (when `failure` names the command)
    any other exception 1 with its message; otherwise the body's own exit code."""
    from tuneplan.base.errors import InputError

    try:
        return action()
    except InputError as exc:
        _err(exc.render())
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # stdout's reader went away: tuneplan.advisor.cli.main ends quietly
        raise
    except Exception as exc:  # noqa: BLE001 - reported with its type; exit 1
        if not failure:
            raise
        _err(f"error: {failure} failed: {type(exc).__name__}: {exc}")
        return 1


# --------------------------------------------------------------------------------------------
# run


def _launch(args: argparse.Namespace) -> int:
    """Hand --num-processes > 1, several machines and --dry-run to tuneplan.executor.launch."""
    from tuneplan.executor.launch import launch

    code = _preflight(args, resolve_model=not args.dry_run)
    if code is not None:
        return code
    return _guarded(lambda: int(launch(args.plan, args) or 0))


def _preflight(args: argparse.Namespace, *, resolve_model: bool) -> Optional[int]:
    """The shared pre-flight (executor/preflight.py): None when the plan may go ahead, else the
    exit code after saying why (2 bad input, 3 infeasible)."""
    from tuneplan.base.errors import InputError
    from tuneplan.executor.preflight import Infeasible, preflight

    try:
        preflight(args.plan, data=getattr(args, "data", None), model_path=getattr(args, "model_path", None),
                  resolve_model=resolve_model)
    except InputError as exc:
        _err(exc.render())
        return 2
    except Infeasible as exc:
        _err(str(exc))
        return 3
    return None


def _print_summary(result: Any) -> None:
    from tuneplan.executor.memory_compare import from_result

    lfl = from_result(result)  # the framework overhead comes from <run_dir>/plan.json
    measured = lfl.measured_bytes
    print(f"run {result.run_id} {result.status}")
    print(f"  dir        {result.run_dir}")
    line = f"  peak       predicted {_gib(result.predicted_peak_bytes)} GiB, measured " \
           f"{_gib(measured)} GiB"
    if lfl.raw_error is not None:
        line += f" (prediction {_signed_pct(lfl.raw_error)})"
    if result.measured:
        line += f" [{result.measured.device_kind}]"
    print(line)
    if measured:
        line = (f"  tensors    predicted {_gib(lfl.predicted_comparable_bytes)} GiB, measured "
                f"{_gib(lfl.measured_comparable_bytes)} GiB (like-for-like error "
                f"{_signed_pct(lfl.error) or '-'}; prediction less {_gib(lfl.overhead_bytes)} GiB "
                f"framework overhead, peak less {_gib(lfl.runtime_bytes)} GiB runtime)")
        print(line)
    print(f"  eval loss  {_before_after(result.eval_loss_before, result.eval_loss_after)}")
    print(f"  probe loss "
          f"{_before_after(result.forgetting_loss_before, result.forgetting_loss_after)}")
    speed = "-" if result.tokens_per_second is None else f"{result.tokens_per_second:,.0f}"
    wall = "" if result.wall_seconds is None else f", {result.wall_seconds:.1f} s wall"
    print(f"  speed      {speed} tokens/s, {result.steps} steps, {result.tokens} tokens{wall}")
    for sub in result.substitutions:
        print(f"  substituted: {sub}")


def _planned_processes(plan: str) -> int:
    """distributed.num_processes of a plan file (1 when it cannot be read: the runner reports)."""
    try:
        value = json.loads(Path(plan).read_text(encoding="utf-8"))["distributed"]["num_processes"]
        return max(1, int(value))
    except Exception:  # noqa: BLE001 - the runner validates the plan properly
        return 1


def _cmd_run(args: argparse.Namespace) -> int:
    from tuneplan.base.errors import InputError

    if args.plan is None and not args.resume:
        _err(InputError.one("PLAN", "no plan given", "pass the plan.json written by `tuneplan advise`, "
                            "or --resume RUN_DIR|latest").render())
        return 2
    if args.resume:
        from tuneplan.executor.resume import resolve_resume

        try:
            prior = resolve_resume(args.resume, args.plan, args.output)
        except InputError as exc:
            _err(exc.render())
            return 2
        args.plan = args.plan or str(prior.run_dir / "plan.json")
        args.resume = str(prior.run_dir)
        if args.num_processes is None:  # as the checkpoint was written
            args.num_processes = int(prior.manifest.get("num_processes") or prior.result.num_processes or 1)
    missing = _no_file(args.plan, "PLAN", "give the plan.json written by `tuneplan advise`")
    if missing is not None:
        return missing
    if args.num_processes is None:
        args.num_processes = _planned_processes(args.plan)
    if args.dry_run and args.num_processes == 1 and (args.num_machines or 1) == 1:
        from tuneplan.executor.launch import dry_run_in_process

        code = _preflight(args, resolve_model=False)
        if code is not None:
            return code

        return _guarded(lambda: dry_run_in_process(args))
    if args.num_processes > 1 or args.dry_run or (args.num_machines or 1) > 1:
        return _launch(args)
    from tuneplan.executor.runner import run_plan

    from tuneplan.executor.preflight import Infeasible
    from tuneplan.executor.signals import RecordingFailed, RunInterrupted, pause

    try:
        result = run_plan(args.plan, data=args.data, db=args.db, output_dir=args.output,
                          max_steps=args.max_steps, model_path=args.model_path, resume=args.resume,
                          report_to=args.report_to,
                          **_trust_kwargs(args))
    except InputError as exc:
        _err(exc.render())
        return 2
    except Infeasible as exc:
        _err(str(exc))
        return 3
    except RunInterrupted as exc:
        _err(f"interrupted ({exc}): {exc.recorded.describe()}")
        return 130
    except KeyboardInterrupt:  # pragma: no cover - run_plan wraps every interrupt
        _err("interrupted")
        return 130
    except RecordingFailed as exc:
        _err(f"error: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - the runner recorded the failed run already
        recorded = getattr(exc, "recorded", None)
        _err(f"error: run failed: {type(exc).__name__}: {exc}")
        if recorded is not None:
            _err(f"  {recorded.describe()}")
        return 1
    try:
        pause("returned")
        _print_summary(result)
    except KeyboardInterrupt:
        _err(f"interrupted after the run ended: run {result.run_id} is recorded as {result.status} "
             f"in {result.run_dir}/result.json and the database")
        return 130
    return 0 if result.status == "succeeded" else 1


# --------------------------------------------------------------------------------------------
# export


def _cmd_export(args: argparse.Namespace) -> int:
    missing = _no_file(args.plan, "PLAN", "give the plan.json written by `tuneplan advise`")
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
            _err(f"not expressible in {args.to}: {note}")
        return 0

    return _guarded(body, failure="export")


# --------------------------------------------------------------------------------------------
# runs


def _cmd_runs(args: argparse.Namespace) -> int:
    from tuneplan.executor.store import LIST_KEYS, NoDatabase, StoreError, list_runs

    try:
        rows = list_runs(args.db, limit=args.limit)
    except NoDatabase as exc:
        _err(str(exc))
        rows = []
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps([{k: _jsonable(r.get(k)) for k in LIST_KEYS} for r in rows], indent=2))
        return 0
    _print_runs_table(rows, args.db)
    return 0


def _resumable(rows: list[dict]) -> list[tuple[dict, int]]:
    """(row, checkpoint step) of the runs `tuneplan run --resume` can continue."""
    from tuneplan.executor.checkpoint import complete_checkpoints

    out = []
    for r in rows:
        if r.get("status") in ("interrupted", "failed") and r.get("run_dir"):
            found = complete_checkpoints(Path(r["run_dir"]))
            if found:
                out.append((r, found[-1][0]))
    return out


def _print_runs_table(rows: list[dict], db: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"runs in {_db_label(db)}"), title_justify="left")
    for name, justify in [("id", "left"), ("status", "left"), ("method", "left"),
                          ("model", "left"), ("procs", "right"),
                          ("peak GiB pred/meas", "right"), ("err", "right"),
                          ("err like-for-like", "right"),
                          ("eval before→after", "right"), ("probe before→after", "right"),
                          ("tok/s", "right"), ("wall s", "right")]:
        table.add_column(name, justify=justify, no_wrap=name != "model")
    styles = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
    for r in rows:
        status = r["status"] or "-"
        table.add_row(
            escape(r["run_id"]),
            f"[{styles[status]}]{status}[/]" if status in styles else escape(status),
            escape(r["method"] or "-"),
            escape(r["model"] or "-"),
            str(r["num_processes"] or 1),
            f"{_gib(r['predicted_peak_bytes'])} / {_gib(r['measured_peak_bytes'])}",
            _signed_pct(r["memory_error"]) or "-",
            _signed_pct(_like_for_like_error(r)) or "-",
            _before_after(r["eval_loss_before"], r["eval_loss_after"]),
            _before_after(r["forgetting_loss_before"], r["forgetting_loss_after"]),
            "-" if r["tokens_per_second"] is None else f"{r['tokens_per_second']:,.0f}",
            "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}",
        )
    console = _console()
    console.print(table)
    resumable = _resumable(rows)
    if resumable:
        console.print("resumable (interrupted or failed, with a checkpoint):")
        for r, step in resumable:
            console.print(f"  {escape(r['run_id'])} at step {step}: tuneplan run --resume {escape(r['run_dir'])}",
                          soft_wrap=True)
    if rows:
        console.print("err = (predicted - measured) / measured, whole peaks; err like-for-like = "
                      "the same on tensor bytes (prediction less framework overhead, measurement "
                      "less runtime); eval = in-domain loss (lower is learning); probe = "
                      "general-text loss (higher is forgetting)")


def _like_for_like_error(row: dict) -> Any:
    """A `tuneplan runs` row's like-for-like memory error (executor/memory_compare.py)."""
    from tuneplan.executor.memory_compare import like_for_like

    return like_for_like(row.get("predicted_peak_bytes"), row.get("predicted_overhead_bytes"),
                         row.get("measured_peak_bytes"), row.get("runtime_bytes")).error


def _cmd_ingest(args: argparse.Namespace) -> int:
    from tuneplan.base.errors import InputError
    from tuneplan.executor.store import StoreError, ingest

    notes: list[str] = []
    try:
        ids = ingest(args.db, args.paths, notes=notes)
    except InputError as exc:
        _err(exc.render())
        return 2
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    print(f"ingested {len(ids)} run{'s' if len(ids) != 1 else ''} into {_db_label(args.db)}")
    for run_id in ids:
        print(f"  {run_id}")
    for note in notes:
        print(f"  note: {note}")
    return 0


# --------------------------------------------------------------------------------------------
# sql


def _cmd_sql_schema(args: argparse.Namespace) -> int:
    """--schema: the tables and views as this tuneplan creates them (fresh in-memory database)."""
    import duckdb

    from tuneplan.executor import store
    from tuneplan.executor.sqldocs import render_schema

    con = duckdb.connect(":memory:")
    try:
        store.migrate(con)
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                                 "WHERE table_schema = 'main'").fetchall())
        cols = con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() "
                           "WHERE schema_name = 'main' AND NOT internal "
                           "ORDER BY table_name, column_index").fetchall()
    finally:
        con.close()
    order = sorted(kinds, key=lambda t: (kinds[t] != "BASE TABLE", t))
    rows = [(t, "table" if kinds[t] == "BASE TABLE" else "view", c, d)
            for t in order for (tt, c, d) in cols if tt == t]
    fmt = {"json": "json", "markdown": "markdown"}.get(args.format, "text")
    sys.stdout.write(render_schema(rows, fmt))
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    if args.schema:
        return _cmd_sql_schema(args)
    if not args.query:
        from tuneplan.base.errors import InputError

        _err(InputError.one("QUERY", "no query given", 'pass a statement, e.g. "SELECT * FROM run_settings", '
                            "or --schema to list the tables and views").render())
        return 2
    if args.format == "markdown":
        from tuneplan.base.errors import InputError

        _err(InputError.one("--format", "markdown is for --schema", "use table, csv or json").render())
        return 2
    from tuneplan.executor import sqlsafe
    from tuneplan.executor.store import NoDatabase, QueryError, StoreError

    if args.no_limit:
        limit = None
    else:
        limit = sqlsafe.DEFAULT_ROW_LIMIT if args.limit is None else args.limit
    read_paths = args.read if args.read is not None else sqlsafe.default_read_paths()
    try:
        with sqlsafe.stream(args.query, args.db, read_paths=read_paths, limit=limit) as result:
            shown = _print_sql_result(result, args.format)
    except (QueryError, NoDatabase) as exc:
        _err(f"error: {exc}")
        return 2
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    except BrokenPipeError:  # `tuneplan sql ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    if result.truncated:
        _err(f"note: showing the first {shown} row{'s' if shown != 1 else ''}; more exist. "
             f"Use --limit N or --no-limit (with --format csv/json, which stream).")
    return 0


def _json_typed_columns(result: Any) -> set[int]:
    """Indexes of the result's JSON-typed columns (plan_json, result_json, versions, json_extract
    results): DuckDB hands them over as text; --format json nests them as JSON instead."""
    cursor = getattr(result, "_cursor", None)
    description = getattr(cursor, "description", None) or []
    return {i for i, d in enumerate(description) if str(d[1]).upper() == "JSON"}


def _json_value(value: Any) -> Any:
    """A JSON column's text as JSON (the text itself if it does not parse)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return _jsonable(value)


def _print_sql_result(result: Any, fmt: str) -> int:
    """Write a sqlsafe.QueryResult to stdout; csv/json one batch at a time. Returns rows shown."""
    columns = result.columns
    out = sys.stdout
    if fmt == "json":
        json_cols = _json_typed_columns(result)
        out.write("[")
        first = True
        for batch in result.batches:
            for row in batch:
                item = json.dumps({c: _json_value(v) if i in json_cols else _jsonable(v)
                                   for i, (c, v) in enumerate(zip(columns, row))}, indent=2)
                out.write(("\n" if first else ",\n") + "  " + item.replace("\n", "\n  "))
                first = False
            out.flush()
        out.write("]\n" if first else "\n]\n")
        return result.rows_returned
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for batch in result.batches:
            writer.writerows([_csv_cell(v) for v in row] for row in batch)
            out.flush()
        return result.rows_returned
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for c in columns:
        table.add_column(escape(c), overflow="fold")
    for batch in result.batches:
        for row in batch:
            table.add_row(*("" if v is None else escape(str(_jsonable(v))) for v in row))
    console = _console()
    console.print(table)
    n = result.rows_returned
    console.print(f"{n} row{'s' if n != 1 else ''}")
    return n


def _csv_cell(value: Any) -> Any:
    value = _jsonable(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


# --------------------------------------------------------------------------------------------
# merge


def _cmd_merge(args: argparse.Namespace) -> int:
    missing = _no_file(args.run_dir, "RUN_DIR", "give a run directory written by `tuneplan run`",
                       directory=True)
    if missing is not None:
        return missing

    target = args.out if args.out is not None else str(Path(args.run_dir) / "merged")
    refused = _check_out_dir(target, "--out", args.force)
    if refused is not None:
        return refused

    def body() -> int:
        from tuneplan.executor.merge import merge_run

        out = merge_run(args.run_dir, target, trust_remote_code=args.trust_remote_code)
        print(f"merged model written to {out}")
        return 0

    return _guarded(body, failure="merge")


# --------------------------------------------------------------------------------------------
# compare, check, calibrate, report


def _cmd_compare(args: argparse.Namespace) -> int:
    missing = _no_file(args.plan, "PLAN", "give the plan.json written by `tuneplan advise`")
    if missing is not None:
        return missing
    from tuneplan.executor import compare

    holder: dict = {}

    def body() -> int:
        holder["cmp"] = compare.run_comparison(
            args.plan, compare.parse_methods(args.methods), max_steps=args.max_steps, db=args.db,
            output_dir=args.output, data=args.data, model_path=args.model_path,
            **_trust_kwargs(args))
        return 0

    code = _guarded(body)
    if code:
        return code
    cmp = holder["cmp"]
    if getattr(args, "format", None) == "markdown":
        from tuneplan.executor.markdown import compare_markdown

        sys.stdout.write(compare_markdown(cmp))
    elif args.json or getattr(args, "format", None) == "json":
        print(json.dumps(compare._as_dict(cmp), indent=2, default=str))
    else:
        compare.print_comparison(cmp, _console())
    if cmp.interrupted:
        _err("interrupted: the runs so far are recorded in the comparison")
    return compare.exit_code(cmp)


def _cmd_sweep(args: argparse.Namespace) -> int:
    missing = _no_file(args.plan, "PLAN", "give the plan.json written by `tuneplan advise`")
    if missing is not None:
        return missing
    from tuneplan.executor import compare, sweep

    holder: dict = {}

    def body() -> int:
        grid: dict = {}
        if args.methods:
            grid["method"] = compare.parse_methods(args.methods)
        if args.lr:
            grid["learning_rate"] = ["band"] if args.lr.strip().lower() == "band" else \
                sweep.parse_lr(args.lr, None)  # type: ignore[arg-type]
        if args.rank:
            grid["lora_rank"] = sweep.parse_ranks(args.rank)
        if args.targets:
            grid["target_modules"] = sweep.parse_targets(args.targets)
        holder["sweep"] = sweep.run_sweep(
            args.plan, grid, max_steps=args.max_steps, db=args.db, output_dir=args.output,
            data=args.data, model_path=args.model_path, write_plan=args.write)
        return 0

    code = _guarded(body)
    if code:
        return code
    sw = holder["sweep"]
    if args.json:
        print(json.dumps(sweep.as_dict(sw), indent=2, default=str))
    else:
        sweep.print_sweep(sw, _console())
    if sw.interrupted:
        _err("interrupted: the trials so far are recorded in the sweep")
    return sweep.exit_code(sw)


def _cmd_check(args: argparse.Namespace) -> int:
    from tuneplan.executor import check
    from tuneplan.executor.store import NoDatabase, StoreError

    filters = _check_filters(args)
    if isinstance(filters, int):
        return filters
    try:
        result = check.check_runs(args.db, **filters)
        if args.rules:
            result["rules"] = check.audit_rules(args.db)
    except NoDatabase as exc:
        _err(f"error: {exc}")
        return 2
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    gate = check.gate(result) if args.strict else []
    if getattr(args, "format", None) == "markdown":
        from tuneplan.executor.markdown import check_markdown

        sys.stdout.write(check_markdown(result, _db_label(args.db)))
    elif args.json or getattr(args, "format", None) == "json":
        print(check.to_json(result))
    else:
        _print_check(result, args.db)
    if gate:
        _err(f"check --strict: FAILED ({len(gate)} reason{'s' if len(gate) != 1 else ''}):")
        for reason in gate:
            _err(f"  - {reason}")
        return 1
    return 0


def _check_filters(args: argparse.Namespace) -> "dict | int":
    """check's --run/--plan/--since as check_runs keywords, or exit 2 for a bad value."""
    from tuneplan.base.errors import InputError, Problem

    problems = []
    hashes = []
    for value in args.plan or []:
        path = Path(value).expanduser()
        if path.is_file():
            try:
                from tuneplan.schemas import load_plan_dict

                plan = load_plan_dict(json.loads(path.read_text(encoding="utf-8")))
            except Exception as exc:  # noqa: BLE001 - any unreadable plan is bad input
                problems.append(Problem("--plan", f"cannot read plan {path}: {exc}",
                                        "give a plan.json written by `tuneplan advise`"))
                continue
            from tuneplan.base.planio import plan_hash

            hashes.append(plan_hash(plan))
        elif len(value) == 16 and all(c in "0123456789abcdef" for c in value.lower()):
            hashes.append(value.lower())
        else:
            problems.append(Problem("--plan", f"{value!r} is neither a plan file nor a plan_hash",
                                    "give a plan.json path or the 16-hex plan_hash `tuneplan "
                                    "runs --json` shows"))
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            problems.append(Problem("--since", f"{args.since!r} is not an ISO date or time",
                                    "e.g. --since 2025-01-31 or --since 2025-01-31T12:00"))
        else:
            if since.tzinfo is not None:
                since = since.astimezone(timezone.utc).replace(tzinfo=None)
    if problems:
        _err(InputError(problems).render())
        return 2
    return {"run_ids": args.run, "plan_hashes": hashes or None,
            "since": since.isoformat(sep=" ") if since else None}


def _print_check(result: dict, db: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(title=escape(f"check: runs in {_db_label(db)}"), title_justify="left")
    for name in ("run", "method", "status", "mem err", "mem err (like-for-like)", "learned",
                 "forgetting", "verdict", "reasons"):
        table.add_column(name, no_wrap=name != "reasons", overflow="fold")
    for r in result["runs"]:
        verdict = "[green]held[/]" if r["verdict"] == "held" else "[red]broken[/]"
        forgetting = "-" if r["forgetting"] is None else (
            f"{r['forgetting']:+.4f}" + ("" if r["forgetting_within_tolerance"] is None else
                                         (" ok" if r["forgetting_within_tolerance"] else " over")))
        table.add_row(
            escape(r["run_id"]), escape(r["method"] or "-"), escape(r["status"]),
            _signed_pct(r["memory_error"]) or "-", _signed_pct(r["memory_error_comparable"]) or "-",
            "-" if r["learned"] is None else ("yes" if r["learned"] else "no"), forgetting, verdict,
            escape("; ".join(r["reasons"] + r["notes"])),
        )
    console.print(table)
    s = result["summary"]
    console.print(f"{s['runs']} runs: {s['held']} held, {s['broken']} broken "
                  f"(out of memory {s['out_of_memory']}, under-predicted {s['memory_under_predicted']}, "
                  f"did not learn {s['did_not_learn']}, forgot beyond tolerance "
                  f"{s['forgot_beyond_tolerance']})")
    for rule in result.get("rules", []):
        console.print(escape(f"{rule['rule']} {rule['status']:<8} {rule['held']}/{rule['tested']} held "
                             f"- {rule['promise']}" + (f" ({rule['note']})" if rule["note"] else "")))
        for line in rule["evidence"]:
            console.print(escape(f"    {line}"))


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from tuneplan.executor import calibrate
    from tuneplan.executor.store import NoDatabase, StoreError

    try:
        fitted = calibrate.fit(args.db)
    except NoDatabase as exc:
        _err(f"error: {exc}")
        return 2
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    for run_id, why in fitted.skipped:
        _err(f"skipped {run_id}: {why}")
    if not fitted.keys:
        _err("error: no succeeded run with a measured peak and a plan to calibrate from "
             "(fix: run plans with `tuneplan run`, then calibrate); nothing written")
        return 1
    path = calibrate.write(args.db, fitted)
    for key, k in fitted.keys.items():
        factors = ", ".join(f"{t} x{v:g}" for t, v in k.factors.items())
        print(f"{key}: {factors} from {len(k.run_ids)} run{'s' if len(k.run_ids) != 1 else ''}; "
              f"mean |memory error| {k.mean_abs_error_before:.1%} -> {k.mean_abs_error_after:.1%}")
    print(f"mean absolute memory error (like-for-like, {sum(len(k.run_ids) for k in fitted.keys.values())} "
          f"runs): before {fitted.mean_abs_error_before:.1%}, after {fitted.mean_abs_error_after:.1%}")
    print(f"wrote {path}; use it with `tuneplan advise ... --calibrated --db {_db_label(args.db)}`")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tuneplan.executor.store import NoDatabase, StoreError

    refused = _check_out_dir(args.out, "--out", args.force)
    if refused is not None:
        return refused

    try:
        from tuneplan.executor.report import write_report
        paths = write_report(args.db, args.out)
    except ModuleNotFoundError as exc:
        _err(f"error: `tuneplan report` needs {exc.name!r} (fix: pip install matplotlib)")
        return 1
    except NoDatabase as exc:
        _err(f"error: {exc}")
        return 2
    except (StoreError, OSError) as exc:
        _err(f"error: {exc}")
        return 1
    for p in paths:
        print(f"wrote {p}")
    return 0
