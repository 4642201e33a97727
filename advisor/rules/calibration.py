"""Calibration rule (TP050): say so when the estimate was scaled by factors fitted from measured runs.

The factors themselves come from `tuneplan calibrate` (advisor/calibration.py reads them); the
estimator applies them term by term (advisor/estimator). This rule only records the decision.
"""

from __future__ import annotations

from typing import Optional

from ..draft import Draft
from ._base import Outcome, rule


@rule("TP050", "calibrated-estimate", "tuneplan calibrate (runs in DuckDB)")
def calibrated_estimate(d: Draft) -> Optional[Outcome]:
    """Why: the estimator's terms are derived, not measured on this stack; once runs have been
    recorded, `tuneplan calibrate` fits one multiplier per breakdown component (a weighted median
    of measured / predicted over the runs of this device kind and architecture family), and
    `advise --calibrated` scales those terms by them, so the plan's memory follows what this
    machine really allocated. The plan says which factors it used; memory.calibration_factor is the
    overall after/before ratio.
    When not: --calibrated not given (the estimate is the uncalibrated formula), or no factors were
    calibrated for this device kind and family (advise stops with exit 2 and says so).
    Source: tuneplan calibrate over the runs recorded in DuckDB (docs/checks.md)."""
    if not d.calibration:
        return None
    return Outcome(f"Estimator terms scaled by calibration factors {d.calibration} from measured runs.")
