"""`tuneplan advise --check plan.json`: a lockfile check for committed plans.

Re-advises from the plan's own `inputs` with the advisor installed now and compares the settings a
run depends on. Memory is compared with a relative tolerance (estimator refinements move it a
little); everything else must match exactly. Exit 0 current, 1 stale (with a readable diff),
2 unreadable plan. `--update` rewrites the file with the fresh plan, keeping its `data` and
`$schema`. Pure: stdlib + pydantic + the advisor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from tuneplan.base.errors import InputError

GIB = 1024**3

# The settings a run depends on, as dotted paths into plan.json.
CHECKED = (
    "method",
    "feasible",
    "training.learning_rate",
    "training.lr_scheduler",
    "training.warmup_ratio",
    "training.num_epochs",
    "training.max_steps",
    "training.per_device_batch_size",
    "training.gradient_accumulation_steps",
    "training.max_grad_norm",
    "training.weight_decay",
    "training.optimizer",
    "training.precision",
    "training.gradient_checkpointing",
    "training.attention",
    "training.seq_len",
    "lora.rank",
    "lora.alpha",
    "lora.dropout",
    "lora.target_modules",
    "lora.use_rslora",
    "quantization.quant_type",
    "quantization.double_quant",
    "quantization.compute_dtype",
    "distributed.num_processes",
    "distributed.strategy",
    "distributed.num_nodes",
    "distributed.cpu_offload",
)
MEMORY = "memory.per_device_bytes"


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "null" if value is None else str(value)


def diff_plans(old: dict[str, Any], new: dict[str, Any], tolerance: float) -> list[str]:
    """Readable lines, one per setting that differs (memory beyond `tolerance`, a fraction)."""
    lines = []
    width = max(len(p) for p in (*CHECKED, MEMORY))
    for path in CHECKED:
        a, b = _get(old, path), _get(new, path)
        if a != b:
            lines.append(f"  {path:<{width}}  {_show(a)}  ->  {_show(b)}")
    a, b = _get(old, MEMORY), _get(new, MEMORY)
    if isinstance(a, int) and isinstance(b, int) and a > 0:
        change = (b - a) / a
        if abs(change) > tolerance:
            lines.append(
                f"  {MEMORY:<{width}}  {a / GIB:.2f} GiB  ->  {b / GIB:.2f} GiB "
                f"({change:+.1%}, tolerance {tolerance:.0%})"
            )
    return lines


def check_plan(
    path: str, *, tolerance: float = 0.05, db: Optional[str] = None, update: bool = False
) -> tuple[int, str]:
    """(exit code, report) for a committed plan against the current advisor."""
    from tuneplan.schemas import SCHEMA_ID, load_plan_dict, tuneplan_version

    from .engine import advise

    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError.one("--check", f"{p}: no such file", "give the committed plan.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError.one(
            "--check", f"{p}: not a readable JSON plan ({exc})", "restore the file"
        ) from None
    if not isinstance(raw, dict):
        raise InputError.one("--check", f"{p}: a plan is a JSON object", "restore the file")
    from pydantic import ValidationError

    from tuneplan.base.errors import pydantic_problems

    try:
        plan = load_plan_dict(raw)
    except ValidationError as exc:
        raise InputError(pydantic_problems(exc)) from None
    calibration = None
    if plan.inputs.calibrated:
        from .calibration import load_factors

        calibration = load_factors(db, plan.inputs)
    fresh = advise(plan.inputs, calibration=calibration)
    fresh = fresh.model_copy(update={"data": plan.data, "trust_remote_code": plan.trust_remote_code})
    old, new = plan.model_dump(mode="json"), fresh.model_dump(mode="json")
    lines = diff_plans(old, new, tolerance)
    if not lines:
        return 0, (
            f"{p}: current (re-advised from its own inputs with tuneplan {tuneplan_version()}; "
            f"memory within {tolerance:.0%})"
        )
    head = (
        f"{p}: STALE against tuneplan {tuneplan_version()} (the plan says {plan.tuneplan_version}); "
        f"re-advised from its own inputs, {len(lines)} setting{'s' * (len(lines) > 1)} differ "
        "(committed -> current):"
    )
    if update:
        from tuneplan.base.planio import plan_to_json
        from tuneplan.base.fileio import write_text_atomic

        write_text_atomic(str(p), plan_to_json(fresh, raw.get("$schema") or SCHEMA_ID))
        return 0, "\n".join([head, *lines, f"updated {p} with the current advice"])
    fix = f"fix: `tuneplan advise --check {p} --update` rewrites it (review the diff), or pin the old values"
    return 1, "\n".join([head, *lines, fix])
