"""The run store: one DuckDB file that holds every run's promise next to what it measured.

Layout
------
``runs``      one row per run (``run_id`` primary key): the plan (hash and JSON), predicted and
              measured peak memory by component, eval/probe losses before and after, throughput,
              artefact, substitutions, library versions.
``metrics``   one row per logged optimizer step (``run_id, step`` primary key).
``run_predictions``, ``run_learning``, ``method_summary``
              views for the obvious questions: how wrong was the memory prediction (signed
              relative error ``(predicted - measured) / measured``), how much did a run learn
              (``eval_loss_before - eval_loss_after``) and forget (``forgetting_loss_after -
              forgetting_loss_before``), and per method and model, on average.
``comparisons``
              ``(compare_id, run_id, method, chosen_method, forgetting_tolerance, created_at,
              axis, value, advised_value)``: the trials of ``tuneplan compare`` (axis "method")
              and ``tuneplan sweep`` (axis "learning_rate", "lora_rank", ...), each with the value
              it took and the advisor's value on that axis. ``sweep_trials`` joins them to runs.
``run_memory_checks``, ``comparison_runs``, ``audit_qlora_vs_lora_memory``,
``audit_lora_vs_full_forgetting``, ``audit_lora_vs_full_learning``, ``audit_memory_predictions``
              views that audit the advisor's rules across runs (docs/checks.md);
              ``run_memory_checks`` compares memory like-for-like, tensor bytes on both sides, as
              executor/memory_compare.py defines it (prediction less framework overhead vs
              measured peak less ``runtime_bytes``).
``schema_migrations``
              ``(version, applied_at)``: which entries of :data:`MIGRATIONS` have been applied.
              :func:`connect` applies the missing ones, each in its own transaction.

Never lose a run: the executor writes ``result.json`` (and ``metrics.jsonl``) into the run
directory before calling :func:`record`; when the database cannot be written (another process
holds DuckDB's single-writer lock, the disk is read-only) :func:`record` raises
:class:`StoreError` and ``tuneplan runs ingest RUN_DIR`` rebuilds the rows later from those
files alone (:func:`ingest`).

Pooling runs across people: :func:`record` also writes ``<run_dir>/run.parquet`` and
``<run_dir>/metrics.parquet`` once a run has finished, so
``SELECT * FROM read_parquet('runs/*/run.parquet')`` works without any shared database.

This module imports DuckDB, never torch.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Union

import duckdb

from tuneplan.schemas.run import RunResult

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

__all__ = [
    "StoreError",
    "DatabaseLocked",
    "NoDatabase",
    "QueryError",
    "QueryRefused",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "RUN_COLUMNS",
    "LIST_KEYS",
    "default_db_path",
    "connect",
    "migrate",
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

DBPath = Union[str, Path, None]

ENV_DB = "TUNEPLAN_DB"
"""Environment variable that overrides the default database path."""


# --------------------------------------------------------------------------------------------
# Errors


class StoreError(Exception):
    """The run store could not do what was asked; the message says why and what to do."""


class DatabaseLocked(StoreError):
    """Another process holds DuckDB's lock on the database file."""


class NoDatabase(StoreError):
    """A read was asked of a database file that does not exist yet (no runs recorded)."""


class QueryError(StoreError):
    """A query given to :func:`query` is invalid (syntax error, unknown table or column)."""


class QueryRefused(QueryError):
    """A statement given to :func:`query` could change something; only reads are allowed."""


# --------------------------------------------------------------------------------------------
# Schema and migrations

_V1_RUN_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR PRIMARY KEY"),
    ("plan_hash", "VARCHAR"),
    ("plan_json", "JSON"),
    ("method", "VARCHAR"),
    ("model", "VARCHAR"),
    ("hardware", "VARCHAR"),
    ("device_kind", "VARCHAR"),
    ("status", "VARCHAR NOT NULL"),
    ("error", "VARCHAR"),
    ("started_at", "TIMESTAMP"),
    ("finished_at", "TIMESTAMP"),
    ("predicted_peak_bytes", "BIGINT"),
    ("predicted_fits", "BOOLEAN"),
    ("measured_peak_bytes", "BIGINT"),
    ("params_bytes", "BIGINT"),
    ("grads_bytes", "BIGINT"),
    ("optimizer_bytes", "BIGINT"),
    ("saved_tensors_peak_bytes", "BIGINT"),
    ("cuda_max_allocated_bytes", "BIGINT"),
    ("cuda_max_reserved_bytes", "BIGINT"),
    ("rss_peak_bytes", "BIGINT"),
    ("eval_loss_before", "DOUBLE"),
    ("eval_loss_after", "DOUBLE"),
    ("forgetting_loss_before", "DOUBLE"),
    ("forgetting_loss_after", "DOUBLE"),
    ("forgetting_tolerance", "VARCHAR"),
    ("domain_distance", "VARCHAR"),
    ("steps", "BIGINT"),
    ("tokens", "BIGINT"),
    ("tokens_per_second", "DOUBLE"),
    ("wall_seconds", "DOUBLE"),
    ("trainable_params", "BIGINT"),
    ("total_params", "BIGINT"),
    ("artifact_path", "VARCHAR"),
    ("artifact_bytes", "BIGINT"),
    ("substitutions", "VARCHAR[]"),
    ("versions", "JSON"),
    ("trust_remote_code", "BOOLEAN"),
    ("num_processes", "INTEGER"),
    ("strategy", "VARCHAR"),
    ("run_dir", "VARCHAR"),
    ("data_path", "VARCHAR"),
    ("tuneplan_version", "VARCHAR"),
    ("result_json", "JSON"),
    ("recorded_at", "TIMESTAMP"),
]
"""Columns migration 1 created (frozen: later columns are added by later migrations)."""

