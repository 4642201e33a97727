"""Errors users can act on: every problem at once, each naming its field or flag and a fix.

The CLI prints an InputError to stderr and exits 2. Shared by advisor, executor and TUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from pydantic import ValidationError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2, 3
"""Exit codes of every command: 0 ok; 1 a failure (a run that failed, a check that broke);
2 bad input (an InputError); 3 an infeasible plan (`advise` when nothing fits)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input."""

    where: str
    """The exact flag (`--gpu`), JSON path (`training.learning_rate`) or file path (`data.jsonl:12`)."""
    message: str
    """What is wrong."""
    fix: str = ""
    """What to do about it."""

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


@dataclass
class InputError(Exception):
    """Bad input: exit code 2. Carries every problem found, not just the first."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"error: {n} problem{'s' if n != 1 else ''} with the input"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])

    @classmethod
    def one(cls, where: str, message: str, fix: str = "") -> "InputError":
        return cls([Problem(where, message, fix)])


def pydantic_problems(
    exc: "ValidationError",
    prefix: str = "",
    flags: dict[str, str] | None = None,
) -> list[Problem]:
    """Turn a pydantic ValidationError into Problems with dotted JSON paths (or CLI flags)."""
    flags = flags or {}
    out: list[Problem] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        path = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(root)"
        where = flags.get(path, path)
        out.append(Problem(where, _message(err), _fix_for(err)))
    return out


def _message(err: "Mapping[str, Any]") -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own words."""
    ctx = err.get("ctx") or {}
    if err.get("type") == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    return str(err.get("msg", "invalid value"))


def _fix_for(err: "Mapping[str, Any]") -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "remove this key; it is not part of the schema (see `tuneplan schema`)"
    if kind == "missing":
        return "add this required key"
    if kind == "literal_error" and "expected" in ctx:
        return f"use one of {ctx['expected']}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return "use a value in the allowed range"
    return ""


def collect(problems: Iterable[Problem]) -> None:
    """Raise InputError if there is any problem."""
    problems = list(problems)
    if problems:
        raise InputError(problems)
