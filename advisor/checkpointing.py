"""Checkpoint cadence and size for a plan: pure, stdlib only (the advise path stays fast)."""

from __future__ import annotations

import math
from typing import Optional

from tuneplan.schemas import MemoryBreakdown

SAVES_PER_RUN = 10
"""Periodic checkpoints over a planned run: at most ~10% of the work is lost to a preemption."""
MIN_STEPS_FOR_PERIODIC = 20
"""Below this many planned steps a run is short enough that only SIGTERM/SIGINT checkpoints."""
SAVE_EVERY_MINUTES = 30.0
"""Wall-clock cap between saves, whatever the step count (spot/preemptible GPUs)."""


def checkpoint_cadence(planned_steps: Optional[int]) -> tuple[Optional[int], Optional[float]]:
    """(save_every_steps, save_every_minutes) proposed from the planned run length.

    Why: a preempted job loses the work since its last checkpoint; saving ~10 times per run bounds
    that loss to ~10% while keeping the save cost (a pause of the loop and checkpoint_bytes of
    writes) small. The minutes cap bounds the loss on runs whose step time is unknown here.
    When not: runs under MIN_STEPS_FOR_PERIODIC steps (minutes on any hardware) save only on a
    signal. Source: HF Trainer's save_steps/save_total_limit, torchtune's per-epoch saves.
    """
    if planned_steps is None:
        return None, SAVE_EVERY_MINUTES
    if planned_steps < MIN_STEPS_FOR_PERIODIC:
        return None, None
    return max(1, math.ceil(planned_steps / SAVES_PER_RUN)), SAVE_EVERY_MINUTES


def checkpoint_bytes(method: str, breakdown: MemoryBreakdown) -> int:
    """Bytes of one checkpoint: trainable weights + optimizer states, of the whole model (pass the
    breakdown of the unsharded, not offloaded estimate: fitting.estimate_whole).

    Full fine-tuning saves every weight (breakdown.weights); LoRA/QLoRA save the adapter alone
    (breakdown.adapter_weights). The optimizer states are saved whole (breakdown.optimizer_states).
    RNG, scheduler, data position and metrics add a few KB. Source: the estimator's itemized terms
    (advisor/estimator/) - what accelerate's save_state writes for these objects.
    """
    trainable = breakdown.weights if method == "full" else breakdown.adapter_weights
    return int(trainable + breakdown.optimizer_states)
