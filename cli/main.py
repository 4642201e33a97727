"""The `tuneplan` root command: the parser of every subcommand, dispatch, and exit-code handling.

Each command group lives in its own module (advise, reference, run, runs, experiments, measure,
checks, tui); those modules import only argparse and the standard library at load time and load the
advisor, the executor or the TUI inside their handlers, so `tuneplan advise` never imports torch,
DuckDB, rich or Textual it does not use. The order below is the order of `tuneplan --help`.

Exit codes (tuneplan.base.errors): 0 ok; 1 failed; 2 bad input; 3 infeasible; 130 interrupted;
a reader of stdout that went away (`tuneplan runs --json | head`) ends quietly with 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_FAILED

from . import advise, checks, experiments, measure, reference, run, runs, tui
from .output import EXIT_INTERRUPTED

# The subcommands in `tuneplan --help` order, each added by its group's module.
COMMANDS: dict[str, Callable[["argparse._SubParsersAction"], None]] = {
    "advise": advise.add_advise,
    "validate": advise.add_validate,
    "schema": reference.add_schema,
    "explain": reference.add_explain,
    "rules": reference.add_rules,
    "models": reference.add_models,
    "gpus": reference.add_gpus,
    "run": run.add_run,
    "export": run.add_export,
    "runs": runs.add_runs,
    "sql": runs.add_sql,
    "merge": run.add_merge,
    "compare": experiments.add_compare,
    "sweep": experiments.add_sweep,
    "measure": measure.add_measure,
    "check": checks.add_check,
    "calibrate": checks.add_calibrate,
    "report": checks.add_report,
    "tui": tui.add_tui,
    "completion": reference.add_completion,
}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with the flag named and a hint (argparse already exits 2)."""

    def error(self, message: str):  # pragma: no cover - exercised through subprocess tests
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n(see `{self.prog} --help`)\n")


class _Version(argparse._VersionAction):
    """`--version`: the installed version, looked up only when asked (importlib.metadata)."""

    def __call__(self, parser, namespace, values, option_string=None):
        self.version = f"tuneplan {package_version()}"
        super().__call__(parser, namespace, values, option_string)


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The root parser with every subcommand, or with the one named ``only``.

    A command line that starts with a command name is parsed by that command's parser alone
    (what it prints, errors included, is its own), so building the other seventeen is skipped;
    help, --version, no command or an unknown one get the full parser.
    """
    p = _Parser(prog="tuneplan", description="Plan, run and check LLM fine-tuning: full, LoRA or QLoRA.")
    p.add_argument("--version", action=_Version, help="print tuneplan's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add in COMMANDS.items():
        if only is None or name == only:
            add(sub)
    return p


def _named_command(argv: list[str]) -> Optional[str]:
    """The command a command line starts with, when it starts with one."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def package_version() -> str:
    """The installed distribution's version (importlib.metadata, stdlib), or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tuneplan")
    except PackageNotFoundError:
        return "unknown"


def dispatch(args: argparse.Namespace) -> int:
    """Run the handler a parsed command line selected (``args.func``) and return its exit code."""
    func = getattr(args, "func", None)
    if func is None:
        print("error: no command given; see `tuneplan --help`", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(func(args) or 0)


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (`tuneplan runs --json | head`): stop quietly.

    As the Python docs advise for SIGPIPE, point stdout at devnull so the interpreter's final
    flush does not raise again, and exit 1 like other tools cut off mid-write (141 would need the
    signal itself).
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_FAILED


def main(argv: Optional[list[str]] = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(only=_named_command(argv))
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()
            return code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
