"""tuneplan.schemas — pydantic models: the single source of truth for plan.json.

Imports only the standard library and pydantic (layering rule: the advise path stays light).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import GB, GiB, METHODS, Strict
from .distance import DistanceEvidence, FitSignal, LayerRank, PilotSignal, RankSignal
from .inputs import (
    CPUHardware,
    DataStats,
    GPUHardware,
    Hardware,
    Inputs,
    LinearModule,
    ModelSpec,
    ParamCounts,
    Pins,
    Task,
)
from .plan import (
    SCHEMA_VERSION,
    Alternative,
    DataSpec,
    Decision,
    Distributed,
    LoraSettings,
    MemoryBreakdown,
    MemoryEstimate,
    MemorySettings,
    MemoryTerm,
    Plan,
    Quantization,
    Training,
)

SCHEMA_FILE = Path(__file__).with_name("plan.schema.json")
SCHEMA_ID = "https://tuneplan.dev/schemas/plan-1.0.schema.json"


_RUN_NAMES = ("MeasuredMemory", "Resume", "RunResult", "RunStatus")


def __getattr__(name: str) -> Any:
    """Run-result models load on first use: the advise path never needs them (PEP 562)."""
    if name in _RUN_NAMES:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tuneplan_version() -> str:
    """This tuneplan's version (schemas/version.py, which pyproject.toml reads)."""
    from .version import VERSION

    return VERSION


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of plan.json, as committed in schemas/plan.schema.json."""
    schema = Plan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    # Example plans carry "$schema" pointing at the committed file; allow that one key.
    schema.setdefault("properties", {})["$schema"] = {
        "type": "string",
        "description": "Optional pointer to this JSON Schema (ignored by tuneplan).",
    }
    return schema


def plan_json_schema_text() -> str:
    return json.dumps(plan_json_schema(), indent=2, sort_keys=True) + "\n"


def load_plan_dict(data: dict[str, Any]) -> Plan:
    """Validate a plan dict (an optional "$schema" key is accepted and dropped)."""
    data = {k: v for k, v in data.items() if k != "$schema"}
    return Plan.model_validate(data)


__all__ = [
    "DataStats",
    "DistanceEvidence",
    "FitSignal",
    "LayerRank",
    "RankSignal",
    "PilotSignal",
    "GB",
    "GiB",
    "METHODS",
    "SCHEMA_VERSION",
    "SCHEMA_FILE",
    "Strict",
    "CPUHardware",
    "GPUHardware",
    "Hardware",
    "Inputs",
    "LinearModule",
    "ModelSpec",
    "ParamCounts",
    "Pins",
    "Task",
    "Alternative",
    "DataSpec",
    "Decision",
    "Distributed",
    "LoraSettings",
    "MemoryBreakdown",
    "MemoryEstimate",
    "MemorySettings",
    "MemoryTerm",
    "Plan",
    "Quantization",
    "Training",
    "MeasuredMemory",
    "Resume",
    "RunResult",
    "RunStatus",
    "plan_json_schema",
    "plan_json_schema_text",
    "load_plan_dict",
    "tuneplan_version",
]