RUN_COLUMNS: list[tuple[str, str]] = _V1_RUN_COLUMNS + [
    ("runtime_bytes", "BIGINT"),  # migration 4
]
"""Columns of ``runs`` in order. ``result_json`` keeps the whole result.json so nothing is lost
when the schema grows; ``recorded_at`` is when the row was last written (UTC);
``runtime_bytes`` is the part of ``measured_peak_bytes`` that is the process runtime (CPU: RSS
before the model loaded; 0 on CUDA), added by migration 4 at the end so new and upgraded
databases have the same column order."""

METRIC_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"),
    ("step", "BIGINT NOT NULL"),
    ("loss", "DOUBLE"),
    ("lr", "DOUBLE"),
    ("grad_norm", "DOUBLE"),
    ("tokens", "BIGINT"),
    ("elapsed_s", "DOUBLE"),
]
"""Columns of ``metrics`` in order; primary key (run_id, step)."""

_V1_TABLES = (
    "CREATE TABLE IF NOT EXISTS runs (\n    "
    + ",\n    ".join(f"{name} {kind}" for name, kind in _V1_RUN_COLUMNS)
    + "\n);\n"
    "CREATE TABLE IF NOT EXISTS metrics (\n    "
    + ",\n    ".join(f"{name} {kind}" for name, kind in METRIC_COLUMNS)
    + ",\n    PRIMARY KEY (run_id, step)\n);\n"
)

_V2_VIEWS = """
CREATE OR REPLACE VIEW run_predictions AS
SELECT
    run_id, method, model, status, device_kind, num_processes, strategy,
    predicted_peak_bytes, measured_peak_bytes, predicted_fits,
    predicted_peak_bytes - measured_peak_bytes AS error_bytes,
    CASE WHEN measured_peak_bytes > 0
         THEN (predicted_peak_bytes - measured_peak_bytes)::DOUBLE / measured_peak_bytes
    END AS relative_error
FROM runs;

CREATE OR REPLACE VIEW run_learning AS
SELECT
    run_id, method, model, status, domain_distance, forgetting_tolerance,
    eval_loss_before, eval_loss_after,
    eval_loss_before - eval_loss_after AS learning,
    forgetting_loss_before, forgetting_loss_after,
    forgetting_loss_after - forgetting_loss_before AS forgetting,
    steps, tokens
FROM runs;

CREATE OR REPLACE VIEW method_summary AS
SELECT
    r.method, r.model,
    count(*) AS runs,
    count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
    avg(p.relative_error) FILTER (WHERE r.status = 'succeeded') AS mean_memory_error,
    avg(abs(p.relative_error)) FILTER (WHERE r.status = 'succeeded') AS mean_abs_memory_error,
    avg(l.learning) FILTER (WHERE r.status = 'succeeded') AS mean_learning,
    avg(l.forgetting) FILTER (WHERE r.status = 'succeeded') AS mean_forgetting,
    avg(r.tokens_per_second) FILTER (WHERE r.status = 'succeeded') AS mean_tokens_per_second
FROM runs r
JOIN run_predictions p USING (run_id)
JOIN run_learning l USING (run_id)
GROUP BY r.method, r.model;
"""

MEMORY_UNDER_PREDICTION_LIMIT = 0.25
"""A run's memory promise is broken when the measured peak exceeds the like-for-like prediction
by more than this share of the measurement (like-for-like error below -0.25). Baked into the v3
and v4 views; docs/checks.md says why 25%."""

LEARNING_MATCH_SHARE = 0.8
"""QLoRA "matches" LoRA (TP023) when it learns at least this share of what LoRA learned."""

_OOM_PATTERN = r"(?i)(out ?of ?memory|OutOfMemoryError|MemoryError|can't allocate memory)"
"""What a failed run's error looks like when it ran out of memory (CUDA OOM, Python/CPU OOM)."""

_AUDIT_MEMORY_PREDICTIONS = f"""
CREATE OR REPLACE VIEW audit_memory_predictions AS
SELECT
    method, device_kind,
    count(*) AS runs,
    count(memory_error_comparable) AS measured_runs,
    count(*) FILTER (WHERE memory_error_comparable >= -{MEMORY_UNDER_PREDICTION_LIMIT}) AS within_threshold,
    count(*) FILTER (WHERE memory_error_comparable >= -{MEMORY_UNDER_PREDICTION_LIMIT})::DOUBLE
        / nullif(count(memory_error_comparable), 0) AS share_within_threshold,
    avg(memory_error_comparable) AS mean_memory_error_comparable,
    avg(abs(memory_error_comparable)) AS mean_abs_memory_error_comparable,
    count(*) FILTER (WHERE out_of_memory AND predicted_fits) AS oom_when_predicted_to_fit
FROM run_memory_checks
GROUP BY method, device_kind;
"""

