"""Read-only SQL over the run database that cannot write or reach out, by construction.

Two layers, each enough on its own for the attacks we know of:

1. **The connection is sealed** (:func:`sealed_connection`). The database is opened
   ``read_only``; extension auto-install and auto-load are off; ``allowed_directories`` is set to
   the run directories the caller names (``read_paths``) and then ``enable_external_access`` is
   turned off, so no file outside the database itself and those directories can be read or
   written and no URL (``https://``, ``s3://``...) can be fetched; finally ``lock_configuration``
   is turned on, so no statement can undo any of this (``SET``/``RESET`` fail). These are DuckDB's
   own settings (https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview).
   DuckDB still lets ``COPY ... TO`` / ``EXPORT DATABASE`` write *inside* an allowed directory,
   which is why the second layer exists and why nothing outside the named directories is ever
   allowed.

2. **The statement is checked with DuckDB's own parser** (:func:`check_statement`), never with
   regexes: ``duckdb.extract_statements`` splits and types the statements (exactly one allowed);
   a SELECT (which includes WITH, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE) is serialized
   to its syntax tree with ``json_serialize_sql`` and every query node in it must be a read
   (a ``DELETE/INSERT/UPDATE ... RETURNING`` inside a CTE is refused); ``EXPLAIN [ANALYZE]`` is
   checked on the statement it wraps, located with ``duckdb.tokenize`` (which understands nested
   comments and strings exactly as the engine does); ``PRAGMA`` only for a fixed list of
   read-only pragmas. Everything else (COPY, EXPORT, ATTACH, INSTALL, LOAD, SET, CALL, CREATE,
   CHECKPOINT, ...) is refused.

Results are bounded: :data:`DEFAULT_ROW_LIMIT` rows unless the caller lifts it, and
:func:`stream` hands rows out in ``fetchmany`` batches so CSV/JSON output never holds the whole
result in memory.

API: :func:`check_statement`, :func:`sealed_connection`, :func:`stream` (a context manager) and
:func:`fetch` (everything in one list, for the TUI and tests). Errors are the store's:
:class:`~tuneplan.executor.ledger.connect.QueryRefused` (not a read, or a path/URL outside what the
connection may read), :class:`~tuneplan.executor.ledger.connect.QueryError` (does not parse, unknown
table...), :class:`~tuneplan.executor.ledger.connect.NoDatabase`.

This module imports DuckDB, never torch.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence, Union

import duckdb

from .connect import (
    UPGRADE_COMMAND,
    NoDatabase,
    QueryError,
    QueryRefused,
    SchemaOutdated,
    _open_error,
    _resolve,
)

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

__all__ = [
    "DEFAULT_ROW_LIMIT",
    "BATCH_ROWS",
    "READ_PRAGMAS",
    "QueryResult",
    "check_statement",
    "sealed_connection",
    "stream",
    "fetch",
    "default_read_paths",
]

DEFAULT_ROW_LIMIT = 1000
"""Rows returned when the caller sets no limit (``tuneplan sql --limit N`` / ``--no-limit``).
Ten million rows as JSON once took 124 s and 6.3 GB; a thousand is more than a terminal shows."""

BATCH_ROWS = 2048
"""Rows fetched per ``fetchmany`` call when streaming (bounded memory for CSV/JSON output)."""

READ_PRAGMAS = frozenset(
    {
        "table_info",
        "show_tables",
        "show_tables_expanded",
        "show",
        "database_size",
        "storage_info",
        "version",
        "platform",
        "database_list",
        "functions",
        "collations",
        "user_agent",
    }
)
"""PRAGMAs that only read: everything else (enable_profiling, checkpoint, memory_limit, ...)
changes state and is refused."""

# Query nodes of a read. DuckDB's serializer names the others DELETE_QUERY_NODE,
# INSERT_QUERY_NODE, UPDATE_QUERY_NODE, ... (a CTE can hold one with RETURNING).
_READ_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})

# Table functions that act rather than read.
_ACTING_FUNCTIONS = frozenset({"checkpoint", "force_checkpoint"})

_ALLOWED_TEXT = (
    "runs only one read statement: SELECT (WITH, FROM-first, VALUES), DESCRIBE, "
    "SHOW, SUMMARIZE, EXPLAIN of one of those, or a read-only PRAGMA such as "
    "table_info. Nothing was changed."
)

DBPath = Union[str, Path, None]

DEFAULT_RUNS_DIR = "runs"
"""executor/runner.py's DEFAULT_OUTPUT_DIR (not imported: runner pulls in the training stack)."""


# --------------------------------------------------------------------------------------------
# Layer 2: the statement check


def _refuse(what: str) -> QueryRefused:
    return QueryRefused(f"refused: {what}; tuneplan sql {_ALLOWED_TEXT}")


def _significant_tokens(sql: str) -> list[tuple[int, str]]:
    """(offset, token type name) of every non-comment token, by DuckDB's own tokenizer."""
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error as exc:  # pragma: no cover - the tokenizer accepts any text
        raise QueryError(f"invalid SQL: {exc}") from exc
    out = []
    for offset, kind in tokens:
        name = getattr(kind, "name", str(kind))
        if name != "comment":
            out.append((int(offset), name))
    return out


