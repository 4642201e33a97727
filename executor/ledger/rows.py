"""The rows of the run ledger: the columns of ``runs`` and ``metrics``, a RunResult (and its
run directory's plan.json and metrics) as those rows, and the upsert that writes them.

Every value the views need from the plan is computed from the plan JSON by a macro of macros.sql
at write time (:data:`DERIVED_COLUMNS`, the ``plan_settings`` row), so no view reads the blob.

DuckDB only; never imports torch.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from tuneplan.schemas.run import RunResult

from .connect import StoreError

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

__all__ = ["RUN_COLUMNS", "METRIC_COLUMNS", "DERIVED_COLUMNS", "read_metrics_jsonl"]

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
    ("predicted_overhead_bytes", "BIGINT"),  # migration 7
    ("planned_hardware", "VARCHAR"),  # migration 7
    ("best_step", "BIGINT"),  # migration 10
    ("eval_loss_best", "DOUBLE"),  # migration 10
    ("early_stopped", "BOOLEAN"),  # migration 10
    ("stop_reason", "VARCHAR"),  # migration 10
]
"""Columns of ``runs`` in order. ``result_json`` keeps the whole result.json so nothing is lost
when the schema grows; ``recorded_at`` is when the row was last written (UTC);
``runtime_bytes`` is the part of ``measured_peak_bytes`` that is the process runtime (CPU: RSS
before the model loaded; 0 on CUDA), added by migration 4 at the end so new and upgraded
databases have the same column order. ``predicted_overhead_bytes`` (the plan's
memory.breakdown.framework_overhead) and ``planned_hardware`` (the plan's inputs.hardware.name,
next to ``hardware``, the device the run used) are written from the plan at record time by the
macros of macros.sql (migration 7 back-fills older rows). ``best_step`` / ``eval_loss_best`` (the
lowest eval loss during training, training.eval_every_steps), ``early_stopped`` and
``stop_reason`` come from the result (migration 10 back-fills them from result_json)."""

DERIVED_COLUMNS: dict[str, str] = {
    "predicted_overhead_bytes": "plan_overhead_bytes",
    "planned_hardware": "plan_hardware",
}
"""Columns of ``runs`` computed from the plan JSON by a macro of macros.sql, never in Python."""

METRIC_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"),
    ("step", "BIGINT NOT NULL"),
    ("loss", "DOUBLE"),
    ("lr", "DOUBLE"),
    ("grad_norm", "DOUBLE"),
    ("tokens", "BIGINT"),
    ("elapsed_s", "DOUBLE"),
    ("eval_loss", "DOUBLE"),  # migration 10
    ("probe_loss", "DOUBLE"),  # migration 10
    ("trained_tokens", "BIGINT"),  # migration 10
    ("positions", "BIGINT"),  # migration 10
]
"""Columns of ``metrics`` in order; primary key (run_id, step). ``eval_loss`` / ``probe_loss``
are set on the steps evaluated during training (training.eval_every_steps), NULL elsewhere;
``trained_tokens`` are the step's loss-bearing tokens, ``positions`` its batch positions with
padding (metrics.jsonl's fields of the same names)."""


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


def compact_plan_json(text: str) -> str | None:
    """Plan JSON text as the compact text the ``runs.plan_json`` column holds; None if not JSON."""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return None


def _read_plan_json(run_dir: Path) -> str | None:
    """The run directory's plan.json as compact JSON text, or None if missing or unreadable."""
    try:
        return compact_plan_json((run_dir / "plan.json").read_text(encoding="utf-8"))
    except OSError:
        return None


def _row(result: RunResult, plan_json: str | None, run_dir: str | None = None) -> dict[str, Any]:
    """The ``runs`` row for a result, as a column -> value dict in RUN_COLUMNS order, less the
    DERIVED_COLUMNS the database computes from ``plan_json``."""
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
        "best_step": result.best_step,
        "eval_loss_best": result.best_eval_loss,
        "early_stopped": result.early_stopped,
        "stop_reason": result.stop_reason,
    }
    assert list(row) == _WRITTEN
    return row


_CASTS = {name: kind.split()[0] for name, kind in RUN_COLUMNS}
_WRITTEN = [c for c, _ in RUN_COLUMNS if c not in DERIVED_COLUMNS]


def _value_sql(column: str) -> str:
    if column in DERIVED_COLUMNS:
        return f"{DERIVED_COLUMNS[column]}(?::JSON)"
    return f"?::{_CASTS[column]}"


def _update_sql(column: str) -> str:
    if column == "plan_json":  # a later write without plan.json must not erase the plan
        return "plan_json = coalesce(excluded.plan_json, runs.plan_json)"
    if column in DERIVED_COLUMNS:
        return f"{column} = {DERIVED_COLUMNS[column]}(coalesce(excluded.plan_json, runs.plan_json))"
    return f"{column} = excluded.{column}"


_UPSERT_SQL = (
    "INSERT INTO runs ("
    + ", ".join(c for c, _ in RUN_COLUMNS)
    + ") VALUES ("
    + ", ".join(_value_sql(c) for c, _ in RUN_COLUMNS)
    + ") ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(_update_sql(c) for c, _ in RUN_COLUMNS if c != "run_id")
)

_PLAN_SETTINGS_SQL = (
    "INSERT OR REPLACE INTO plan_settings "
    "SELECT run_id, plan_settings_of(plan_json) FROM runs "
    "WHERE run_id = ? AND plan_json IS NOT NULL"
)
"""The run's plan_settings row, from the plan JSON just recorded (macros.sql's plan_settings_of)."""


def _upsert_run(con: "DuckDBPyConnection", row: dict[str, Any]) -> None:
    """Insert or update the run's ``runs`` row and its ``plan_settings`` row."""
    plan = row["plan_json"]
    con.execute(_UPSERT_SQL, [plan if c in DERIVED_COLUMNS else row[c] for c, _ in RUN_COLUMNS])
    con.execute(_PLAN_SETTINGS_SQL, [row["run_id"]])


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
    """Metrics dicts -> column lists in METRIC_COLUMNS order (after run_id).
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
        [_num(by_step[s].get("eval_loss"), float) for s in steps],
        [_num(by_step[s].get("probe_loss"), float) for s in steps],
        [_num(by_step[s].get("trained_tokens"), int) for s in steps],
        [_num(by_step[s].get("positions"), int) for s in steps],
    ]


def _replace_metrics(con: "DuckDBPyConnection", run_id: str, metrics: Iterable[dict]) -> int:
    cols = _metric_columns(metrics)
    con.execute("DELETE FROM metrics WHERE run_id = ?", [run_id])
    if not cols[0]:
        return 0
    con.execute(
        "INSERT INTO metrics ("
        + ", ".join(c for c, _ in METRIC_COLUMNS)
        + ") SELECT ?, "
        + ", ".join(f"unnest(?::{kind.split()[0]}[])" for _, kind in METRIC_COLUMNS[1:]),
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