_V3_COMPARISONS = f"""
CREATE TABLE IF NOT EXISTS comparisons (
    compare_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    chosen_method VARCHAR,
    forgetting_tolerance VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (compare_id, run_id)
);

CREATE OR REPLACE VIEW run_memory_checks AS
SELECT
    run_id, method, model, status, device_kind, predicted_fits,
    predicted_peak_bytes, measured_peak_bytes, predicted_overhead_bytes,
    predicted_peak_bytes - predicted_overhead_bytes AS predicted_comparable_bytes,
    CASE WHEN measured_peak_bytes > 0
         THEN (predicted_peak_bytes - measured_peak_bytes)::DOUBLE / measured_peak_bytes
    END AS memory_error,
    CASE WHEN measured_peak_bytes > 0
         THEN (predicted_peak_bytes - predicted_overhead_bytes - measured_peak_bytes)::DOUBLE
              / measured_peak_bytes
    END AS memory_error_comparable,
    coalesce(status = 'failed' AND regexp_matches(coalesce(error, ''), '{_OOM_PATTERN.replace("'", "''")}'),
             false) AS out_of_memory
FROM (
    SELECT *,
           coalesce(TRY_CAST(json_extract_string(plan_json, '$.memory.breakdown.framework_overhead')
                             AS BIGINT), 0) AS predicted_overhead_bytes
    FROM runs
);

CREATE OR REPLACE VIEW comparison_runs AS
SELECT
    c.compare_id, c.method, c.chosen_method, c.forgetting_tolerance, c.created_at,
    r.run_id, r.status, r.domain_distance, r.device_kind,
    r.predicted_peak_bytes, r.measured_peak_bytes,
    r.eval_loss_before - r.eval_loss_after AS learning,
    r.forgetting_loss_after - r.forgetting_loss_before AS forgetting
FROM comparisons c JOIN runs r USING (run_id);

CREATE OR REPLACE VIEW audit_qlora_vs_lora_memory AS
SELECT
    q.compare_id, q.domain_distance, l.run_id AS lora_run_id, q.run_id AS qlora_run_id,
    l.measured_peak_bytes AS lora_measured_bytes, q.measured_peak_bytes AS qlora_measured_bytes,
    l.learning AS lora_learning, q.learning AS qlora_learning,
    q.measured_peak_bytes < l.measured_peak_bytes AS qlora_less_memory,
    CASE WHEN l.learning > 0 THEN q.learning >= {LEARNING_MATCH_SHARE} * l.learning
         ELSE q.learning >= l.learning END AS qlora_learning_matches,
    (q.measured_peak_bytes < l.measured_peak_bytes)
      AND (CASE WHEN l.learning > 0 THEN q.learning >= {LEARNING_MATCH_SHARE} * l.learning
                ELSE q.learning >= l.learning END) AS holds
FROM comparison_runs q
JOIN comparison_runs l ON l.compare_id = q.compare_id AND l.method = 'lora'
WHERE q.method = 'qlora' AND q.status = 'succeeded' AND l.status = 'succeeded'
  AND q.measured_peak_bytes > 0 AND l.measured_peak_bytes > 0;

CREATE OR REPLACE VIEW audit_lora_vs_full_forgetting AS
SELECT
    a.compare_id, a.domain_distance, a.forgetting_tolerance, a.method AS adapter_method,
    a.run_id AS adapter_run_id, f.run_id AS full_run_id,
    a.forgetting AS adapter_forgetting, f.forgetting AS full_forgetting,
    a.forgetting <= f.forgetting AS lora_forgets_less
FROM comparison_runs a
JOIN comparison_runs f ON f.compare_id = a.compare_id AND f.method = 'full'
WHERE a.method IN ('lora', 'qlora') AND a.status = 'succeeded' AND f.status = 'succeeded'
  AND a.forgetting IS NOT NULL AND f.forgetting IS NOT NULL;

CREATE OR REPLACE VIEW audit_lora_vs_full_learning AS
SELECT
    a.compare_id, a.domain_distance, a.domain_distance = 'far' AS far_domain,
    a.method AS adapter_method, a.run_id AS adapter_run_id, f.run_id AS full_run_id,
    a.learning AS adapter_learning, f.learning AS full_learning,
    f.learning > a.learning AS full_learns_more
FROM comparison_runs a
JOIN comparison_runs f ON f.compare_id = a.compare_id AND f.method = 'full'
WHERE a.method IN ('lora', 'qlora') AND a.status = 'succeeded' AND f.status = 'succeeded'
  AND a.learning IS NOT NULL AND f.learning IS NOT NULL;

{_AUDIT_MEMORY_PREDICTIONS}"""


_V4_RUNTIME = f"""
ALTER TABLE runs ADD COLUMN IF NOT EXISTS runtime_bytes BIGINT;

UPDATE runs
SET runtime_bytes = coalesce(
        TRY_CAST(json_extract_string(result_json, '$.measured.runtime_bytes') AS BIGINT), 0)
WHERE runtime_bytes IS NULL AND measured_peak_bytes IS NOT NULL;

CREATE OR REPLACE VIEW run_memory_checks AS
SELECT
    run_id, method, model, status, device_kind, predicted_fits,
    predicted_peak_bytes, measured_peak_bytes, predicted_overhead_bytes, runtime_bytes,
    predicted_peak_bytes - predicted_overhead_bytes AS predicted_comparable_bytes,
    CASE WHEN measured_peak_bytes > 0
         THEN measured_peak_bytes - runtime_bytes
    END AS measured_comparable_bytes,
    CASE WHEN measured_peak_bytes > 0
         THEN (predicted_peak_bytes - measured_peak_bytes)::DOUBLE / measured_peak_bytes
    END AS memory_error,
    CASE WHEN measured_peak_bytes > 0 AND measured_peak_bytes - runtime_bytes > 0
         THEN (predicted_peak_bytes - predicted_overhead_bytes
               - (measured_peak_bytes - runtime_bytes))::DOUBLE
              / (measured_peak_bytes - runtime_bytes)
    END AS memory_error_comparable,
    coalesce(status = 'failed' AND regexp_matches(coalesce(error, ''), '{_OOM_PATTERN.replace("'", "''")}'),
             false) AS out_of_memory
FROM (
    SELECT * REPLACE (coalesce(runtime_bytes, 0) AS runtime_bytes),
           coalesce(TRY_CAST(json_extract_string(plan_json, '$.memory.breakdown.framework_overhead')
                             AS BIGINT), 0) AS predicted_overhead_bytes
    FROM runs
);
""" + _AUDIT_MEMORY_PREDICTIONS
"""Migration 4: ``runs.runtime_bytes`` (filled from result_json where a result recorded it, else 0
for measured runs) and ``run_memory_checks`` re-created like-for-like on both sides, as
executor/memory_compare.py defines it: predicted_comparable_bytes = predicted - framework
overhead, measured_comparable_bytes = measured - runtime_bytes, memory_error_comparable =
(predicted_comparable - measured_comparable) / measured_comparable. audit_memory_predictions is
re-created on top of it."""

def _plan_str(path: str) -> str:
    return f"json_extract_string(plan_json, '$.{path}')"


def _plan_num(path: str, kind: str) -> str:
    return f"TRY_CAST({_plan_str(path)} AS {kind})"