def _word_at(sql: str, offset: int) -> str:
    end = offset
    while end < len(sql) and (sql[end].isalnum() or sql[end] == "_"):
        end += 1
    return sql[offset:end].lower()


def _walk(node: Any, kinds: set, functions: set) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_NODE"):
            kinds.add(kind)
        if node.get("type") == "TABLE_FUNCTION" or node.get("class") == "FUNCTION":
            name = node.get("function_name")
            if isinstance(name, str):
                functions.add(name.lower())
        for value in node.values():
            _walk(value, kinds, functions)
    elif isinstance(node, list):
        for value in node:
            _walk(value, kinds, functions)


def _check_select_tree(sql: str) -> None:
    """Serialize a SELECT to DuckDB's syntax tree and refuse any node that is not a read."""
    con = duckdb.connect(":memory:")
    try:
        text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    finally:
        con.close()
    tree = json.loads(text)
    if tree.get("error"):
        # Statement types DuckDB reports as SELECT but cannot serialize: refuse, never guess.
        raise _refuse(f"a statement DuckDB cannot show to be a read ({tree.get('error_message', 'unknown')})")
    kinds: set = set()
    functions: set = set()
    _walk(tree.get("statements", []), kinds, functions)
    writes = sorted(k for k in kinds if k not in _READ_NODES)
    if writes:
        names = ", ".join(k.removesuffix("_QUERY_NODE").removesuffix("_NODE") for k in writes)
        raise _refuse(f"{names} inside a SELECT (a CTE or subquery that changes data)")
    acting = sorted(functions & _ACTING_FUNCTIONS)
    if acting:
        raise _refuse(f"{', '.join(acting)}() acts on the database")


