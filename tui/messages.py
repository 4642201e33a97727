"""What the app says to people: problem lists, notifications, errors of the run database.

Always in the TUI's words (the questions by name, not CLI flags: tui/words.py), and always as
plain text, never Rich markup (a model name or an error message may hold brackets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional
from rich.text import Text
from textual.app import App
from textual.message import Message

from tuneplan.base.errors import Problem

from .fields import FIELD_FOR_FLAG, FIELD_LABEL
from .words import tui_words


def before_after(before: Optional[float], after: Optional[float]) -> str:
    """A loss before and after training: "3.000→2.000" ("-" for a side not measured)."""
    if before is None and after is None:
        return "-"
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return f"{fmt(before)}→{fmt(after)}"


def field_name(p: Problem) -> str:
    """The question a problem belongs to, as the form calls it (else what the problem names)."""
    return FIELD_LABEL.get(FIELD_FOR_FLAG.get(p.where, ""), p.where)


def problem_lines(problems: list[Problem]) -> Text:
    """One bullet per problem under the plan pane's heading: "• GPU count: ..."."""
    text = Text()
    for p in problems:
        text.append(f"\n • {field_name(p)}: ", style="bold")
        text.append(tui_words(p.message))
    return text


def not_saved(app: App, problems: list[Problem]) -> None:
    fixes = "; ".join(f"{field_name(p)}: {tui_words(p.message)}" for p in problems[:4])
    app.notify(
        f"Not saved. Fix first — {fixes}",
        title="Plan is not valid",
        severity="error",
        timeout=8,
        markup=False,
    )


def saved(app: App, out: Path, method_label: str, feasible: bool) -> None:
    if not feasible:
        app.notify(
            f"Saved to {out.resolve()}, marked infeasible: nothing fits this "
            "hardware. The ways out are at the top of the plan.",
            title="Infeasible plan saved",
            severity="warning",
            timeout=8,
            markup=False,
        )
    else:
        app.notify(f"Plan saved to {out.resolve()}", title=f"{method_label} plan saved", markup=False)


def write_failed(app: App, out: Path, error: OSError) -> None:
    app.notify(f"Could not write {out}: {error}", severity="error", timeout=8, markup=False)


def needs_data(app: App) -> None:
    app.notify(
        "Give a training data file (Task → training data) to run.", title="Cannot run", severity="error"
    )


def run_outcome(app: App, status: str, cancelled: bool) -> None:
    app.notify(
        "Run cancelled" if cancelled else f"Run {status}",
        severity="information" if status == "succeeded" else "warning",
    )


def store_error_words(e: Exception) -> str:
    """A run-database error in words: no database yet, a store error, anything else by type."""
    from tuneplan.executor import ledger as store

    if isinstance(e, store.NoDatabase):
        return "No run database yet: nothing to query until a run is recorded (ctrl+r on the Plan tab)."
    if isinstance(e, store.StoreError):
        return tui_words(str(e))
    return f"{type(e).__name__}: {e}"


class PartMounted(Message):
    """A part of the app mounted after the first paint (the Run and Runs tabs' bodies) is there."""

    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part


class RunFinished(Message):
    """The run pane's run has ended (whatever its outcome): the app reloads the runs table."""