_V5_RUN_SETTINGS = f"""
CREATE OR REPLACE VIEW run_settings AS
SELECT
    run_id,
    {_plan_str('method')} AS planned_method,
    {_plan_str('inputs.model.name')} AS planned_model,
    {_plan_num('training.learning_rate', 'DOUBLE')} AS learning_rate,
    {_plan_str('training.lr_scheduler')} AS lr_scheduler,
    {_plan_num('training.warmup_ratio', 'DOUBLE')} AS warmup_ratio,
    {_plan_num('training.num_epochs', 'DOUBLE')} AS num_epochs,
    {_plan_num('training.max_steps', 'BIGINT')} AS max_steps,
    {_plan_num('lora.rank', 'INTEGER')} AS lora_rank,
    {_plan_num('lora.alpha', 'DOUBLE')} AS lora_alpha,
    {_plan_num('lora.dropout', 'DOUBLE')} AS lora_dropout,
    from_json(json_extract(plan_json, '$.lora.target_modules'), '["VARCHAR"]') AS target_modules,
    {_plan_num('lora.use_rslora', 'BOOLEAN')} AS use_rslora,
    {_plan_str('quantization.quant_type')} AS quant_type,
    {_plan_num('training.seq_len', 'INTEGER')} AS seq_len,
    {_plan_num('training.per_device_batch_size', 'INTEGER')} AS per_device_batch_size,
    {_plan_num('training.gradient_accumulation_steps', 'INTEGER')} AS gradient_accumulation_steps,
    {_plan_num('training.per_device_batch_size', 'BIGINT')}
        * {_plan_num('training.gradient_accumulation_steps', 'BIGINT')}
        * coalesce({_plan_num('distributed.num_processes', 'BIGINT')}, 1) AS effective_batch,
    {_plan_str('training.precision')} AS precision,
    {_plan_str('training.optimizer')} AS optimizer,
    {_plan_num('training.weight_decay', 'DOUBLE')} AS weight_decay,
    {_plan_num('training.max_grad_norm', 'DOUBLE')} AS max_grad_norm,
    {_plan_num('training.gradient_checkpointing', 'BOOLEAN')} AS gradient_checkpointing,
    {_plan_str('training.attention')} AS attention,
    {_plan_num('training.seed', 'BIGINT')} AS seed,
    {_plan_str('distributed.strategy')} AS planned_strategy,
    {_plan_num('distributed.num_processes', 'INTEGER')} AS planned_processes,
    {_plan_num('distributed.num_nodes', 'INTEGER')} AS planned_nodes,
    {_plan_str('inputs.hardware.kind')} AS planned_hardware_kind,
    {_plan_str('inputs.hardware.name')} AS planned_gpu,
    {_plan_num('inputs.hardware.memory_bytes', 'BIGINT')} AS planned_device_memory_bytes,
    {_plan_str('inputs.task.domain_label')} AS domain_label
FROM runs;
"""
"""Migration 5: ``run_settings``, the training settings of each run's plan as typed columns (no
more ``plan_json->>'$...'``). Its columns carry no name of another view's, other than run_id
(plan-side names are prefixed planned_), so ``JOIN run_settings USING (run_id)`` with any view
never makes a column ambiguous."""


_V6_SWEEPS = """
ALTER TABLE comparisons ADD COLUMN axis VARCHAR DEFAULT 'method';
ALTER TABLE comparisons ADD COLUMN value VARCHAR;
ALTER TABLE comparisons ADD COLUMN advised_value VARCHAR;
UPDATE comparisons SET axis = 'method', value = method, advised_value = chosen_method
WHERE value IS NULL;

CREATE OR REPLACE VIEW sweep_trials AS
SELECT
    c.compare_id, c.axis, c.value, c.advised_value, c.method, c.chosen_method,
    c.forgetting_tolerance, c.created_at,
    r.run_id, r.status, r.model, r.domain_distance, r.device_kind,
    TRY_CAST(json_extract_string(r.plan_json, '$.training.learning_rate') AS DOUBLE) AS learning_rate,
    TRY_CAST(json_extract_string(r.plan_json, '$.lora.rank') AS INTEGER) AS lora_rank,
    r.eval_loss_before, r.eval_loss_after,
    r.eval_loss_before - r.eval_loss_after AS learning,
    r.forgetting_loss_after - r.forgetting_loss_before AS forgetting,
    r.measured_peak_bytes, r.tokens_per_second, r.wall_seconds
FROM comparisons c JOIN runs r USING (run_id);

CREATE OR REPLACE VIEW audit_learning_rate AS
WITH ranked AS (
    SELECT *, row_number() OVER (PARTITION BY compare_id ORDER BY eval_loss_after) AS k
    FROM sweep_trials
    WHERE axis = 'learning_rate' AND status = 'succeeded' AND eval_loss_after IS NOT NULL
)
SELECT
    compare_id, model, count(*) AS trials,
    TRY_CAST(any_value(advised_value) AS DOUBLE) AS advised_learning_rate,
    max(learning_rate) FILTER (WHERE k = 1) AS best_learning_rate,
    min(eval_loss_after) AS best_eval_loss,
    max(learning_rate) FILTER (WHERE k = 1) / TRY_CAST(any_value(advised_value) AS DOUBLE) AS ratio,
    max(learning_rate) FILTER (WHERE k = 1) / TRY_CAST(any_value(advised_value) AS DOUBLE)
        BETWEEN 0.5 AND 2.0 AS within_2x
FROM ranked
GROUP BY compare_id, model
HAVING count(*) >= 2;
"""
"""Migration 6: comparisons generalised to sweeps, upgraded in place: each trial's ``axis``
("method", "learning_rate", "lora_rank", "target_modules", or several joined by ",") and its
``value``, and the advisor's ``advised_value`` on that axis; old rows become axis "method" with
value = method and advised_value = chosen_method. ``sweep_trials`` joins every trial to its run
(learning rate and rank read from the plan); ``audit_learning_rate`` (tuneplan check --rules,
TP040) compares, per learning-rate sweep, the best trial's rate with the advised one."""


