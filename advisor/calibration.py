"""Calibration factors for the estimator, fitted from measured runs by `tuneplan calibrate`.

Stored as JSON beside the run database (``<db dir>/calibration.json``) so the advise path reads
them with the standard library alone. Keys are "<device kind>|<architecture family>"; values map a
breakdown component ("activations", "logits_and_loss", …) to a multiplier.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from tuneplan.schemas import CPUHardware, Inputs

from .errors import InputError


def calibration_path(db: Optional[str]) -> Path:
    """Where factors live for a database path (default ./.tuneplan/runs.duckdb, or $TUNEPLAN_DB)."""
    db_path = Path(db or os.environ.get("TUNEPLAN_DB") or ".tuneplan/runs.duckdb")
    return db_path.parent / "calibration.json"


def factor_key(device_kind: str, family: str) -> str:
    """The lookup key for a device kind ("cpu" or "cuda") and an architecture family."""
    return f"{device_kind}|{family}"


def load_factors(db: Optional[str], inputs: Inputs) -> Optional[dict[str, float]]:
    """Factors for these inputs' device kind and family; InputError if none were calibrated."""
    path = calibration_path(db)
    if not path.exists():
        raise InputError.one("--calibrated", f"no calibration at {path}",
                             "run `tuneplan calibrate` after some runs, or drop --calibrated")
    data = json.loads(path.read_text())
    kind = "cpu" if isinstance(inputs.hardware, CPUHardware) else "cuda"
    key = factor_key(kind, inputs.model.family)
    factors = data.get("factors", {}).get(key)
    if not factors:
        known = ", ".join(sorted(data.get("factors", {}))) or "none"
        raise InputError.one("--calibrated", f"no calibration for {key} (calibrated: {known})",
                             "run plans on this device kind and family, then `tuneplan calibrate`")
    return {k: float(v) for k, v in factors.items()}
