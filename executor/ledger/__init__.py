"""tuneplan.executor.ledger: the run ledger, torch-free.

One DuckDB file holds every run's promise next to what it measured. This package is everything
that writes or reads it, and nothing that trains:

``connect``   where the database lives, the errors, writable vs read-only connections
``migrate``   numbered ``migrations/NNNN_*.sql`` (tables), ``macros.sql`` (the one place the plan
              JSON is read) and ``views.sql`` (every view, once), re-created on writable connect
``rows``      the columns of ``runs`` / ``metrics`` and a RunResult as those rows
``record``    a run's rows at start and end (+ parquet copies), comparison and sweep trials
``ingest``    the rows rebuilt from run directories alone (``tuneplan runs ingest``)
``query``     ``tuneplan runs`` (:func:`list_runs`) and ``tuneplan sql`` (:func:`query`)
``sqlsafe``   the sealed read-only connection ``tuneplan sql`` and the TUI use
``sqldocs``   ``tuneplan sql --schema``: a line for every table, view and column
``check``     ``tuneplan check``: did the advice hold, per run and per rule (reads the views)
``calibrate`` ``tuneplan calibrate``: estimator factors fitted on recorded runs
``report``    ``tuneplan report``: figures and Markdown from the views
``markdown``  the pull-request summaries of check and compare
``memory_compare``  the like-for-like memory comparison in Python, for runs not yet recorded
              (held equal to the run_memory_checks view by tests)

Read-only commands (check, runs, sql, report, calibrate's fit, the TUI) never write: they open the
file read-only, and an older schema is refused with a message naming ``tuneplan runs upgrade``.

Never imports torch, transformers, peft, bitsandbytes, accelerate or textual (an import-linter
contract in pyproject.toml). The names below are the old ``tuneplan.executor.store`` API.
"""

from .connect import (
    DBPath,
    ENV_DB,
    UPGRADE_COMMAND,
    DatabaseLocked,
    NoDatabase,
    QueryError,
    QueryRefused,
    SchemaOutdated,
    StoreError,
    connect,
    default_db_path,
    open_read,
)
from .ingest import find_run_dirs, ingest
from .migrate import (
    LEARNING_MATCH_SHARE,
    MEMORY_UNDER_PREDICTION_LIMIT,
    MIGRATIONS,
    SCHEMA_VERSION,
    create_views,
    migrate,
    outdated,
    schema_version,
)
from .query import LIST_KEYS, check_read_only_sql, list_runs, query
from .record import record, record_comparison
from .rows import METRIC_COLUMNS, RUN_COLUMNS, read_metrics_jsonl

__all__ = [
    "StoreError",
    "DatabaseLocked",
    "NoDatabase",
    "QueryError",
    "QueryRefused",
    "SchemaOutdated",
    "DBPath",
    "ENV_DB",
    "UPGRADE_COMMAND",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "RUN_COLUMNS",
    "METRIC_COLUMNS",
    "LIST_KEYS",
    "default_db_path",
    "connect",
    "open_read",
    "migrate",
    "create_views",
    "outdated",
    "schema_version",
    "record",
    "ingest",
    "find_run_dirs",
    "read_metrics_jsonl",
    "list_runs",
    "query",
    "check_read_only_sql",
    "record_comparison",
    "MEMORY_UNDER_PREDICTION_LIMIT",
    "LEARNING_MATCH_SHARE",
]