Migration = tuple[int, str, Union[str, Callable[["DuckDBPyConnection"], None]]]

MIGRATIONS: list[Migration] = [
    (1, "runs and metrics tables", _V1_TABLES),
    (2, "run_predictions, run_learning and method_summary views "
        "(means over succeeded runs)", _V2_VIEWS),
    (3, "comparisons table; run_memory_checks, comparison_runs and audit_* views "
        "(tuneplan compare / check)", _V3_COMPARISONS),
    (4, "runs.runtime_bytes; run_memory_checks like-for-like on both sides (measured less "
        "runtime_bytes) and audit_memory_predictions re-created", _V4_RUNTIME),
    (5, "run_settings view: each run's planned training settings as typed columns", _V5_RUN_SETTINGS),
    (6, "comparisons generalised to sweeps (axis, value, advised_value); sweep_trials and "
        "audit_learning_rate views (tuneplan sweep / check --rules)", _V6_SWEEPS),
]
"""Ordered migrations: (version, description, SQL script or function of a connection).
Append only; never edit an applied one."""

SCHEMA_VERSION = MIGRATIONS[-1][0]
"""The schema version this code writes."""

LIST_KEYS: list[str] = [
    "run_id", "status", "method", "model", "hardware", "device_kind", "num_processes",
    "strategy", "started_at", "finished_at", "predicted_peak_bytes", "predicted_fits",
    "measured_peak_bytes", "memory_error", "eval_loss_before", "eval_loss_after", "learning",
    "forgetting_loss_before", "forgetting_loss_after", "forgetting", "steps", "tokens",
    "tokens_per_second", "wall_seconds", "run_dir", "error",
    "predicted_overhead_bytes", "runtime_bytes", "memory_error_comparable",
]
"""Keys of each dict :func:`list_runs` returns. ``memory_error`` is the signed relative error
(predicted - measured) / measured; ``memory_error_comparable`` the like-for-like one of
executor/memory_compare.py (prediction less ``predicted_overhead_bytes``, the plan's framework
overhead, against the measurement less ``runtime_bytes``); ``learning`` and ``forgetting`` as in
the views."""


def default_db_path() -> Path:
    """The database used when none is given: ``$TUNEPLAN_DB``, else ``./.tuneplan/runs.duckdb``
    relative to the current directory."""
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser()
    return Path.cwd() / ".tuneplan" / "runs.duckdb"


def _resolve(db: DBPath) -> Path:
    return default_db_path() if db is None or str(db) == "" else Path(db).expanduser()


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


def connect(db: DBPath = None, *, read_only: bool = False) -> "DuckDBPyConnection":
    """Open the run database (default :func:`default_db_path`).

    Writable connections create the parent directory and apply missing migrations.
    Read-only connections change nothing; a missing file raises :class:`NoDatabase`.
    A file locked by another process raises :class:`DatabaseLocked`; other failures
    :class:`StoreError`.
    """
    if db is not None and str(db) == ":memory:":
        con = duckdb.connect(":memory:")
        if not read_only:
            migrate(con)
        return con
    path = _resolve(db)
    if read_only:
        if not path.exists():
            raise NoDatabase(
                f"no runs yet: the run database {path} does not exist. Record runs with "
                f"`tuneplan run PLAN` or rebuild them with `tuneplan runs ingest RUN_DIR`, or "
                f"point --db / ${ENV_DB} at an existing database."
            )
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


def schema_version(con: "DuckDBPyConnection") -> int:
    """The highest applied migration version (0 for an empty database)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_migrations' AND table_schema = 'main'"
    ).fetchone()[0]
    if not exists:
        return 0
    value = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return int(value or 0)


def migrate(con: "DuckDBPyConnection", target: int | None = None) -> list[int]:
    """Apply the migrations of :data:`MIGRATIONS` not yet recorded in ``schema_migrations``
    (up to ``target`` when given), each in one transaction. Returns the versions applied;
    an up-to-date database is left untouched."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied: list[int] = []
    for version, description, step in MIGRATIONS:
        if version in done or (target is not None and version > target):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            if callable(step):
                step(con)
            else:
                con.execute(step)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?)", [version, _utcnow()]
            )
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise StoreError(
                f"run database migration {version} ({description}) failed: {exc}"
            ) from exc
        applied.append(version)
    return applied


# --------------------------------------------------------------------------------------------
# Rows


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _timestamp(text: str | None) -> datetime | None:
    """ISO-8601 text -> naive UTC datetime (None when absent or unparsable; the original text
    stays in result_json)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _read_plan_json(run_dir: Path) -> str | None:
    """The run directory's plan.json as compact JSON text, or None if missing or unreadable."""
    path = run_dir / "plan.json"
    try:
        return json.dumps(json.loads(path.read_text(encoding="utf-8")), separators=(",", ":"))
    except (OSError, ValueError):
        return None


