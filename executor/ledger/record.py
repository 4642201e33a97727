"""Writing runs into the ledger: :func:`record` (a run's row at start and end, its metrics, and
the ``run.parquet`` / ``metrics.parquet`` copies in its run directory) and
:func:`record_comparison` (one trial of ``tuneplan compare`` or ``tuneplan sweep``).

Never lose a run: the executor writes ``result.json`` (and ``metrics.jsonl``) into the run
directory before calling :func:`record`; when the database cannot be written (another process
holds DuckDB's single-writer lock, the disk is read-only) :func:`record` raises
:class:`StoreError` and ``tuneplan runs ingest RUN_DIR`` rebuilds the rows later from those
files alone (ingest.py).

Pooling runs across people: the parquet copies make ``SELECT * FROM
read_parquet('runs/*/run.parquet')`` work without any shared database.

DuckDB only; never imports torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from tuneplan.schemas.run import RunResult

from .connect import DBPath, StoreError, _reason, _resolve, connect
from .rows import (
    _read_plan_json,
    compact_plan_json,
    _replace_metrics,
    _row,
    _upsert_run,
    _utcnow,
    read_metrics_jsonl,
)

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

__all__ = ["record", "record_comparison"]


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


def _write_parquet_standalone(row: dict[str, Any], metrics: list[dict] | None, run_dir: Path) -> None:
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


def record(
    db: DBPath, result: RunResult, metrics: list[dict] | None = None, *, plan_text: str | None = None
) -> None:
    """Insert or update the ``runs`` row of ``result`` (keyed by run_id).

    Called at run start (status "running") and at the end. When ``metrics`` is given (dicts with
    step, loss, lr, grad_norm, tokens, elapsed_s) the run's ``metrics`` rows are replaced by
    them. The plan JSON is ``plan_text`` (the run directory's plan.json as the caller wrote it, so a
    run never reads its plan file again) or else read from ``<run_dir>/plan.json`` when present
    (`runs ingest`, the launcher of a multi-process run). Once the run has
    ended (status other than "running") and its directory exists, ``run.parquet`` and
    ``metrics.parquet`` are written into it.

    Raises :class:`DatabaseLocked` (a :class:`StoreError`) when another process holds the
    database, :class:`StoreError` when it cannot be written; the parquet files are still
    written in that case, and ``tuneplan runs ingest RUN_DIR`` rebuilds the row later.
    """
    run_dir = Path(result.run_dir)
    row = _row(result, compact_plan_json(plan_text) if plan_text is not None else _read_plan_json(run_dir))
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


TRIAL_FILE = "trial.json"
"""Written into a run directory that is one trial of a comparison or sweep: its comparisons row,
so ``tuneplan runs ingest`` of pooled run directories brings the comparisons back."""

_COMPARISON_SQL = (
    "INSERT INTO comparisons (compare_id, run_id, method, chosen_method, "
    "forgetting_tolerance, created_at, axis, value, advised_value) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (compare_id, run_id) DO UPDATE SET method = excluded.method, "
    "chosen_method = excluded.chosen_method, "
    "forgetting_tolerance = excluded.forgetting_tolerance, axis = excluded.axis, "
    "value = excluded.value, advised_value = excluded.advised_value"
)
_COMPARISON_KEYS = (
    "compare_id",
    "run_id",
    "method",
    "chosen_method",
    "forgetting_tolerance",
    "created_at",
    "axis",
    "value",
    "advised_value",
)


def _upsert_comparison(con: "DuckDBPyConnection", row: dict[str, Any]) -> None:
    con.execute(_COMPARISON_SQL, [row[k] for k in _COMPARISON_KEYS])


def record_comparison(
    db: DBPath,
    compare_id: str,
    run_id: str,
    method: str,
    chosen_method: str | None,
    forgetting_tolerance: str | None,
    *,
    axis: str = "method",
    value: str | None = None,
    advised_value: str | None = None,
    run_dir: str | Path | None = None,
) -> None:
    """Record that ``run_id`` was one trial of comparison or sweep ``compare_id``: on ``axis``
    ("method" for ``tuneplan compare``; "learning_rate", "lora_rank", ... for ``tuneplan
    sweep``) it took ``value`` (default: the method) where the advisor advised ``advised_value``
    (default: ``chosen_method``), next to the user's forgetting tolerance. Recording the same pair
    again updates it. ``run_dir`` (default: the run's recorded run_dir, when the database has
    it) also gets the row as ``trial.json`` first, so ``tuneplan runs ingest`` can rebuild it.
    Raises :class:`StoreError` (or :class:`DatabaseLocked`) when it cannot write the database."""
    if value is None:
        value = method
    if advised_value is None and axis == "method":
        advised_value = chosen_method
    row = {
        "compare_id": compare_id,
        "run_id": run_id,
        "method": method,
        "chosen_method": chosen_method,
        "forgetting_tolerance": forgetting_tolerance,
        "created_at": _utcnow(),
        "axis": axis,
        "value": value,
        "advised_value": advised_value,
    }
    if run_dir is not None:
        _write_trial(Path(run_dir), row)
    con = connect(db)
    try:
        if run_dir is None:
            found = con.execute("SELECT run_dir FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if found and found[0] and Path(found[0]).is_dir():
                _write_trial(Path(found[0]), row)
        try:
            _upsert_comparison(con, row)
        except duckdb.Error as exc:
            raise StoreError(
                f"could not record comparison {compare_id} (run {run_id}) in {_resolve(db)}: {exc}"
            ) from exc
    finally:
        con.close()


def _write_trial(run_dir: Path, row: dict[str, Any]) -> None:
    """<run_dir>/trial.json (a convenience for ingest: a failure is a warning, not an error)."""
    from tuneplan.base.fileio import write_text_atomic

    item = {k: (v.isoformat() + "Z" if k == "created_at" else v) for k, v in row.items()}
    try:
        write_text_atomic(run_dir / TRIAL_FILE, json.dumps(item, indent=2) + "\n")
    except OSError as exc:
        print(f"warning: could not write {run_dir / TRIAL_FILE}: {exc}", file=sys.stderr)
