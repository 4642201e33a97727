"""The Runs tab: past runs from the run database, and a read-only SQL box over it.

The database is opened the first time the tab is shown, never for the first paint. The SQL box
uses `tuneplan sql`'s sealed connection, keeps a history, and shows every cell as text (never
markup: the data shown is the data).
"""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static, TextArea

from . import messages

GIB = 1024**3
COLUMNS = (
    "run",
    "status",
    "method",
    "pred GiB",
    "meas GiB",
    "error",
    "eval loss",
    "probe loss",
    "tok/s",
    "model",
)


def gib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def cell(value) -> Text:
    """One SQL result value as plain text, never markup (floats to 6 significant digits)."""
    if value is None:
        return Text("NULL", style="dim")
    return Text(f"{value:.6g}" if isinstance(value, float) else str(value))


def sql_query(db: Optional[str], sql: str) -> tuple[list[str], list[tuple], bool]:
    """The one call the SQL box makes: `tuneplan sql`'s sealed connection (executor/sqlsafe.py:
    read-only, the statement checked by DuckDB's parser, external access limited to the same
    default read paths, the same row limit). Returns (columns, rows, truncated)."""
    from tuneplan.executor.ledger import sqlsafe

    return sqlsafe.fetch(sql, db, read_paths=sqlsafe.default_read_paths(), limit=sqlsafe.DEFAULT_ROW_LIMIT)


class SQLBox(TextArea):
    """Multi-line read-only SQL with history: ctrl+o (or F9) runs, ctrl+up/down walk history."""

    BINDINGS = [
        Binding("ctrl+o,f9", "app.run_sql", "Run query"),
        Binding("ctrl+up", "app.sql_history(-1)", "Older query"),
        Binding("ctrl+down", "app.sql_history(1)", "Newer query"),
    ]


class RunsPane(Vertical):
    """The Runs tab's body (id "runs-body"): `reload` reads the runs, `run_sql` the SQL box."""

    def __init__(self, db: Optional[str], **kw) -> None:
        super().__init__(**kw)
        self.db = db
        self.loaded = False
        self.history: list[str] = []
        self._pos = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-status")
        yield DataTable(id="runs-table", zebra_stripes=True, cursor_type="row")
        yield Static("Read-only SQL (ctrl+o or F9 runs; ctrl+up/down: history)", classes="q")
        yield SQLBox(
            "SELECT * FROM method_summary", id="sql", language=None, soft_wrap=True, show_line_numbers=False
        )
        yield Static("", id="sql-status")
        yield DataTable(id="sql-table", zebra_stripes=True)

    def on_mount(self) -> None:
        self.post_message(messages.PartMounted(self.id or ""))

    def reload(self) -> None:
        """Read the runs table from the run database again."""
        from tuneplan.advisor.render import METHOD_LABEL
        from tuneplan.executor import ledger as store

        table = self.query_one("#runs-table", DataTable)
        status = self.query_one("#runs-status", Static)
        table.clear(columns=True)
        table.add_columns(*COLUMNS)
        label = self.db or str(store.default_db_path())
        self.loaded = True
        try:
            rows = store.list_runs(self.db)
        except store.NoDatabase:
            status.update(
                Text(f"No runs recorded yet in {label}: ctrl+r on the Plan tab runs one.", style="yellow")
            )
            return
        except store.StoreError as e:
            status.update(Text(f"Could not read the run database: {e}", style="yellow"))
            return
        for r in rows:
            err = r.get("memory_error")
            tps = r.get("tokens_per_second")
            cells = (
                r["run_id"],
                r["status"],
                METHOD_LABEL.get(r["method"], r["method"]),
                gib(r.get("predicted_peak_bytes")),
                gib(r.get("measured_peak_bytes")),
                "" if err is None else f"{err * 100:+.1f}%",
                messages.before_after(r.get("eval_loss_before"), r.get("eval_loss_after")),
                messages.before_after(r.get("forgetting_loss_before"), r.get("forgetting_loss_after")),
                "-" if tps is None else f"{tps:,.0f}",
                str(r["model"]).rsplit("/", 1)[-1],
            )
            table.add_row(*(Text(str(c)) for c in cells), key=r["run_id"])  # data, never markup
        status.update(
            Text(
                f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {label} "
                f"(F5 reloads; error = (predicted − measured) / measured)"
            )
        )

    def run_sql(self) -> None:
        """Run the SQL box's statement through the sealed read-only connection."""
        box = self.query_one("#sql", SQLBox)
        sql = box.text.strip()
        if not sql:
            return
        if not self.history or self.history[-1] != sql:
            self.history.append(sql)
        self._pos = len(self.history)
        table = self.query_one("#sql-table", DataTable)
        status = self.query_one("#sql-status", Static)
        table.clear(columns=True)
        try:
            columns, rows, truncated = sql_query(self.db, sql)
        except Exception as e:  # refused, bad SQL, no database: said in words, never raised
            status.update(Text(messages.store_error_words(e), style="bold red"))
            return
        table.add_columns(*(Text(str(c)) for c in columns))
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        more = (
            " (the first ones; more exist — add a LIMIT or use `tuneplan sql --no-limit`)"
            if truncated
            else ""
        )
        status.update(Text(f"{len(rows)} row{'s' if len(rows) != 1 else ''}{more}", style="green"))

    def walk_history(self, delta: int) -> None:
        """Walk the SQL history; past the newest entry the box is empty for a new query."""
        if not self.history:
            return
        self._pos = max(0, min(len(self.history), self._pos + delta))
        box = self.query_one("#sql", SQLBox)
        box.text = self.history[self._pos] if self._pos < len(self.history) else ""
        box.move_cursor(box.document.end)
