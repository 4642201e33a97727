"""The documented thresholds (docs/domain-distance.md) and the near | moderate | far verdict.

Torch-free: the signals come in as plain numbers. Two signals, each with a moderate and a far
threshold:
  rank  mean over the sampled layers of rank_90 / min(out, in): the share of a layer's
        directions its accumulated gradient needs to hold 90% of its energy. The seed's sense of
        distance ("how much must the weights move, and in how many directions"; code and math need
        updates of 10-100x the rank a typical LoRA holds, Biderman et al. 2024 §4.6).
  fit   share of target tokens the base model gives under ~10% probability. A new vocabulary,
        language or notation shows here even where the gradient is low-rank.
The verdict is the rank signal's, raised one step when the fit signal alone says far (surprise
on most targets is distance the rank signal can miss early on); the score is the mean of the two
signals, each divided by its far threshold, and orders tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

THRESHOLDS_VERSION = "v1"
ORDER = ("near", "moderate", "far")


@dataclass(frozen=True)
class Thresholds:
    """Where each signal turns moderate and far."""

    rank_moderate: float = 0.025
    """mean rank_90 share at or above which the update-rank signal says moderate."""
    rank_far: float = 0.05
    """... and far."""
    fit_moderate: float = 0.30
    """high-loss share at or above which the fit signal says moderate."""
    fit_far: float = 0.45
    """... and far."""
    pilot_near: float = 0.8
    """Pilot share (LoRA's eval-loss drop / full fine-tuning's) at or above which the pilot says
    near: LoRA "matches" full fine-tuning, the same 80% as TP023 and compare's judge."""
    pilot_far: float = 0.5
    """Pilot share below which the pilot says far: LoRA reached under half of full fine-tuning's
    drop in the same steps (between the two: moderate)."""
    label: str = f"docs/domain-distance.md defaults {THRESHOLDS_VERSION}"
    """Where these thresholds come from (shown in the plan's evidence)."""


DEFAULT = Thresholds()


def _band(value: float, moderate: float, far: float) -> str:
    return "far" if value >= far else "moderate" if value >= moderate else "near"


@dataclass(frozen=True)
class Verdict:
    distance: str
    rank_verdict: str
    fit_verdict: str
    score: float


def judge(mean_rank_90_share: float, high_loss_share: float, thresholds: Thresholds = DEFAULT) -> Verdict:
    """near | moderate | far from the two signals (see the module docstring)."""
    rank_v = _band(mean_rank_90_share, thresholds.rank_moderate, thresholds.rank_far)
    fit_v = _band(high_loss_share, thresholds.fit_moderate, thresholds.fit_far)
    distance = rank_v
    if fit_v == "far" and rank_v != "far":
        distance = ORDER[ORDER.index(rank_v) + 1]
    score = 0.5 * (mean_rank_90_share / thresholds.rank_far + high_loss_share / thresholds.fit_far)
    return Verdict(distance, rank_v, fit_v, round(score, 4))


def pilot_band(share: Optional[float], thresholds: Thresholds = DEFAULT) -> Optional[str]:
    """What a pilot share alone says (None: no share, the pilot is inconclusive)."""
    if share is None:
        return None
    return (
        "near" if share >= thresholds.pilot_near else "moderate" if share >= thresholds.pilot_far else "far"
    )


def with_pilot(distance: str, pilot: Optional[str]) -> str:
    """The verdict of the rank and fit signals moved by a conclusive pilot: up to the pilot's own
    verdict when it says farther (LoRA already falls short after a few steps; the gap to full
    fine-tuning grows with training, Biderman et al. 2024 §4.1), at most one step down when it
    says nearer (a short pilot cannot show a gap that opens later)."""
    if pilot is None:
        return distance
    i, j = ORDER.index(distance), ORDER.index(pilot)
    if j > i:
        return pilot
    if j < i:
        return ORDER[i - 1]
    return distance


def disagreement(declared: str, measured: str, score: float) -> str:
    """The plan's warning when the user's --domain and the measurement differ ("" when they agree)."""
    if declared == measured:
        return ""
    return (
        f"--domain {declared} was declared but the measurement says {measured} (distance score "
        f"{score:.2f}; docs/domain-distance.md): the plan keeps {declared} as pinned. "
        + (
            "If LoRA falls short, try full fine-tuning or a higher rank."
            if ORDER.index(measured) > ORDER.index(declared)
            else "LoRA or QLoRA may match full fine-tuning here for less memory."
        )
    )