def _row(result: RunResult, plan_json: str | None, run_dir: str | None = None) -> dict[str, Any]:
    """The ``runs`` row for a result, as a column -> value dict in RUN_COLUMNS order."""
    m = result.measured
    tuneplan_version = result.versions.get("tuneplan")
    if tuneplan_version is None and plan_json:
        try:
            tuneplan_version = json.loads(plan_json).get("tuneplan_version")
        except (ValueError, AttributeError):
            tuneplan_version = None
    row = {
        "run_id": result.run_id,
        "plan_hash": result.plan_hash,
        "plan_json": plan_json,
        "method": result.method,
        "model": result.model,
        "hardware": result.hardware,
        "device_kind": m.device_kind if m else None,
        "status": result.status,
        "error": result.error,
        "started_at": _timestamp(result.started_at),
        "finished_at": _timestamp(result.finished_at),
        "predicted_peak_bytes": result.predicted_peak_bytes,
        "predicted_fits": result.predicted_fits,
        "measured_peak_bytes": m.peak_bytes if m else None,
        "params_bytes": m.params_bytes if m else None,
        "grads_bytes": m.grads_bytes if m else None,
        "optimizer_bytes": m.optimizer_bytes if m else None,
        "saved_tensors_peak_bytes": m.saved_tensors_peak_bytes if m else None,
        "cuda_max_allocated_bytes": m.cuda_max_allocated_bytes if m else None,
        "cuda_max_reserved_bytes": m.cuda_max_reserved_bytes if m else None,
        "rss_peak_bytes": m.rss_peak_bytes if m else None,
        "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
        "forgetting_loss_before": result.forgetting_loss_before,
        "forgetting_loss_after": result.forgetting_loss_after,
        "forgetting_tolerance": result.forgetting_tolerance,
        "domain_distance": result.domain_distance,
        "steps": result.steps,
        "tokens": result.tokens,
        "tokens_per_second": result.tokens_per_second,
        "wall_seconds": result.wall_seconds,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "artifact_path": result.artifact_path,
        "artifact_bytes": result.artifact_bytes,
        "substitutions": list(result.substitutions),
        "versions": json.dumps(result.versions, sort_keys=True),
        "trust_remote_code": result.trust_remote_code,
        "num_processes": result.num_processes,
        "strategy": result.strategy,
        "run_dir": run_dir if run_dir is not None else result.run_dir,
        "data_path": result.data_path,
        "tuneplan_version": tuneplan_version,
        "result_json": result.model_dump_json(),
        "recorded_at": _utcnow(),
        "runtime_bytes": m.runtime_bytes if m else None,
    }
    assert list(row) == [c for c, _ in RUN_COLUMNS]
    return row


_CASTS = {name: kind.split()[0] for name, kind in RUN_COLUMNS}
_UPSERT_SQL = (
    "INSERT INTO runs ("
    + ", ".join(c for c, _ in RUN_COLUMNS)
    + ") VALUES ("
    + ", ".join(f"?::{_CASTS[c]}" for c, _ in RUN_COLUMNS)
    + ") ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(
        # A later write without plan.json must not erase the plan recorded at run start.
        f"{c} = coalesce(excluded.{c}, runs.{c})" if c == "plan_json" else f"{c} = excluded.{c}"
        for c, _ in RUN_COLUMNS
        if c != "run_id"
    )
)


def _upsert_run(con: "DuckDBPyConnection", row: dict[str, Any]) -> None:
    con.execute(_UPSERT_SQL, list(row.values()))


def _num(value: Any, kind: type) -> Any:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if kind is int and isinstance(value, float) and not math.isfinite(value):
        return None
    return number


def _metric_columns(metrics: Iterable[dict]) -> list[list[Any]]:
    """Metrics dicts -> column lists (step, loss, lr, grad_norm, tokens, elapsed_s).
    Rows without an integer step are skipped; a repeated step keeps its last row."""
    by_step: dict[int, dict] = {}
    for item in metrics:
        if not isinstance(item, dict):
            continue
        step = item.get("step")
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        by_step[step] = item
    steps = sorted(by_step)
    return [
        steps,
        [_num(by_step[s].get("loss"), float) for s in steps],
        [_num(by_step[s].get("lr"), float) for s in steps],
        [_num(by_step[s].get("grad_norm"), float) for s in steps],
        [_num(by_step[s].get("tokens"), int) for s in steps],
        [_num(by_step[s].get("elapsed_s"), float) for s in steps],
    ]


def _replace_metrics(con: "DuckDBPyConnection", run_id: str, metrics: Iterable[dict]) -> int:
    cols = _metric_columns(metrics)
    con.execute("DELETE FROM metrics WHERE run_id = ?", [run_id])
    if not cols[0]:
        return 0
    con.execute(
        "INSERT INTO metrics SELECT ?, unnest(?::BIGINT[]), unnest(?::DOUBLE[]), "
        "unnest(?::DOUBLE[]), unnest(?::DOUBLE[]), unnest(?::BIGINT[]), unnest(?::DOUBLE[])",
        [run_id, *cols],
    )
    return len(cols[0])


def read_metrics_jsonl(path: str | Path) -> list[dict]:
    """Read a metrics.jsonl file: one JSON object per line. Blank and unparsable lines (such as
    a last line cut short by a killed process) are skipped; a missing file gives []."""
    out: list[dict] = []
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    with handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
    return out


