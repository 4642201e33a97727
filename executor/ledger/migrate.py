"""Schema migrations and views: numbered ``.sql`` files, applied in order, recorded in
``schema_migrations``; then the macros (macros.sql) and views (views.sql), each defined once,
re-created on every writable connection.

``migrations/NNNN_name.sql``
    Table changes only, append-only: never edit an applied one. A file that only held views in
    an earlier release is kept as a comment (its version stays applied in old databases).
``macros.sql``
    The one place the plan JSON blob is read (record time and back-fills). Created *before* the
    migrations, which may use them.
``views.sql``
    Every view. ``${NAME}`` placeholders are filled from :data:`VIEW_CONSTANTS`.
``schema_views``
    ``(hash, created_at)``: the hash of the macros and views a writable connection last created.
    A read-only connection compares it with this code's (:func:`outdated`), so a database whose
    views are older is refused by reads instead of being queried through stale definitions.

DuckDB only; never imports torch.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

from .connect import StoreError

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "MEMORY_UNDER_PREDICTION_LIMIT",
    "LEARNING_MATCH_SHARE",
    "OOM_PATTERN",
    "VIEW_CONSTANTS",
    "VIEWS_SQL",
    "MACROS_SQL",
    "VIEWS_HASH",
    "schema_version",
    "migrate",
    "create_views",
    "outdated",
    "view_names",
]

MEMORY_UNDER_PREDICTION_LIMIT = 0.25
"""A run's memory promise is broken when the measured peak exceeds the like-for-like prediction
by more than this share of the measurement (like-for-like error below -0.25): the
run_memory_checks view's ``memory_under_predicted``. docs/checks.md says why 25%."""

LEARNING_MATCH_SHARE = 0.8
"""QLoRA "matches" LoRA (TP023) when it learns at least this share of what LoRA learned."""

OOM_PATTERN = r"(?i)(out ?of ?memory|OutOfMemoryError|MemoryError|can't allocate memory)"
"""What a failed run's error looks like when it ran out of memory (CUDA OOM, Python/CPU OOM)."""

VIEW_CONSTANTS = {
    "MEMORY_UNDER_PREDICTION_LIMIT": repr(MEMORY_UNDER_PREDICTION_LIMIT),
    "LEARNING_MATCH_SHARE": repr(LEARNING_MATCH_SHARE),
    "OOM_PATTERN": OOM_PATTERN.replace("'", "''"),
}
"""Values views.sql uses, as SQL text (the pattern inside a quoted literal)."""

_PACKAGE = resources.files(__package__)


def _read(name: str) -> str:
    return _PACKAGE.joinpath(name).read_text(encoding="utf-8")


def _load_migrations() -> list[tuple[int, str, str]]:
    out = []
    for entry in sorted(_PACKAGE.joinpath("migrations").iterdir(), key=lambda p: p.name):
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            out.append(
                (int(match.group(1)), match.group(2).replace("_", " "), entry.read_text(encoding="utf-8"))
            )
    versions = [v for v, _, _ in out]
    if versions != list(range(1, len(out) + 1)):
        raise RuntimeError(f"ledger migrations must be numbered 1..n without gaps, found {versions}")
    return out


MIGRATIONS: list[tuple[int, str, str]] = _load_migrations()
"""Ordered migrations: (version, name, SQL script), from migrations/NNNN_name.sql."""

SCHEMA_VERSION = MIGRATIONS[-1][0]
"""The schema version this code writes."""

MACROS_SQL = _read("macros.sql")
VIEWS_SQL = Template(_read("views.sql")).substitute(VIEW_CONSTANTS)
VIEWS_HASH = hashlib.sha256((MACROS_SQL + "\0" + VIEWS_SQL).encode()).hexdigest()[:16]
"""Identifies the macros and views this code creates (stored in ``schema_views``)."""


def view_names() -> list[str]:
    """The views views.sql defines, in order."""
    return re.findall(r"CREATE OR REPLACE VIEW (\w+)", VIEWS_SQL)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _has_table(con: "DuckDBPyConnection", name: str) -> bool:
    return (
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
            [name],
        ).fetchone()[0]
        > 0
    )


def _is_empty_script(sql: str) -> bool:
    return not any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


def schema_version(con: "DuckDBPyConnection") -> int:
    """The highest applied migration version (0 for an empty database)."""
    if not _has_table(con, "schema_migrations"):
        return 0
    value = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return int(value or 0)


def _views_hash(con: "DuckDBPyConnection") -> str | None:
    if not _has_table(con, "schema_views"):
        return None
    row = con.execute("SELECT hash FROM schema_views ORDER BY created_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def outdated(con: "DuckDBPyConnection") -> str | None:
    """Why this database is older than this code (None when it is current): a missing
    migration, or views created by another version of views.sql. Reads only."""
    version = schema_version(con)
    if version == 0 or version > SCHEMA_VERSION:
        return None  # not a ledger (nothing to upgrade), or written by a newer tuneplan
    if version < SCHEMA_VERSION:
        return (
            f"has schema version {version}, older than this tuneplan's {SCHEMA_VERSION} "
            "(missing: " + ", ".join(f"{v} {n}" for v, n, _ in MIGRATIONS if v > version) + ")"
        )
    if _views_hash(con) != VIEWS_HASH:
        return "has views from another tuneplan version"
    return None


def create_views(con: "DuckDBPyConnection") -> None:
    """(Re-)create every view of views.sql and record their hash (one transaction)."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(VIEWS_SQL)
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_views "
            "(hash VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL)"
        )
        con.execute("DELETE FROM schema_views")
        con.execute("INSERT INTO schema_views VALUES (?, ?)", [VIEWS_HASH, _utcnow()])
        con.execute("COMMIT")
    except Exception as exc:
        con.execute("ROLLBACK")
        raise StoreError(f"could not create the run database views: {exc}") from exc


def migrate(con: "DuckDBPyConnection", target: int | None = None) -> list[int]:
    """Apply the migrations not yet recorded in ``schema_migrations`` (up to ``target`` when
    given), each in one transaction, with the macros created first. Without a target, the views
    are re-created afterwards when anything was applied or they are older than this code.
    Returns the versions applied; an up-to-date database is left untouched."""
    version = schema_version(con)
    if version > SCHEMA_VERSION:
        return []  # a newer tuneplan wrote it; never touch its schema
    pending = [m for m in MIGRATIONS if m[0] > version and (target is None or m[0] <= target)]
    current = target is None and not pending and _views_hash(con) == VIEWS_HASH
    if current:
        return []
    con.execute(MACROS_SQL)
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied: list[int] = []
    for number, name, sql in pending:
        if number in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            if not _is_empty_script(sql):
                con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [number, _utcnow()])
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise StoreError(f"run database migration {number} ({name}) failed: {exc}") from exc
        applied.append(number)
    if target is None:
        create_views(con)
    return applied
