"""Opening the run database: where it lives, the errors the ledger raises, and the two kinds of
connection.

* A **writable** connection (:func:`connect`) creates the file's directory, applies the missing
  migrations and re-creates the macros and views (migrate.py). Only commands that write runs use
  it: ``tuneplan run``, ``compare``, ``sweep``, ``runs ingest``, ``runs upgrade``.
* A **read-only** connection (:func:`connect` with ``read_only=True``, or :func:`open_read`)
  changes nothing, ever. :func:`open_read` also refuses a database whose schema or views are older
  than this code (:class:`SchemaOutdated`, exit 2 in the CLI) with a message naming
  ``tuneplan runs upgrade``; ``check``, ``runs``, ``sql``, ``report`` and the TUI read this way.

DuckDB only; never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import duckdb

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

__all__ = [
    "DBPath",
    "ENV_DB",
    "StoreError",
    "DatabaseLocked",
    "NoDatabase",
    "QueryError",
    "QueryRefused",
    "SchemaOutdated",
    "UPGRADE_COMMAND",
    "default_db_path",
    "connect",
    "open_read",
]

DBPath = Union[str, Path, None]

ENV_DB = "TUNEPLAN_DB"
"""Environment variable that overrides the default database path."""

UPGRADE_COMMAND = "tuneplan runs upgrade"
"""The command that upgrades an older database in place (any writing command does it too)."""


class StoreError(Exception):
    """The run store could not do what was asked; the message says why and what to do."""


class DatabaseLocked(StoreError):
    """Another process holds DuckDB's lock on the database file."""


class NoDatabase(StoreError):
    """A read was asked of a database file that does not exist yet (no runs recorded)."""


class QueryError(StoreError):
    """A query given to :func:`~tuneplan.executor.ledger.query.query` is invalid (syntax error,
    unknown table or column)."""


class QueryRefused(QueryError):
    """A statement given to :func:`~tuneplan.executor.ledger.query.query` could change something;
    only reads are allowed."""


class SchemaOutdated(StoreError):
    """A read-only command met a database older than this code; it is never upgraded by a read.
    The message names :data:`UPGRADE_COMMAND`."""


def default_db_path() -> Path:
    """The database used when none is given: ``$TUNEPLAN_DB``, else ``./.tuneplan/runs.duckdb``
    relative to the current directory."""
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser()
    return Path.cwd() / ".tuneplan" / "runs.duckdb"


def _resolve(db: DBPath) -> Path:
    return default_db_path() if db is None or str(db) == "" else Path(db).expanduser()


def _reason(exc: BaseException) -> str:
    """A database error as text, saying "no space left on device" when that is the cause."""
    text = str(exc)
    if "no space left" in text.lower() or getattr(exc, "errno", None) == 28:
        return f"no space left on device ({text.splitlines()[0] if text else exc!r})"
    return text


def _open_error(path: Path, exc: Exception, *, writing: bool) -> StoreError:
    text = str(exc)
    if "lock" in text.lower():
        what = "record the run" if writing else "read it"
        return DatabaseLocked(
            f"run database {path} is locked by another process ({text.splitlines()[0]}); "
            f"cannot {what} now. Nothing is lost: every run directory keeps result.json and "
            f"metrics.jsonl. Wait for the other process (a running `tuneplan run`, an open "
            f"DuckDB shell) to finish, then run `tuneplan runs ingest RUN_DIR --db {path}`, "
            f"or use another database with --db / ${ENV_DB}."
        )
    return StoreError(
        f"cannot open run database {path}: {_reason(exc)}. Check the path and its permissions, or use "
        f"another database with --db / ${ENV_DB}."
    )


def _no_database(path: Path) -> NoDatabase:
    return NoDatabase(
        f"no runs yet: the run database {path} does not exist. Record runs with "
        f"`tuneplan run PLAN` or rebuild them with `tuneplan runs ingest RUN_DIR`, or "
        f"point --db / ${ENV_DB} at an existing database."
    )


def connect(db: DBPath = None, *, read_only: bool = False) -> "DuckDBPyConnection":
    """Open the run database (default :func:`default_db_path`).

    Writable connections create the parent directory, apply missing migrations and re-create
    the views. Read-only connections change nothing (and check nothing: :func:`open_read` does);
    a missing file raises :class:`NoDatabase`. A file locked by another process raises
    :class:`DatabaseLocked`; other failures :class:`StoreError`.
    """
    from .migrate import migrate

    if db is not None and str(db) == ":memory:":
        con = duckdb.connect(":memory:")
        if not read_only:
            migrate(con)
        return con
    path = _resolve(db)
    if read_only:
        if not path.exists():
            raise _no_database(path)
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory for run database {path}: {exc}. "
                f"Use another database with --db / ${ENV_DB}."
            ) from exc
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise _open_error(path, exc, writing=not read_only) from exc
    if not read_only:
        try:
            migrate(con)
        except BaseException:
            con.close()
            raise
    return con


def open_read(db: DBPath = None) -> "DuckDBPyConnection":
    """A read-only connection to a database whose schema and views are the ones this code
    writes. An older one raises :class:`SchemaOutdated` (nothing is changed; the message names
    :data:`UPGRADE_COMMAND`), a missing one :class:`NoDatabase`."""
    from .migrate import outdated

    con = connect(db, read_only=True)
    try:
        why = outdated(con)
    except BaseException:
        con.close()
        raise
    if why:
        con.close()
        raise SchemaOutdated(
            f"the run database {_resolve(db)} {why}; read-only commands never change it. "
            f"Upgrade it in place with `{UPGRADE_COMMAND} --db {_resolve(db)}` (every row is kept; "
            f"`tuneplan runs ingest` and `tuneplan run` upgrade it too), then run this again."
        )
    return con
