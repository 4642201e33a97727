"""The TUI's one door to the advisor: imported after the first paint, in a worker thread.

Importing the schemas and the advisor (pydantic models built at import) costs about as much as
Textual itself, so the first screen is painted without them (tui/app.py starts a worker that
imports this module). Everything the app needs from the advisor goes through here: hardware
detection and the card list, the model catalog, the choices the schema allows, and the
answers → validated inputs → plan step the CLI's `advise` uses too.
"""

from __future__ import annotations

import functools
import typing
from typing import Callable, Optional, Union

from tuneplan.advisor import catalog, hardware
from tuneplan.advisor.engine import advise
from tuneplan.advisor.inputs import Answers, build_inputs
from tuneplan.advisor.render import METHOD_LABEL, method_rows
from tuneplan.base.errors import InputError, Problem
from tuneplan.schemas import CPUHardware, GPUHardware, Pins, Plan, Task

__all__ = [
    "Answers",
    "METHOD_LABEL",
    "advise",
    "advise_answers",
    "with_distance",
    "choices",
    "describe",
    "detect",
    "detected_text",
    "gpu_options",
    "hw_default",
    "method_rows",
    "model_names",
]

GIB = 1024**3
HW_CUSTOM = "custom"
HW_CPU = "cpu"
SCHEMAS = {"task": Task, "pins": Pins}

Hardware = Union[GPUHardware, CPUHardware]


def detect(probe: Optional[Callable[[], Hardware]]) -> Optional[Hardware]:
    """The hardware the probe finds (hardware.detect_hardware when None); None if it finds none."""
    try:
        return (probe or hardware.detect_hardware)()
    except InputError:
        return None


def gpu_options() -> list[tuple[str, str]]:
    """(label, value) for every catalog card, as the hardware list shows them."""
    return [(f"{g.name} ({g.memory_bytes / GIB:.1f} GiB)", g.name) for g in catalog.list_gpus()]


def hw_default(hw: Optional[Hardware]) -> tuple[str, str, str]:
    """(hardware list value, custom GiB, GPU count) matching the detected hardware."""
    if isinstance(hw, GPUHardware):
        try:
            return catalog.get_gpu(hw.name).name, "", str(hw.count)
        except InputError:
            return HW_CUSTOM, f"{hw.memory_bytes / GIB:g}", str(hw.count)
    return HW_CPU, "", "1"


def detected_text(hw: Optional[Hardware]) -> str:
    if hw is None:
        return "Detected: nothing (pick a card)"
    count = f"{hw.count}× " if hw.count > 1 else ""
    return f"Detected: {count}{hw.name}, {hw.memory_bytes / GIB:.1f} GiB"


@functools.lru_cache(maxsize=1)
def model_names() -> tuple[str, ...]:
    """The catalog's model ids, in the catalog's order (read once: the search runs per key)."""
    return tuple(m.name for m in catalog.list_models())


def _field(where: str):
    group, name = where.split(".")
    return SCHEMAS[group].model_fields[name]


def choices(where: str) -> list[str]:
    """The values a schema field allows, from its Literal type ("task.domain_distance" →
    ["near", "moderate", "far"]; Optional is unwrapped; a bool field is ["no", "yes"])."""
    annotation = _field(where).annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Union:  # Optional[X]
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        return ["no", "yes"]
    values = typing.get_args(annotation)
    if typing.get_origin(annotation) is not typing.Literal or not values:
        raise TypeError(f"{where} is not a Literal or bool field: {annotation!r}")
    return [str(v) for v in values]


def describe(where: str) -> str:
    """The schema field's docstring (its description), one line."""
    return " ".join((_field(where).description or "").split())


def advise_answers(
    answers: Answers, problems: list[Problem], calibrated: bool, db: Optional[str]
) -> tuple[Optional[Plan], list[Problem]]:
    """Validate and advise, as `tuneplan advise` does (pure; run in a worker thread).
    Returns (plan or None, every problem: the form's own first, then the advisor's)."""
    plan = None
    try:
        inputs = build_inputs(answers)
        if calibrated:
            from tuneplan.advisor.calibration import load_factors

            inputs = inputs.model_copy(update={"calibrated": True})
            calibration = load_factors(db, inputs)
        else:
            calibration = None
    except InputError as e:
        problems = problems + [
            Problem(p.where, "not answered yet", "choose one") if p.message == "Field required" else p
            for p in e.problems
        ]
    else:
        if not problems:
            try:
                plan = advise(inputs, calibration=calibration)
            except Exception as e:  # an advisor bug must not take the questionnaire down
                problems.append(Problem("advisor", f"{type(e).__name__}: {e}"))
    return plan, problems


def with_distance(plan: Optional[Plan], evidence, answers: Answers) -> Optional[Plan]:
    """The plan with a measured distance's evidence in `inputs.distance`, as `advise
    --measure-distance` writes it: source measured when the domain answer is the verdict, else
    declared with the disagreement in the warnings. Unchanged when there is no evidence, or it was
    measured on another model or data file than the ones answered now."""
    if plan is None or evidence is None:
        return plan
    if evidence.data != answers.data or evidence.model != answers.model:
        return plan
    from tuneplan.executor.distance.verdict import disagreement

    chosen = plan.inputs.task.domain_distance
    warnings = list(plan.warnings)
    if chosen == evidence.measured:
        ev = evidence.model_copy(update={"source": "measured", "declared": None})
    else:
        ev = evidence.model_copy(update={"source": "declared", "declared": chosen})
        warnings.append(disagreement(chosen, evidence.measured, evidence.score))
    return plan.model_copy(
        update={"inputs": plan.inputs.model_copy(update={"distance": ev}), "warnings": warnings}
    )