# --------------------------------------------------------------------------------------------
# Parquet


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _copy_parquet(con: "DuckDBPyConnection", select_sql: str, target: Path) -> None:
    """COPY a query to a parquet file atomically (write a temporary file, then rename)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        con.execute(f"COPY ({select_sql}) TO {_sql_literal(str(tmp))} (FORMAT parquet)")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_parquet(con: "DuckDBPyConnection", run_id: str, run_dir: Path) -> None:
    rid = _sql_literal(run_id)
    try:
        _copy_parquet(con, f"SELECT * FROM runs WHERE run_id = {rid}", run_dir / "run.parquet")
        _copy_parquet(
            con,
            f"SELECT * FROM metrics WHERE run_id = {rid} ORDER BY step",
            run_dir / "metrics.parquet",
        )
    except (duckdb.Error, OSError) as exc:
        raise StoreError(
            f"run {run_id} is in the database, but writing {run_dir}/run.parquet or "
            f"metrics.parquet failed: {exc}"
        ) from exc


def _write_parquet_standalone(row: dict[str, Any], metrics: list[dict] | None,
                              run_dir: Path) -> None:
    """Write the parquet files from an in-memory database (used when the real one is locked),
    so the run can still be pooled with read_parquet."""
    if metrics is None:
        metrics = read_metrics_jsonl(run_dir / "metrics.jsonl")
    con = connect(":memory:")
    try:
        _upsert_run(con, row)
        _replace_metrics(con, row["run_id"], metrics)
        _write_parquet(con, row["run_id"], run_dir)
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Public writes


def record(db: DBPath, result: RunResult, metrics: list[dict] | None = None) -> None:
    """Insert or update the ``runs`` row of ``result`` (keyed by run_id).

    Called at run start (status "running") and at the end. When ``metrics`` is given (dicts with
    step, loss, lr, grad_norm, tokens, elapsed_s) the run's ``metrics`` rows are replaced by
    them. The plan JSON is read from ``<run_dir>/plan.json`` when present. Once the run has
    ended (status other than "running") and its directory exists, ``run.parquet`` and
    ``metrics.parquet`` are written into it.

    Raises :class:`DatabaseLocked` (a :class:`StoreError`) when another process holds the
    database, :class:`StoreError` when it cannot be written; the parquet files are still
    written in that case, and ``tuneplan runs ingest RUN_DIR`` rebuilds the row later.
    """
    run_dir = Path(result.run_dir)
    row = _row(result, _read_plan_json(run_dir))
    final = result.status != "running" and run_dir.is_dir()
    try:
        con = connect(db)
    except StoreError:
        if final:
            try:
                _write_parquet_standalone(row, metrics, run_dir)
            except StoreError:
                pass  # the database error is the one to report
        raise
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            _upsert_run(con, row)
            if metrics is not None:
                _replace_metrics(con, result.run_id, metrics)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise StoreError(
                f"could not record run {result.run_id} in {_resolve(db)}: {_reason(exc)}. The run "
                f"directory {run_dir} keeps result.json; `tuneplan runs ingest {run_dir}` "
                f"rebuilds the row."
            ) from exc
        if final:
            try:
                _write_parquet(con, result.run_id, run_dir)
            except StoreError as exc:  # the row is in; the parquet copies are a convenience
                print(f"warning: {exc}", file=sys.stderr)
    finally:
        try:
            con.close()
        except duckdb.Error:
            pass


def _rollback(con: "DuckDBPyConnection") -> None:
    """ROLLBACK, ignoring a failure (a full disk can fail it too; the first error is the one to
    report)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _reason(exc: BaseException) -> str:
    """A database error as text, saying "no space left on device" when that is the cause."""
    text = str(exc)
    if "no space left" in text.lower() or getattr(exc, "errno", None) == 28:
        return f"no space left on device ({text.splitlines()[0] if text else exc!r})"
    return text


