"""``tuneplan calibrate``: fit correction factors for the memory estimator from measured runs.

For every succeeded run with a measured peak and its plan JSON, the prediction is recomputed through
:func:`tuneplan.advisor.estimator.estimate` (the plan's model and memory settings, on the device kind
the run measured). The comparison is like-for-like, tensor bytes on both sides
(the run_memory_checks view; ledger/memory_compare.py for a fresh estimate): the estimate less its framework overhead term (runtime / CUDA
context, allocator fragmentation) against the measured peak less its runtime_bytes (CPU: RSS
before the model loaded; 0 on CUDA). measured_i below is that measured figure. Per key ``"<device kind>|<architecture family>"`` one factor f scales the activation-like
terms (``activations`` and ``logits_and_loss``), the part of the estimate that depends on
implementation details (kernels, saved tensors, autocast copies); model states are exact
arithmetic and are not scaled:

    measured_i  ~  states_i + f * act_i          (states = weights + quantisation constants +
                                                  adapters + gradients + optimizer states)

f minimises the mean absolute relative error  (1/n) sum |states_i + f*act_i - measured_i| /
measured_i, a convex piecewise-linear function of f whose minimiser is the weighted median of
r_i = (measured_i - states_i) / act_i with weights act_i / measured_i, clamped at 0. Since f = 1 (no
calibration) is a candidate, the fitted error is never above the uncalibrated one on the runs used.

The factors go to ``<db dir>/calibration.json`` (advisor/calibration.py reads them for
``tuneplan advise --calibrated``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from tuneplan.advisor.calibration import calibration_path, factor_key
from tuneplan.base.fileio import write_text_atomic
from tuneplan.schemas import MemoryEstimate, load_plan_dict

from .connect import DBPath, open_read
from .memory_compare import like_for_like

ACTIVATION_TERMS = ("activations", "logits_and_loss")
"""Breakdown components the fitted factor multiplies."""
STATE_TERMS = ("weights", "quantization_constants", "adapter_weights", "gradients", "optimizer_states")
MAX_FACTOR = 100.0
"""Upper clamp: a factor beyond this means the model, not its scale, is wrong."""


@dataclass
class Sample:
    run_id: str
    key: str
    measured: int
    states: int
    act: int
    plan: Any


@dataclass
class KeyFit:
    key: str
    factors: dict[str, float]
    run_ids: list[str]
    mean_abs_error_before: float
    mean_abs_error_after: float


@dataclass
class Fit:
    keys: dict[str, KeyFit] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mean_abs_error_before: Optional[float] = None
    mean_abs_error_after: Optional[float] = None
    path: Optional[Path] = None


def _estimate(plan, device: str, calibration: Optional[dict[str, float]] = None) -> MemoryEstimate:
    from tuneplan.advisor.estimator import estimate

    mem = plan.memory
    return estimate(
        plan.inputs.model,
        mem.settings,
        capacity_bytes=mem.device_capacity_bytes,
        device=device,
        headroom_fraction=mem.headroom_fraction,
        calibration=calibration,
    )


def comparable_bytes(est: MemoryEstimate) -> int:
    """The like-for-like prediction (tensor bytes): memory.allocated_peak_bytes, i.e. everything
    but framework overhead (computed so for estimates written before that field)."""
    if est.allocated_peak_bytes is not None:
        return est.allocated_peak_bytes
    return like_for_like(
        est.per_device_bytes, est.breakdown.framework_overhead, None, 0
    ).predicted_comparable_bytes


def _samples(con) -> tuple[list[Sample], list[tuple[str, str]]]:
    rows = con.execute(
        "SELECT r.run_id, r.device_kind, r.measured_peak_bytes, m.measured_comparable_bytes, "
        "r.plan_json FROM runs r JOIN run_memory_checks m USING (run_id) "
        "WHERE r.status = 'succeeded' ORDER BY r.run_id"
    ).fetchall()
    out: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for run_id, kind, peak, measured, plan_json in rows:
        if not peak or peak <= 0:
            skipped.append((run_id, "no measured peak"))
            continue
        if not measured or measured <= 0:
            skipped.append((run_id, "measured peak not above its runtime bytes"))
            continue
        if kind not in ("cpu", "cuda"):
            skipped.append((run_id, f"device kind {kind!r} is neither cpu nor cuda"))
            continue
        if not plan_json:
            skipped.append((run_id, "no plan JSON recorded"))
            continue
        try:
            raw = json.loads(plan_json) if isinstance(plan_json, str) else plan_json
            plan = load_plan_dict(raw)
            est = _estimate(plan, kind)
        except Exception as exc:  # noqa: BLE001 - a plan this version cannot price is skipped
            skipped.append((run_id, f"cannot re-estimate its plan ({type(exc).__name__}: {exc})"))
            continue
        b = est.breakdown
        act = sum(getattr(b, t) for t in ACTIVATION_TERMS)
        states = sum(getattr(b, t) for t in STATE_TERMS)
        if act <= 0:
            skipped.append((run_id, "the estimate has no activation terms to scale"))
            continue
        out.append(
            Sample(run_id, factor_key(kind, plan.inputs.model.family), int(measured), states, act, plan)
        )
    return out, skipped


def weighted_median(values: list[float], weights: list[float]) -> float:
    """The smallest value at which the cumulative weight reaches half the total."""
    pairs = sorted(zip(values, weights))
    total = sum(w for _, w in pairs)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return v
    return pairs[-1][0]


def fit_factor(samples: list[Sample]) -> float:
    """The activation factor minimising the mean absolute relative error (module docstring)."""
    ratios = [(s.measured - s.states) / s.act for s in samples]
    weights = [s.act / s.measured for s in samples]
    return min(MAX_FACTOR, max(0.0, weighted_median(ratios, weights)))


def _error(s: Sample, calibration: Optional[dict[str, float]]) -> float:
    device = s.key.split("|", 1)[0]
    est = _estimate(s.plan, device, calibration)
    return (comparable_bytes(est) - s.measured) / s.measured


def fit(db: DBPath = None) -> Fit:
    """Fit factors per key from the database's succeeded runs (writes nothing to the database:
    it is opened read-only; an older one raises SchemaOutdated)."""
    con = open_read(db)
    try:
        samples, skipped = _samples(con)
    finally:
        con.close()
    result = Fit(skipped=skipped)
    by_key: dict[str, list[Sample]] = {}
    for s in samples:
        by_key.setdefault(s.key, []).append(s)
    before_all: list[float] = []
    after_all: list[float] = []
    for key, group in sorted(by_key.items()):
        f = round(fit_factor(group), 4)
        factors = {t: f for t in ACTIVATION_TERMS}
        before = [abs(_error(s, None)) for s in group]
        after = [abs(_error(s, factors)) for s in group]
        before_all += before
        after_all += after
        result.keys[key] = KeyFit(
            key, factors, [s.run_id for s in group], sum(before) / len(before), sum(after) / len(after)
        )
    if before_all:
        result.mean_abs_error_before = sum(before_all) / len(before_all)
        result.mean_abs_error_after = sum(after_all) / len(after_all)
    return result


def write(db: DBPath, result: Fit) -> Path:
    """Store the factors and their metadata in <db dir>/calibration.json (atomically)."""
    path = calibration_path(str(db) if db is not None else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "factors": {k: v.factors for k, v in result.keys.items()},
        "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": "weighted median of (measured - predicted model states) / predicted "
        "activation-like terms, weights act/measured; minimises mean |relative error| "
        "like-for-like: predicted memory.allocated_peak_bytes (per_device_bytes less "
        "framework overhead) vs measured peak less runtime bytes; see docs/checks.md",
        "terms": list(ACTIVATION_TERMS),
        "runs_used": sum(len(v.run_ids) for v in result.keys.values()),
        "keys": {
            k: {
                "runs": len(v.run_ids),
                "run_ids": v.run_ids,
                "mean_abs_error_before": v.mean_abs_error_before,
                "mean_abs_error_after": v.mean_abs_error_after,
            }
            for k, v in result.keys.items()
        },
        "mean_abs_error_before": result.mean_abs_error_before,
        "mean_abs_error_after": result.mean_abs_error_after,
        "skipped": [{"run_id": r, "reason": why} for r, why in result.skipped],
    }
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    result.path = path
    return path
