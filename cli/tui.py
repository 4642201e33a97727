"""`tuneplan tui`: the interactive planner. Only argparse is imported here; Textual loads on use."""

from __future__ import annotations

import argparse

from .options import DB_HELP


def add_tui(subparsers: "argparse._SubParsersAction") -> None:
    """Add the `tui` subcommand to the root command's subparsers (func returns the exit code)."""
    p = subparsers.add_parser(
        "tui",
        help="answer questions in a terminal UI, watch the plan update live, save and run it",
        description="Interactive planner: hardware, model and task questions with a live "
        "recommendation; ctrl+s saves the plan, ctrl+r runs it, the Runs tab lists recorded runs.",
    )
    p.add_argument(
        "--out",
        default="plan.json",
        metavar="PLAN_JSON",
        help="where ctrl+s writes the plan (default: plan.json)",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    """Run the app until the user quits; 0 on a normal exit."""
    from tuneplan.tui.app import TunePlanApp

    app = TunePlanApp(out=args.out, db=args.db)
    app.run()
    return int(app.return_code or 0)
