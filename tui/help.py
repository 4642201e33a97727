"""The help screen (F1 or ?): every key and what it does."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

KEYS = (
    ("F1 / ?", "this help"),
    ("ctrl+s", "save the plan to the --out file (atomic)"),
    ("ctrl+r", "save and run the plan (tuneplan run); follow it in the Run tab"),
    ("ctrl+g", "cancel the run (SIGINT: recorded as interrupted)"),
    ("F2 / F3 / F4", "Plan / Run / Runs tab"),
    ("F5", "reload past runs from the run database"),
    ("ctrl+o / F9 (SQL)", "run the read-only query (enter adds a line)"),
    ("ctrl+up / down", "older / newer query from the SQL history"),
    ("ctrl+p", "command palette: save, run, help, tabs"),
    ("tab / shift+tab", "next / previous question"),
    ("down (model box)", "move into the catalog matches; enter picks one"),
    ("enter / space", "open a list; arrows choose; enter picks"),
    ("ctrl+q", "quit"),
)


def keys_text() -> Text:
    text = Text()
    text.append("tuneplan — keys\n\n", style="bold")
    for key, what in KEYS:
        text.append(f"{key:>16}  ", style="bold cyan")
        text.append(f"{what}\n")
    text.append(
        "\nAnswers are checked as you type; a problem shows under its question and the "
        "plan pane keeps the last valid plan until it is fixed.",
        style="dim",
    )
    return text


class HelpScreen(ModalScreen[None]):
    """Every key binding, with what the app does; escape, F1 or ? closes it."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(keys_text(), id="help-text")
            yield Button("Close", id="help-close", variant="primary")

    @on(Button.Pressed, "#help-close")
    def _close(self) -> None:
        self.app.pop_screen()
