"""plan.json: its one reader, its one writer, its hash, and the ids of the runs made from it.

Every command that takes a plan file reads it through ``read_plan`` (so a directory, invalid UTF-8,
deep nesting, an unknown ``schema_version`` or a schema violation is an InputError naming the
field, never a traceback) and every command that writes one uses ``write_plan`` (atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .errors import InputError, pydantic_problems
from .fileio import read_json_file, write_text_atomic

if TYPE_CHECKING:
    from tuneplan.schemas import Plan

KNOWN_SCHEMA_VERSIONS = ("1.0",)
"""plan.json ``schema_version`` values this tuneplan reads."""

READ_FIX = "pass a plan.json written by `tuneplan advise`"


@dataclass(frozen=True)
class LoadedPlan:
    """A validated plan and where it came from."""

    plan: "Plan"
    path: Optional[Path] = None
    """The file it was read from; None for a Plan given in memory."""
    text: Optional[str] = None
    """The file's exact text (a run directory keeps it byte for byte); None for an in-memory Plan."""


def read_plan(source: "Union[Plan, str, Path]") -> LoadedPlan:
    """Read and validate a plan from a file (or pass a Plan through); InputError for anything bad."""
    from pydantic import ValidationError

    from tuneplan.schemas import Plan, load_plan_dict

    if isinstance(source, Plan):
        return LoadedPlan(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError.one(str(path), "file not found", READ_FIX)
    raw, text = read_json_file(path, "plan", READ_FIX)
    if not isinstance(raw, dict):
        raise InputError.one(str(path), "a plan must be a JSON object", READ_FIX)
    version = raw.get("schema_version")
    if version is not None and version not in KNOWN_SCHEMA_VERSIONS:
        raise InputError.one(
            "schema_version",
            f"{version!r} is not a schema this tuneplan knows ({', '.join(KNOWN_SCHEMA_VERSIONS)})",
            "write the plan again with this tuneplan's `tuneplan advise`",
        )
    try:
        return LoadedPlan(load_plan_dict(raw), path, text)
    except ValidationError as exc:
        raise InputError(pydantic_problems(exc)) from None
    except (RecursionError, TypeError, ValueError) as exc:
        raise InputError.one(str(path), f"invalid plan: {exc}", READ_FIX) from None


def plan_to_json(plan: "Plan", schema_ref: Optional[str] = None) -> str:
    """plan.json's text: indented JSON, with an optional "$schema" reference first."""
    data = plan.model_dump(mode="json")
    if schema_ref:
        data = {"$schema": schema_ref, **data}
    return json.dumps(data, indent=2) + "\n"


def write_plan(path: "str | Path", plan: "Plan", schema_ref: Optional[str] = None) -> str:
    """Write plan.json atomically (a crash leaves the old file or none); returns the text written."""
    text = plan_to_json(plan, schema_ref)
    write_text_atomic(path, text)
    return text


def plan_hash(plan: "Plan") -> str:
    """sha256 of the canonical plan JSON (sorted keys, compact), first 16 hex digits.

    The key that groups runs of the same plan in the ledger (``runs.plan_hash``)."""
    canonical = json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def new_run_id(prefix: str = "", seed: str = "") -> str:
    """A sortable, collision-safe id: ``[prefix-]YYYYmmdd-HHMMSS-xxxxxx`` (UTC; 6 hex digits of
    sha256 over seed, the nanosecond clock and the pid). Prefixes: "" runs, "cmp" comparisons,
    "swp" sweeps."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    salt = hashlib.sha256(f"{seed}{stamp}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:6]
    return f"{prefix}-{stamp}-{salt}" if prefix else f"{stamp}-{salt}"
