"""Commands that run a plan's task several ways and judge the result: ``tuneplan compare`` (full,
LoRA and QLoRA side by side) and ``tuneplan sweep`` (learning rates, ranks, targets, methods).

Exit codes: 0 every variant succeeded; 1 any failed or was skipped; 2 bad input; 130 interrupted.
Only argparse and the standard library load with this module.
"""

from __future__ import annotations

import argparse
import json
import sys

from .options import add_run_options, trust_kwargs
from .output import console, err, guarded, no_file

_PLAN_FIX = "give the plan.json written by `tuneplan advise`"


def add_compare(subparsers: "argparse._SubParsersAction") -> None:
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
    add_run_options(p, output_help="where variant plans and run directories go (default: runs/<compare id>)")
    p.add_argument(
        "--methods",
        default="full,lora,qlora",
        metavar="LIST",
        help="comma-separated methods to run (default: full,lora,qlora)",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument(
        "--format",
        choices=("table", "json", "markdown"),
        default=None,
        help="output: table (default), json (same as --json), or markdown for a pull-request comment",
    )
    p.set_defaults(func=cmd_compare)


def add_sweep(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a plan over learning rates, ranks, targets or methods and write the tuned plan",
        description="Re-advise the plan's inputs with each combination of the swept values pinned, "
        "run every variant on the same data, seed and step budget, report eval loss (learning), "
        "probe loss (forgetting), peak memory and speed per trial, pick the lowest eval loss within "
        "the forgetting tolerance, and write a tuned plan whose decision cites the trials' run ids. "
        "Trials land in DuckDB (comparisons / sweep_trials); sweep.png draws eval loss vs each swept "
        "axis. `tuneplan compare` is this sweep over --methods alone. Exit 0 all succeeded, 1 any failed or was skipped, 2 bad input, "
        "130 interrupted.",
    )
    add_run_options(
        p, output_help="where variant plans, runs, sweep.json and sweep.png go (default: runs/<sweep id>)"
    )
    p.add_argument(
        "--lr",
        metavar="band|A,B,C",
        help="learning rates: 'band' (the plan's LR/3, LR, 3·LR) or a comma list",
    )
    p.add_argument("--rank", metavar="R1,R2", help="LoRA ranks, e.g. 8,16,64")
    p.add_argument(
        "--targets",
        metavar="SET1,SET2",
        help="target sets, e.g. attention,all-linear (join names with +: q_proj+v_proj)",
    )
    p.add_argument("--methods", metavar="LIST", help="methods, e.g. full,lora (compare is this axis alone)")
    p.add_argument(
        "--write", metavar="PLAN_JSON", help="write the tuned plan here (default: <output>/plan-tuned.json)"
    )
    p.add_argument("--json", action="store_true", help="print the sweep as JSON")
    p.set_defaults(func=cmd_sweep)


def cmd_compare(args: argparse.Namespace) -> int:
    missing = no_file(args.plan, "PLAN", _PLAN_FIX)
    if missing is not None:
        return missing
    from tuneplan.executor import compare

    holder: dict = {}

    def body() -> int:
        holder["cmp"] = compare.run_comparison(
            args.plan,
            compare.parse_methods(args.methods),
            max_steps=args.max_steps,
            db=args.db,
            output_dir=args.output,
            data=args.data,
            model_path=args.model_path,
            **trust_kwargs(args),
        )
        return 0

    code = guarded(body)
    if code:
        return code
    cmp = holder["cmp"]
    if getattr(args, "format", None) == "markdown":
        from tuneplan.executor.ledger.markdown import compare_markdown

        sys.stdout.write(compare_markdown(cmp))
    elif args.json or getattr(args, "format", None) == "json":
        print(json.dumps(compare._as_dict(cmp), indent=2, default=str))
    else:
        compare.print_comparison(cmp, console())
    if cmp.interrupted:
        err("interrupted: the runs so far are recorded in the comparison")
    return compare.exit_code(cmp)


def cmd_sweep(args: argparse.Namespace) -> int:
    missing = no_file(args.plan, "PLAN", _PLAN_FIX)
    if missing is not None:
        return missing
    from tuneplan.executor import sweep

    holder: dict = {}

    def body() -> int:
        grid: dict = {}
        if args.methods:
            grid["method"] = sweep.parse_methods(args.methods)
        if args.lr:
            grid["learning_rate"] = (
                ["band"] if args.lr.strip().lower() == "band" else sweep.parse_lr(args.lr, None)
            )  # type: ignore[arg-type]
        if args.rank:
            grid["lora_rank"] = sweep.parse_ranks(args.rank)
        if args.targets:
            grid["target_modules"] = sweep.parse_targets(args.targets)
        holder["sweep"] = sweep.run_sweep(
            args.plan,
            grid,
            max_steps=args.max_steps,
            db=args.db,
            output_dir=args.output,
            data=args.data,
            model_path=args.model_path,
            write_plan=args.write,
            **trust_kwargs(args),
        )
        return 0

    code = guarded(body)
    if code:
        return code
    sw = holder["sweep"]
    if args.json:
        print(json.dumps(sweep.as_dict(sw), indent=2, default=str))
    else:
        sweep.print_sweep(sw, console())
    if sw.interrupted:
        err("interrupted: the trials so far are recorded in the sweep")
    return sweep.exit_code(sw)
