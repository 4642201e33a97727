"""`tuneplan tui`: the interactive planner. Only argparse is imported here; Textual loads on use."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add the `tui` subcommand to the root command's subparsers (func returns the exit code)."""
    p = subparsers.add_parser(
        "tui",
        help="answer questions in a terminal UI, watch the plan update live, save and run it",
        description="Interactive planner: hardware, model and task questions with a live "
        "recommendation; ctrl+s saves the plan, ctrl+r runs it, the Runs tab lists recorded runs.",
    )
    p.add_argument("--out", default="plan.json", metavar="PLAN_JSON",
                   help="where ctrl+s writes the plan (default: plan.json)")
    p.add_argument("--db", metavar="PATH",
                   help="run database (default: $TUNEPLAN_DB or ./.tuneplan/runs.duckdb)")
    p.set_defaults(func=_cmd_tui)


def _cmd_tui(args: argparse.Namespace) -> int:
    """Run the app until the user quits; 0 on a normal exit."""
    from .app import TunePlanApp

    app = TunePlanApp(out=args.out, db=args.db)
    app.run()
    return int(app.return_code or 0)
