"""What every command prints the same way: errors on stderr, the rich console, number formats,
JSON-safe values, and the guard that turns a command body's exceptions into exit codes.

Standard library only at import time; rich, the run store and the errors module load on use, so
importing this module costs nothing on the `tuneplan advise` path.
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Optional

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_FAILED

GIB = 1024**3
EXIT_INTERRUPTED = 130
"""Ctrl-C or SIGTERM: the shell's 128 + SIGINT."""


def err(text: str) -> None:
    """One message on stderr."""
    print(text, file=sys.stderr)


def input_error(where: str, message: str, fix: str = "") -> None:
    """Print a one-problem InputError (the flag or field named, a fix) on stderr."""
    from tuneplan.base.errors import InputError

    err(InputError.one(where, message, fix).render())


def console(stderr: bool = False):
    """A rich Console on stdout (or stderr): 200 columns and no highlighting when not a terminal,
    so piped and captured output is stable."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, width=None if is_tty else 200, soft_wrap=False, highlight=False)


COLUMN_CAP = 40
"""Widest a table column gets (longer cells end in an ellipsis; vertical shows them)."""


def fits(console: Any, columns: list[str], rows: list[list[str]], cap: int = COLUMN_CAP) -> bool:
    """Whether a table of these plain-text cells fits the console's width with every column at
    its natural width (at most ``cap``) plus the box borders. When it does not, a table would
    crush columns to a few characters each and print_vertical is the readable form."""
    width = 1
    for i, name in enumerate(columns):
        natural = max([len(name)] + [len(r[i]) for r in rows if i < len(r)])
        width += min(natural, cap) + 3
    return width <= console.width


VERTICAL_CELL_LIMIT = 500
"""Characters of one value print_vertical shows (the rest is counted; csv/json give it all)."""


def print_vertical(console: Any, columns: list[str], rows: list[list[str]]) -> None:
    """Rows as records, one "column | value" line per field (psql's expanded display), long
    values cut at VERTICAL_CELL_LIMIT characters. Plain text: values are never markup."""
    from rich.text import Text

    width = max((len(c) for c in columns), default=0)
    cut = False
    for n, row in enumerate(rows, 1):
        console.print(Text(f"-[ {n} ]" + "-" * max(3, width - 4)), soft_wrap=True)
        for name, value in zip(columns, row):
            value = value.replace("\n", " ")
            if len(value) > VERTICAL_CELL_LIMIT:
                value = f"{value[:VERTICAL_CELL_LIMIT]}… (+{len(value) - VERTICAL_CELL_LIMIT} chars)"
                cut = True
            console.print(Text(f"{name:<{width}} | {value}"), soft_wrap=True)
    if cut:
        console.print(
            Text(
                f"(values longer than {VERTICAL_CELL_LIMIT} characters are cut; "
                "--format csv or json prints them whole)"
            ),
            soft_wrap=True,
        )


def gib(value: Any) -> str:
    """Bytes as GiB: two decimals, three for small runs (under 0.1 GiB)."""
    if value is None:
        return "-"
    gib = value / GIB
    return f"{gib:.3f}" if 0 < gib < 0.1 else f"{gib:.2f}"


def loss(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def before_after(before: Any, after: Any) -> str:
    if before is None and after is None:
        return "-"
    return f"{loss(before)}→{loss(after)}"


def signed_pct(value: Any) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def jsonable(value: Any) -> Any:
    """A DuckDB value as something json.dumps takes: ISO dates, floats for decimals, hex bytes."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def db_label(db: str | None) -> str:
    """The run database a command uses, as shown to the user (--db or the default path)."""
    from tuneplan.executor.ledger import default_db_path

    return str(Path(db).expanduser() if db else default_db_path())


def no_file(path: str, where: str, fix: str, *, directory: bool = False) -> Optional[int]:
    """Exit code 2 (after saying so) when `path` is not an existing file (or directory)."""
    ok = Path(path).is_dir() if directory else Path(path).is_file()
    if ok:
        return None
    input_error(where, f"{path}: no such {'directory' if directory else 'file'}", fix)
    return EXIT_BAD_INPUT


def check_out_dir(value: Optional[str], flag: str, force: bool) -> Optional[int]:
    """Exit 2 (and the fix) when ``value`` is a file, or a non-empty directory without --force;
    None when writing there is fine."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        input_error(flag, f"{path} exists and is not a directory", "give a new or empty directory")
        return EXIT_BAD_INPUT
    if path.is_dir() and not force:
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as exc:
            input_error(flag, f"cannot read {path}: {exc}", "give a directory you can write to")
            return EXIT_BAD_INPUT
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            input_error(
                flag,
                f"{path} is not empty ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: "
                f"{shown}); writing there would overwrite files",
                f"give a new or empty directory, or pass --force to write into {path} anyway",
            )
            return EXIT_BAD_INPUT
    return None


def guarded(action: Callable[[], int], failure: str = "") -> int:
    """Run a command body: bad input exits 2, Ctrl-C 130, and (when `failure` names the command)
    any other exception 1 with its message; otherwise the body's own exit code."""
    from tuneplan.base.errors import InputError

    try:
        return action()
    except InputError as exc:
        err(exc.render())
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout's reader went away: tuneplan.cli.main.main ends quietly
        raise
    except Exception as exc:  # noqa: BLE001 - reported with its type; exit 1
        if not failure:
            raise
        err(f"error: {failure} failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
