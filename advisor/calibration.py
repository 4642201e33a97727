"""Calibration factors for the estimator, fitted from measured runs by `tuneplan calibrate`.

Stored as JSON beside the run database (``<db dir>/calibration.json``) so the advise path reads
them with the standard library alone. Keys are "<device kind>|<architecture family>"; values map a
breakdown component ("activations", "logits_and_loss", …) to a multiplier.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from tuneplan.schemas import CPUHardware, Inputs

from tuneplan.base.errors import InputError


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
        raise InputError.one(
            "--calibrated",
            f"no calibration at {path}",
            "run `tuneplan calibrate` after some runs, or drop --calibrated",
        )
    from tuneplan.schemas import MemoryBreakdown

    from tuneplan.base.fileio import read_json_file

    fix = "run `tuneplan calibrate` again to rewrite it, or drop --calibrated"
    data, _ = read_json_file(path, "calibration file", fix)
    if not isinstance(data, dict) or not isinstance(data.get("factors", {}), dict):
        raise InputError.one(str(path), "not a calibration file (an object with a 'factors' object)", fix)
    table = data.get("factors", {})
    kind = "cpu" if isinstance(inputs.hardware, CPUHardware) else "cuda"
    key = factor_key(kind, inputs.model.family)
    factors = table.get(key)
    if not factors:
        known = ", ".join(sorted(map(str, table))) or "none"
        raise InputError.one(
            "--calibrated",
            f"no calibration for {key} (calibrated: {known})",
            "run plans on this device kind and family, then `tuneplan calibrate`",
        )
    if not isinstance(factors, dict):
        raise InputError.one(f"{path}: factors.{key}", "must be an object of component -> multiplier", fix)
    components = set(MemoryBreakdown.model_fields)
    out: dict[str, float] = {}
    problems = []
    for name, value in factors.items():
        if name not in components:
            problems.append(f"unknown component {name!r} (known: {', '.join(sorted(components))})")
        elif (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 < value < 100
        ):
            problems.append(f"{name}: {value!r} is not a multiplier (a number above 0 and below 100)")
        else:
            out[name] = float(value)
    if problems:
        from tuneplan.base.errors import Problem

        raise InputError([Problem(f"{path}: factors.{key}", p, fix) for p in problems])
    return out
