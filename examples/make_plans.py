"""Regenerate the example plans from the advisor (deterministic: a fixed 2-core, 24 GiB CPU).

examples/plan.json          the advisor's own choice for the embedded SmolLM2-135M-Instruct
examples/plans/full.json    the same task with --method full pinned
examples/plans/lora.json    ... lora
examples/plans/qlora.json   ... qlora
Run: .venv/bin/python examples/make_plans.py   (tests/test_examples.py checks they are current)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tuneplan.advisor import advise
from tuneplan.advisor.catalog import get_model
from tuneplan.schemas import CPUHardware, DataSpec, GiB, Inputs, Pins, Plan, Task

HERE = Path(__file__).resolve().parent
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# A fixed machine so the committed plans do not depend on where they were generated.
EXAMPLE_CPU = CPUHardware(name="example 2-core CPU", memory_bytes=24 * GiB, cores=2)
TASK = Task(domain_distance="near", domain_label="extraction", forgetting_tolerance="medium",
            seq_len=72, batch_size=8)


def example_plan(method: Optional[str], data_prefix: str) -> Plan:
    """The advisor's plan for the date-normalisation example (method pinned if given)."""
    inputs = Inputs(hardware=EXAMPLE_CPU, model=get_model(MODEL), task=TASK, pins=Pins(method=method))
    plan = advise(inputs)
    return plan.model_copy(update={"data": DataSpec(
        train_path=f"{data_prefix}data/train.jsonl", eval_path=f"{data_prefix}data/eval.jsonl")})


def render(plan: Plan, schema_ref: str) -> str:
    """plan.json text with its $schema reference (tuneplan_version normalised for stable diffs)."""
    data = {"$schema": schema_ref, **plan.model_dump(mode="json")}
    data["tuneplan_version"] = "0.1.0"
    return json.dumps(data, indent=2) + "\n"


def expected_files() -> dict[Path, str]:
    """Every example plan path and its current text."""
    out = {HERE / "plan.json": render(example_plan(None, ""), "../schemas/plan.schema.json")}
    for method in ("full", "lora", "qlora"):
        out[HERE / "plans" / f"{method}.json"] = render(example_plan(method, "../"),
                                                        "../../schemas/plan.schema.json")
    return out


def main() -> None:
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
