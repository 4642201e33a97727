"""Reading the ledger: :func:`list_runs` (``tuneplan runs``, the TUI's runs pane) and
:func:`query` (``tuneplan sql``, the TUI's SQL box). Both only read: :func:`list_runs` through
:func:`~tuneplan.executor.ledger.connect.open_read` (an older database is refused with the
command that upgrades it), :func:`query` through sqlsafe.py's sealed connection.

Every derived number comes from the views (views.sql), never recomputed here.

DuckDB only; never imports torch.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import duckdb

from .connect import DBPath, StoreError, _resolve, open_read

__all__ = ["LIST_KEYS", "list_runs", "query", "check_read_only_sql"]

LIST_KEYS: list[str] = [
    "run_id",
    "status",
    "method",
    "model",
    "hardware",
    "device_kind",
    "num_processes",
    "strategy",
    "started_at",
    "finished_at",
    "predicted_peak_bytes",
    "predicted_fits",
    "measured_peak_bytes",
    "memory_error",
    "eval_loss_before",
    "eval_loss_after",
    "learning",
    "forgetting_loss_before",
    "forgetting_loss_after",
    "forgetting",
    "steps",
    "tokens",
    "tokens_per_second",
    "wall_seconds",
    "run_dir",
    "error",
    "predicted_overhead_bytes",
    "runtime_bytes",
    "memory_error_comparable",
    "planned_hardware",
]
"""Keys of each dict :func:`list_runs` returns: columns of ``runs`` and, from the views,
``memory_error`` (raw) and ``memory_error_comparable`` (like-for-like) of run_memory_checks and
``learning`` / ``forgetting`` of run_learning. ``planned_hardware`` is the device the plan was
made for, ``hardware`` the one the run used."""

_LIST_SQL = """
SELECT r.run_id, r.status, r.method, r.model, r.hardware, r.device_kind, r.num_processes,
       r.strategy, r.started_at, r.finished_at, r.predicted_peak_bytes, r.predicted_fits,
       r.measured_peak_bytes, m.memory_error, r.eval_loss_before, r.eval_loss_after, l.learning,
       r.forgetting_loss_before, r.forgetting_loss_after, l.forgetting, r.steps, r.tokens,
       r.tokens_per_second, r.wall_seconds, r.run_dir, r.error,
       coalesce(r.predicted_overhead_bytes, 0) AS predicted_overhead_bytes,
       CASE WHEN r.measured_peak_bytes IS NOT NULL THEN coalesce(r.runtime_bytes, 0) END
           AS runtime_bytes,
       m.memory_error_comparable, r.planned_hardware
FROM runs r JOIN run_memory_checks m USING (run_id) JOIN run_learning l USING (run_id)
ORDER BY r.started_at DESC NULLS LAST, r.run_id DESC
"""


def list_runs(db: DBPath = None, *, limit: int | None = None) -> list[dict]:
    """Runs newest first (by started_at, then run_id), as dicts with the keys of
    :data:`LIST_KEYS`. Timestamps are ISO-8601 strings (UTC). A missing database raises
    :class:`~tuneplan.executor.ledger.connect.NoDatabase`, an older one
    :class:`~tuneplan.executor.ledger.connect.SchemaOutdated`; nothing is ever written."""
    con = open_read(db)
    try:
        sql = _LIST_SQL
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(max(int(limit), 0), 2**62))  # DuckDB LIMIT is a BIGINT
        try:
            cur = con.execute(sql, params)
        except duckdb.CatalogException as exc:
            raise StoreError(
                f"{_resolve(db)} is not a tuneplan run database (or predates its schema): {exc}"
            ) from exc
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    out = []
    for values in rows:
        item = dict(zip(names, values))
        for key in ("started_at", "finished_at"):
            if isinstance(item[key], datetime):
                item[key] = item[key].isoformat() + "Z"
        out.append(item)
    return out


def check_read_only_sql(sql: str) -> None:
    """Refuse anything but one read statement (sqlsafe.py's
    :func:`~tuneplan.executor.ledger.sqlsafe.check_statement`, built on DuckDB's parser)."""
    from .sqlsafe import check_statement

    check_statement(sql)


def query(
    db: DBPath, sql: str, *, read_paths: Iterable[str | Path] = (), limit: int | None = None
) -> tuple[list[str], list[tuple]]:
    """Run one read-only SQL statement against the run database and return (column names,
    rows), on sqlsafe.py's sealed connection: the statement is checked with DuckDB's parser, the
    database is opened read-only with external access off (only ``read_paths`` readable),
    extensions never loaded and the configuration locked — a write or a reach outside raises
    ``QueryRefused`` and changes nothing. ``limit`` caps the rows (default: none). A missing
    database raises ``NoDatabase``; an older one ``SchemaOutdated``; bad SQL ``QueryError``."""
    from .sqlsafe import fetch

    columns, rows, _ = fetch(sql, db, read_paths=tuple(read_paths), limit=limit)
    return columns, rows
