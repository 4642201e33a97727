"""Argument types and option sets several commands share (argparse only, nothing else)."""

from __future__ import annotations

import argparse

DB_HELP = "run database (default: $TUNEPLAN_DB or ./.tuneplan/runs.duckdb)"

TRUST_HELP = (
    "allow the model directory's own Python (modeling_*.py) to run; only this flag "
    "turns it on, never the plan file's trust_remote_code field (which records what "
    "was used); never in --dry-run"
)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_run_options(p: argparse.ArgumentParser, *, output_help: str, plan_optional: bool = False) -> None:
    """PLAN and the options shared by everything that executes a plan (run, compare, sweep)."""
    if plan_optional:
        p.add_argument(
            "plan",
            metavar="PLAN",
            nargs="?",
            default=None,
            help="plan.json written by `tuneplan advise` (with --resume: optional, the run's own)",
        )
    else:
        p.add_argument("plan", metavar="PLAN", help="plan.json written by `tuneplan advise`")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="training data (JSONL, JSON, CSV or Parquet); overrides plan.data.train_path",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.add_argument("--output", metavar="DIR", help=output_help)
    p.add_argument(
        "--max-steps",
        type=positive_int,
        metavar="N",
        help="stop each run after N optimizer steps (smoke tests)",
    )
    p.add_argument("--model-path", metavar="DIR", help="load the model from this local directory")
    add_trust_option(p)


def add_trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)


def trust_kwargs(args: argparse.Namespace) -> dict:
    """``trust_remote_code=True`` for the runner only when the flag was given (the default is
    off everywhere, so the keyword is left out otherwise)."""
    return {"trust_remote_code": True} if getattr(args, "trust_remote_code", False) else {}
