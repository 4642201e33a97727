"""The like-for-like memory comparison in Python, for runs that are not (yet) rows of the
ledger: the run summary ``tuneplan run`` prints, ``tuneplan compare``'s outcomes, calibrate's
re-estimates.

The definition is the run_memory_checks view (views.sql): every number read from the database
comes from it, and this mirror is held to it on real recorded rows (tests/test_check.py
``test_like_for_like_on_tensor_bytes_python_and_sql_agree``, tests/test_ledger.py). Like-for-like
compares tensor bytes with tensor bytes:

    predicted_comparable = plan.memory.per_device_bytes - plan.memory.breakdown.framework_overhead
                         = plan.memory.allocated_peak_bytes (the estimator's tensor-bytes figure)
    measured_comparable  = measured.peak_bytes - measured.runtime_bytes
    error                = (predicted_comparable - measured_comparable) / measured_comparable

A plan's per-device prediction includes a framework overhead term (runtime / CUDA context and
allocator fragmentation, itemised in plan.memory.terms); a measured peak may include the process
runtime (CPU: the RSS before the model was loaded, ``MeasuredMemory.runtime_bytes``; 0 on CUDA,
whose max_memory_allocated has no CUDA context). Signed (negative: under-predicted), None when
nothing positive was measured. The raw error ``(per_device_bytes - peak_bytes) / peak_bytes`` is
kept alongside as ``raw_error`` (the view's ``memory_error``).

Pure Python: never imports torch or DuckDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["LikeForLike", "like_for_like", "from_result", "framework_overhead_of", "relative_error"]


def relative_error(predicted: Optional[int], measured: Optional[int]) -> Optional[float]:
    """(predicted - measured) / measured, or None when either is missing or measured <= 0."""
    if predicted is None or measured is None or measured <= 0:
        return None
    return (predicted - measured) / measured


@dataclass(frozen=True)
class LikeForLike:
    """One run's prediction next to its measurement, raw and like-for-like (module docstring)."""

    predicted_bytes: Optional[int]
    """plan.memory.per_device_bytes (RunResult.predicted_peak_bytes)."""
    overhead_bytes: int
    """plan.memory.breakdown.framework_overhead (0 when the plan is unknown)."""
    measured_bytes: Optional[int]
    """MeasuredMemory.peak_bytes (None when not measured)."""
    runtime_bytes: int
    """MeasuredMemory.runtime_bytes (0 on CUDA and in older results)."""

    @property
    def predicted_comparable_bytes(self) -> Optional[int]:
        """The prediction of tensor bytes: per_device_bytes - framework_overhead."""
        return None if self.predicted_bytes is None else self.predicted_bytes - self.overhead_bytes

    @property
    def measured_comparable_bytes(self) -> Optional[int]:
        """The measured tensor bytes: peak_bytes - runtime_bytes (None when not measured)."""
        if not self.measured_bytes:
            return None
        return self.measured_bytes - self.runtime_bytes

    @property
    def error(self) -> Optional[float]:
        """Like-for-like signed relative error (predicted_comparable - measured_comparable) /
        measured_comparable; None when not measured."""
        return relative_error(self.predicted_comparable_bytes, self.measured_comparable_bytes)

    @property
    def raw_error(self) -> Optional[float]:
        """(per_device_bytes - peak_bytes) / peak_bytes: the whole figures, not like-for-like."""
        return relative_error(self.predicted_bytes, self.measured_bytes or None)


def like_for_like(
    predicted_bytes: Optional[int],
    overhead_bytes: Optional[int],
    measured_bytes: Optional[int],
    runtime_bytes: Optional[int],
) -> LikeForLike:
    """A LikeForLike from raw figures; None overhead or runtime counts as 0 (as in SQL)."""
    return LikeForLike(
        predicted_bytes=None if predicted_bytes is None else int(predicted_bytes),
        overhead_bytes=int(overhead_bytes or 0),
        measured_bytes=None if measured_bytes is None else int(measured_bytes),
        runtime_bytes=int(runtime_bytes or 0),
    )


def framework_overhead_of(plan: Any) -> int:
    """memory.breakdown.framework_overhead of a Plan, a plan dict or plan JSON text (or
    breakdown.framework_overhead of a MemoryEstimate); 0 when absent or unreadable, as the SQL
    view's coalesce."""
    if plan is None:
        return 0
    memory = getattr(plan, "memory", None)
    if memory is not None:
        return int(memory.breakdown.framework_overhead)
    breakdown = getattr(plan, "breakdown", None)
    if breakdown is not None:
        return int(breakdown.framework_overhead)
    if isinstance(plan, (str, bytes)):
        try:
            plan = json.loads(plan)
        except ValueError:
            return 0
    try:
        return int(plan["memory"]["breakdown"]["framework_overhead"] or 0)
    except (KeyError, TypeError, ValueError):
        return 0


def _plan_of_run_dir(run_dir: Optional[str]) -> Optional[str]:
    if not run_dir:
        return None
    try:
        return (Path(run_dir) / "plan.json").read_text(encoding="utf-8")
    except OSError:
        return None


def from_result(result: Any, plan: Any = None) -> LikeForLike:
    """The comparison for a RunResult. ``plan`` (a Plan, dict or JSON text) gives the framework
    overhead; when None, ``<run_dir>/plan.json`` is read (overhead 0 if it is missing)."""
    if plan is None:
        plan = _plan_of_run_dir(getattr(result, "run_dir", None))
    m = result.measured
    return like_for_like(
        result.predicted_peak_bytes,
        framework_overhead_of(plan),
        m.peak_bytes if m is not None else None,
        m.runtime_bytes if m is not None else 0,
    )
