"""Regenerate the example plans from the advisor (deterministic: a fixed 2-core, 24 GiB CPU).

examples/plan.json          the advisor's own choice for the embedded SmolLM2-135M-Instruct
examples/plans/full.json    the same task with --method full pinned
examples/plans/lora.json    ... lora
examples/plans/qlora.json   ... qlora
examples/ci/plans/ci.json   the CI-sized plan (embedded model, 2 steps) the CI recipe runs
examples/ci/plans/gpu.json  a GPU plan (Llama-3.1-8B on 2 x A100 80GB) the CI recipe dry-runs
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
TASK = Task(
    domain_distance="near", domain_label="extraction", forgetting_tolerance="medium", seq_len=72, batch_size=8
)


def example_plan(method: Optional[str], data_prefix: str) -> Plan:
    """The advisor's plan for the date-normalisation example (method pinned if given)."""
    inputs = Inputs(hardware=EXAMPLE_CPU, model=get_model(MODEL), task=TASK, pins=Pins(method=method))
    plan = advise(inputs)
    return plan.model_copy(
        update={
            "data": DataSpec(
                train_path=f"{data_prefix}data/train.jsonl", eval_path=f"{data_prefix}data/eval.jsonl"
            )
        }
    )


def render(plan: Plan, schema_ref: str) -> str:
    """plan.json text with its $schema reference (tuneplan_version normalised for stable diffs)."""
    data = {"$schema": schema_ref, **plan.model_dump(mode="json")}
    data["tuneplan_version"] = "0.1.0"
    return json.dumps(data, indent=2) + "\n"


def expected_files() -> dict[Path, str]:
    """Every example plan path and its current text."""
    out = {HERE / "plan.json": render(example_plan(None, ""), "../schemas/plan.schema.json")}
    for method in ("full", "lora", "qlora"):
        out[HERE / "plans" / f"{method}.json"] = render(
            example_plan(method, "../"), "../../schemas/plan.schema.json"
        )
    out[HERE / "ci" / "plans" / "ci.json"] = render(ci_plan(), "../../../schemas/plan.schema.json")
    out[HERE / "ci" / "plans" / "gpu.json"] = render(gpu_plan(), "../../../schemas/plan.schema.json")
    return out


def ci_plan() -> Plan:
    """The CI-sized plan: the embedded model, 2 optimizer steps, data at the repository's data/."""
    inputs = Inputs(hardware=EXAMPLE_CPU, model=get_model(MODEL), task=TASK, pins=Pins(max_steps=2))
    return advise(inputs).model_copy(
        update={"data": DataSpec(train_path="data/train.jsonl", eval_path="data/eval.jsonl")}
    )


def gpu_plan() -> Plan:
    """The plan a team commits for its GPU machines; CI validates, lock-checks and dry-runs it."""
    from tuneplan.advisor.catalog import gpu_hardware

    inputs = Inputs(
        hardware=gpu_hardware("A100-80GB", count=2),
        model=get_model("meta-llama/Llama-3.1-8B"),
        task=Task(domain_distance="near", forgetting_tolerance="medium", seq_len=2048, batch_size=16),
        pins=Pins(),
    )
    return advise(inputs).model_copy(
        update={"data": DataSpec(train_path="data/train.jsonl", eval_path="data/eval.jsonl")}
    )


def main() -> None:
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