def record_comparison(db: DBPath, compare_id: str, run_id: str, method: str,
                      chosen_method: str | None, forgetting_tolerance: str | None, *,
                      axis: str = "method", value: str | None = None,
                      advised_value: str | None = None) -> None:
    """Record that ``run_id`` was one trial of comparison or sweep ``compare_id``: on ``axis``
    ("method" for ``tuneplan compare``; "learning_rate", "lora_rank", ... for ``tuneplan
    sweep``) it took ``value`` (default: the method) where the advisor advised ``advised_value``
    (default: ``chosen_method``), next to the user's forgetting tolerance. Recording the same pair
    again updates it. Raises :class:`StoreError` (or :class:`DatabaseLocked`) when it cannot
    write."""
    if value is None:
        value = method
    if advised_value is None and axis == "method":
        advised_value = chosen_method
    con = connect(db)
    try:
        try:
            con.execute(
                "INSERT INTO comparisons (compare_id, run_id, method, chosen_method, "
                "forgetting_tolerance, created_at, axis, value, advised_value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (compare_id, run_id) DO UPDATE SET method = excluded.method, "
                "chosen_method = excluded.chosen_method, "
                "forgetting_tolerance = excluded.forgetting_tolerance, axis = excluded.axis, "
                "value = excluded.value, advised_value = excluded.advised_value",
                [compare_id, run_id, method, chosen_method, forgetting_tolerance, _utcnow(),
                 axis, value, advised_value],
            )
        except duckdb.Error as exc:
            raise StoreError(
                f"could not record comparison {compare_id} (run {run_id}) in {_resolve(db)}: {exc}"
            ) from exc
    finally:
        con.close()


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (those holding result.json) under the given paths: a run directory
    itself, its result.json, or any parent directory searched recursively. Sorted and
    de-duplicated. Raises InputError naming every path that does not exist or holds no run."""
    from tuneplan.base.errors import InputError

    dirs, problems = _find_run_dirs(paths)
    if problems:
        raise InputError(problems)
    return dirs


def _find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list]:
    from tuneplan.base.errors import Problem

    found: dict[Path, None] = {}
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            problems.append(Problem(str(raw), "no such file or directory",
                                    "give a run directory or a directory that contains runs"))
            continue
        if path.is_file():
            if path.name == "result.json":
                found[path.parent.resolve()] = None
            else:
                problems.append(Problem(str(raw), "not a run directory or result.json",
                                        "give the run directory that holds result.json"))
            continue
        hits = sorted(p.parent.resolve() for p in path.rglob("result.json") if p.is_file())
        if not hits:
            problems.append(Problem(str(raw), "no result.json found in or below this directory",
                                    "give a directory written by `tuneplan run`"))
        for hit in hits:
            found[hit] = None
    return sorted(found), problems


def ingest(db: DBPath, paths: list[str | Path], *, notes: list[str] | None = None) -> list[str]:
    """Rebuild ``runs`` and ``metrics`` rows from run directories alone (result.json,
    metrics.jsonl and plan.json), replacing any existing rows of the same run_ids.

    ``paths`` may be run directories, result.json files, or parent directories (searched
    recursively). Every result.json is validated first; any problem raises InputError naming
    each bad path and nothing is written. The row's run_dir is where the files were found.
    Returns the ingested run_ids in directory order.

    A run whose result.json still says "running" but whose process is gone (``process.json``:
    the pid no longer exists or was reused; executor/owner.py) is recorded as "interrupted"
    with the metrics it wrote, and its result.json is rewritten to match. One whose process is
    alive, or cannot be checked (another host), stays "running"; ``notes`` (when given)
    receives a line for each such decision.
    """
    from pydantic import ValidationError

    from tuneplan.base.errors import InputError, Problem, pydantic_problems

    dirs, problems = _find_run_dirs(paths)
    loaded: list[tuple[Path, RunResult]] = []
    for run_dir in dirs:
        path = run_dir / "result.json"
        try:
            loaded.append((run_dir, RunResult.model_validate_json(path.read_text("utf-8"))))
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, prefix=f"{path}:"))
        except (OSError, ValueError) as exc:
            problems.append(Problem(str(path), f"cannot read: {exc}",
                                    "restore the file or leave this directory out"))
    if problems:
        raise InputError(problems)
    for i, (run_dir, result) in enumerate(loaded):
        if result.status == "running":
            loaded[i] = (run_dir, _settle_running(run_dir, result, notes))

    con = connect(db)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            for run_dir, result in loaded:
                _upsert_run(con, _row(result, _read_plan_json(run_dir), run_dir=str(run_dir)))
                _replace_metrics(con, result.run_id, read_metrics_jsonl(run_dir / "metrics.jsonl"))
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise StoreError(f"ingest into {_resolve(db)} failed, nothing written: {_reason(exc)}") from exc
    finally:
        con.close()
    return [result.run_id for _, result in loaded]


def _settle_running(run_dir: Path, result: RunResult, notes: list[str] | None) -> RunResult:
    """A "running" result whose process is gone becomes "interrupted" (lost), with its metrics."""
    from tuneplan.base.fileio import write_text_atomic

    from . import owner

    is_gone, why = owner.gone(run_dir)
    if not is_gone:
        if notes is not None:
            notes.append(f"{result.run_id}: left as running ({why})")
        return result
    metrics = read_metrics_jsonl(run_dir / "metrics.jsonl")
    lost = result.model_copy(deep=True)
    lost.status = "interrupted"
    lost.error = (f"lost: {why} (killed, e.g. SIGKILL or the out-of-memory killer, or crashed) "
                  f"after {len(metrics)} steps; recorded by `tuneplan runs ingest` from the metrics so far")
    lost.steps = len(metrics)
    lost.tokens = int(sum(int(m.get("tokens") or 0) for m in metrics))
    last = metrics[-1].get("elapsed_s") if metrics else None
    if last and lost.tokens:
        lost.tokens_per_second = lost.tokens / float(last)
    mfile = run_dir / "metrics.jsonl"
    ended = mfile.stat().st_mtime if mfile.exists() else (run_dir / "result.json").stat().st_mtime
    lost.finished_at = datetime.fromtimestamp(ended, timezone.utc).isoformat(timespec="seconds")
    try:
        write_text_atomic(run_dir / "result.json", lost.model_dump_json(indent=2), fsync=True)
    except OSError as exc:
        if notes is not None:
            notes.append(f"{result.run_id}: could not rewrite result.json ({exc}); the row says interrupted")
    if notes is not None:
        notes.append(f"{result.run_id}: recorded as interrupted (lost: {why}), {len(metrics)} steps")
    return lost


# --------------------------------------------------------------------------------------------
# Public reads


def list_runs(db: DBPath = None, *, limit: int | None = None) -> list[dict]:
    """Runs newest first (by started_at, then run_id), as dicts with the keys of
    :data:`LIST_KEYS`. Timestamps are ISO-8601 strings (UTC). A missing database raises
    :class:`NoDatabase`."""
    from .memory_compare import like_for_like

    con = connect(db, read_only=True)
    try:
        has_runtime = con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main' "
            "AND table_name = 'runs' AND column_name = 'runtime_bytes'").fetchone()[0] > 0
        runtime = "coalesce(runtime_bytes, 0)" if has_runtime else "0"  # older than migration 4
        sql = f"""
            SELECT run_id, status, method, model, hardware, device_kind, num_processes,
                   strategy, started_at, finished_at, predicted_peak_bytes, predicted_fits,
                   measured_peak_bytes,
                   CASE WHEN measured_peak_bytes > 0 THEN
                        (predicted_peak_bytes - measured_peak_bytes)::DOUBLE / measured_peak_bytes
                   END AS memory_error,
                   eval_loss_before, eval_loss_after,
                   eval_loss_before - eval_loss_after AS learning,
                   forgetting_loss_before, forgetting_loss_after,
                   forgetting_loss_after - forgetting_loss_before AS forgetting,
                   steps, tokens, tokens_per_second, wall_seconds, run_dir, error,
                   coalesce(TRY_CAST(json_extract_string(
                       plan_json, '$.memory.breakdown.framework_overhead') AS BIGINT), 0)
                       AS predicted_overhead_bytes,
                   CASE WHEN measured_peak_bytes IS NOT NULL THEN {runtime} END AS runtime_bytes
            FROM runs
            ORDER BY started_at DESC NULLS LAST, run_id DESC
        """
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
        item["memory_error_comparable"] = like_for_like(
            item["predicted_peak_bytes"], item["predicted_overhead_bytes"],
            item["measured_peak_bytes"], item["runtime_bytes"]).error
        out.append(item)
    return out


def check_read_only_sql(sql: str) -> None:
    """Refuse anything but one read statement (executor/sqlsafe.py's
    :func:`~tuneplan.executor.sqlsafe.check_statement`, built on DuckDB's parser)."""
    from tuneplan.executor.sqlsafe import check_statement

    check_statement(sql)


def query(db: DBPath, sql: str, *, read_paths: Iterable[str | Path] = (),
          limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only SQL statement against the run database and return (column names,
    rows), on executor/sqlsafe.py's sealed connection: the statement is checked with DuckDB's
    parser, the database is opened read-only with external access off (only ``read_paths``
    readable), extensions never loaded and the configuration locked — a write or a reach
    outside raises :class:`QueryRefused` and changes nothing. ``limit`` caps the rows (default:
    none). A missing database raises :class:`NoDatabase`; bad SQL :class:`QueryError`."""
    from tuneplan.executor.sqlsafe import fetch

    columns, rows, _ = fetch(sql, db, read_paths=tuple(read_paths), limit=limit)
    return columns, rows