def check_statement(sql: str) -> str:
    """Refuse anything but one read statement; return that statement's text.

    Raises :class:`QueryRefused` naming what was refused (more than one statement, a statement
    type that is not a read, DML inside a SELECT, a writing PRAGMA, EXPLAIN of any of those),
    or :class:`QueryError` for SQL that does not parse or is empty."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"invalid SQL: {exc}") from exc
    if not statements:
        raise QueryError("no SQL statement given; try `SELECT * FROM runs`")
    if len(statements) > 1:
        raise _refuse(f"{len(statements)} statements given (exactly one is run)")
    stmt = statements[0]
    kind = stmt.type
    name = getattr(kind, "name", str(kind))
    text = stmt.query
    if kind == duckdb.StatementType.SELECT:
        _check_select_tree(text)
        return text
    if kind == duckdb.StatementType.EXPLAIN:
        tokens = _significant_tokens(text)
        # EXPLAIN [ANALYZE] <statement>: the wrapped statement starts at the first token that is
        # neither keyword (comments are not tokens here, so /* /* */ ... */ cannot hide it).
        rest = None
        for offset, _kind in tokens:
            if _word_at(text, offset) in ("explain", "analyze", "analyse"):
                continue
            rest = text[offset:]
            break
        if rest is None:
            raise QueryError("EXPLAIN of nothing; try `EXPLAIN SELECT * FROM runs`")
        try:
            check_statement(rest)
        except QueryRefused as exc:
            raise QueryRefused(f"EXPLAIN of a refused statement: {exc}") from exc
        return text
    if kind == duckdb.StatementType.PRAGMA:
        tokens = _significant_tokens(text)
        pragma = _word_at(text, tokens[1][0]) if len(tokens) > 1 else ""
        if pragma in READ_PRAGMAS and not any(text[o] == "=" for o, k in tokens if k == "operator"):
            return text
        name = f"PRAGMA {pragma}".strip()
    raise _refuse(f"{name} statement")


# --------------------------------------------------------------------------------------------
# Layer 1: the sealed connection


def default_read_paths() -> list[Path]:
    """Directories ``tuneplan sql`` may read without being told: ``./runs`` (where
    ``tuneplan run`` puts run directories by default) when it exists."""
    runs = Path.cwd() / DEFAULT_RUNS_DIR
    return [runs] if runs.is_dir() else []


def _directory_entries(read_paths: Iterable[Union[str, Path]]) -> list[str]:
    out = []
    for p in read_paths:
        path = Path(p).expanduser()
        if not path.is_dir():
            raise QueryError(
                f"--read {p}: not a directory; give a run directory (or the "
                f"directory holding them) that exists"
            )
        out.append(str(path.resolve()).rstrip(os.sep) + os.sep)
    return out


def sealed_connection(db: DBPath = None, read_paths: Sequence[Union[str, Path]] = ()) -> "DuckDBPyConnection":
    """Open the run database read-only with every way out closed.

    ``read_paths`` are directories whose files queries may read (``read_parquet('runs/*/...')``
    pooling); nothing else on the filesystem or the network is reachable, extensions are never
    installed or loaded, and the configuration is locked. ``db=":memory:"`` gives an empty
    sealed in-memory database. A missing file raises :class:`NoDatabase`."""
    dirs = _directory_entries(read_paths)
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if db is not None and str(db) == ":memory:":
        con = duckdb.connect(":memory:", config=config)
    else:
        path = _resolve(db)
        if not path.exists():
            raise NoDatabase(
                f"no runs yet: the run database {path} does not exist. Record runs with "
                f"`tuneplan run PLAN` or rebuild them with `tuneplan runs ingest RUN_DIR`, or "
                f"point --db / $TUNEPLAN_DB at an existing database."
            )
        if path.is_dir():
            raise QueryError(
                f"--db {path} is a directory; give the run database file (e.g. {path / 'runs.duckdb'})"
            )
        try:
            con = duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.Error as exc:
            raise _open_error(path, exc, writing=False) from exc
    try:
        # Order matters: allowed_directories can only be set while external access is on, and
        # nothing can be set once the configuration is locked.
        if dirs:
            con.execute("SET allowed_directories = ?", [dirs])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        if db is None or str(db) != ":memory:":
            from .migrate import outdated

            why = outdated(con)
            if why:
                raise SchemaOutdated(
                    f"the run database {_resolve(db)} {why}; `tuneplan sql` never changes it. "
                    f"Upgrade it in place with `{UPGRADE_COMMAND} --db {_resolve(db)}` (every row "
                    f"is kept), then run the query again."
                )
    except BaseException:
        con.close()
        raise
    return con


# --------------------------------------------------------------------------------------------
# Running a query


@dataclass
class QueryResult:
    """What :func:`stream` yields: column names, an iterator of row batches, and — once the
    batches are exhausted — whether rows were cut at ``limit`` and how many were returned."""

    columns: list[str]
    batches: Iterator[list[tuple]]
    limit: Optional[int]
    rows_returned: int = 0
    truncated: bool = False
    _cursor: Any = field(default=None, repr=False)


def _execute(con: "DuckDBPyConnection", sql: str) -> Any:
    try:
        return con.execute(sql)
    except duckdb.PermissionException as exc:
        raise QueryRefused(
            f"refused: {str(exc).splitlines()[0]}. tuneplan sql reads only the run database and "
            f"the directories named with --read DIR (./runs by default); no other file and no "
            f"URL. Nothing was changed."
        ) from exc
    except duckdb.InvalidInputException as exc:
        if "read-only" in str(exc) or "locked" in str(exc):
            raise QueryRefused(f"refused: {str(exc).splitlines()[0]}. Nothing was changed.") from exc
        raise QueryError(str(exc)) from exc
    except (
        duckdb.ParserException,
        duckdb.BinderException,
        duckdb.CatalogException,
        duckdb.ConversionException,
    ) as exc:
        raise QueryError(str(exc)) from exc
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from exc


@contextmanager
def stream(
    sql: str,
    db: DBPath = None,
    *,
    read_paths: Sequence[Union[str, Path]] = (),
    limit: Optional[int] = DEFAULT_ROW_LIMIT,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[QueryResult]:
    """Check ``sql`` (:func:`check_statement`), run it on a :func:`sealed_connection` and yield a
    :class:`QueryResult` whose ``batches`` come from ``fetchmany`` — at most ``limit`` rows in
    all (``None``: no limit); ``truncated`` tells whether more rows existed. The connection is
    closed when the block ends."""
    text = check_statement(sql)
    if limit is not None and limit < 0:
        raise QueryError(f"row limit must be >= 0, got {limit}")
    con = sealed_connection(db, read_paths)
    try:
        cur = _execute(con, text)
        columns = [d[0] for d in cur.description] if cur.description is not None else []
        result = QueryResult(columns=columns, batches=iter(()), limit=limit, _cursor=cur)

        def batches() -> Iterator[list[tuple]]:
            if cur.description is None:
                return
            while True:
                want = batch_rows
                if limit is not None:
                    want = min(batch_rows, limit - result.rows_returned + 1)
                try:
                    rows = cur.fetchmany(want)
                except duckdb.Error as exc:
                    raise QueryError(f"query failed: {exc}") from exc
                if not rows:
                    return
                if limit is not None and result.rows_returned + len(rows) > limit:
                    rows = rows[: limit - result.rows_returned]
                    result.truncated = True
                    if rows:
                        result.rows_returned += len(rows)
                        yield [tuple(r) for r in rows]
                    return
                result.rows_returned += len(rows)
                yield [tuple(r) for r in rows]

        result.batches = batches()
        yield result
    finally:
        con.close()


def fetch(
    sql: str,
    db: DBPath = None,
    *,
    read_paths: Sequence[Union[str, Path]] = (),
    limit: Optional[int] = DEFAULT_ROW_LIMIT,
) -> tuple[list[str], list[tuple], bool]:
    """Run one read statement sealed and return (columns, rows, truncated)."""
    with stream(sql, db, read_paths=read_paths, limit=limit) as result:
        rows = [row for batch in result.batches for row in batch]
        return result.columns, rows, result.truncated
