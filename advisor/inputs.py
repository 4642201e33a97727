"""Turn loose answers (CLI flags, TUI fields) into validated Inputs, reporting every problem at once.

Used by `tuneplan advise` and the TUI, so both validate with the same code and name the same
flags. Pure: stdlib + pydantic (through the schemas) + the catalog and hardware detection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from pydantic import ValidationError

from tuneplan.schemas import CPUHardware, GPUHardware, Inputs, ModelSpec, Pins, Task

from . import catalog
from .hardware import cpu_hardware, detect_hardware
from tuneplan.base.errors import InputError, Problem, pydantic_problems

TASK_FLAGS = {
    "domain_distance": "--domain",
    "forgetting_tolerance": "--forgetting",
    "seq_len": "--seq-len",
    "batch_size": "--batch-size",
    "regime": "--regime",
    "domain_label": "--domain-label",
    "dataset_tokens": "--dataset-tokens",
    "needs_fresh_facts": "--needs-fresh-facts",
}
PIN_FLAGS = {
    "method": "--method",
    "lora_rank": "--lora-rank",
    "lora_alpha": "--lora-alpha",
    "target_modules": "--target-modules",
    "precision": "--precision",
    "gradient_checkpointing": "--gradient-checkpointing",
    "optimizer": "--optimizer",
    "attention": "--attention",
    "learning_rate": "--learning-rate",
    "max_steps": "--max-steps",
}


@dataclass
class Answers:
    """Everything a user can say, as plain values; None means "not given"."""

    model: Optional[str] = None
    params: Optional[str] = None
    gpu: Optional[str] = None
    gpu_memory: Optional[float] = None
    cpu: bool = False
    cpu_name: Optional[str] = None
    cpu_memory: Optional[float] = None
    cpu_cores: Optional[int] = None
    gpus: int = 1
    nodes: int = 1
    task: dict[str, Any] = field(default_factory=dict)
    pins: dict[str, Any] = field(default_factory=dict)
    data: Optional[str] = None
    """Training file to read seq_len, dataset tokens and rows from (advisor/datastats.py)."""
    eval_data: Optional[str] = None
    """In-domain eval file; when given no rows are carved off the training data."""


def resolve_model(answers: Answers) -> ModelSpec:
    """--model (catalog id or local directory) or --params; raises InputError."""
    if answers.model and answers.params:
        raise InputError.one("--params", "give --model or --params, not both", "drop one of them")
    if answers.params:
        return catalog.guess_model(answers.params)
    if not answers.model:
        raise InputError.one(
            "--model",
            "no model given",
            "pass a catalog id (see `tuneplan models`), a local model directory, or --params 7B",
        )
    if os.path.isdir(answers.model) or answers.model.startswith((".", "/", "~")):
        return catalog.model_from_dir(answers.model)
    try:
        return catalog.get_model(answers.model)
    except InputError:
        from . import hub

        if not hub.looks_like_repo_id(answers.model.strip()):
            raise
        return hub.model_from_hub(answers.model.strip())


def resolve_hardware(answers: Answers) -> Union[GPUHardware, CPUHardware]:
    """--gpu / --gpu-memory / --cpu (at most one), else detection; raises InputError."""
    given = [
        f
        for f, v in (("--gpu", answers.gpu), ("--gpu-memory", answers.gpu_memory), ("--cpu", answers.cpu))
        if v
    ]
    if len(given) > 1:
        raise InputError.one(
            given[1], f"{' and '.join(given)} are exclusive", "give one way to describe the hardware"
        )
    if answers.gpus < 1:
        raise InputError.one("--gpus", f"must be at least 1, got {answers.gpus}", "use --gpus 1 or more")
    if answers.gpu:
        return catalog.gpu_hardware(answers.gpu, count=answers.gpus, nodes=answers.nodes)
    if answers.gpu_memory is not None:
        if answers.gpu_memory <= 0:
            raise InputError.one(
                "--gpu-memory", f"must be positive GiB, got {answers.gpu_memory}", "e.g. --gpu-memory 24"
            )
        return catalog.custom_gpu(answers.gpu_memory, count=answers.gpus, nodes=answers.nodes)
    if answers.cpu:
        hw = cpu_hardware(name=answers.cpu_name, memory_gib=answers.cpu_memory, cores=answers.cpu_cores)
        return hw.model_copy(update={"count": answers.gpus}) if answers.gpus > 1 else hw
    return detect_hardware()


def build_inputs(answers: Answers) -> Inputs:
    """Validate every answer; raise one InputError listing all problems with their flags."""
    problems: list[Problem] = []
    model: Optional[ModelSpec] = None
    hardware: Optional[Union[GPUHardware, CPUHardware]] = None
    task: Optional[Task] = None
    pins: Optional[Pins] = None
    try:
        model = resolve_model(answers)
    except InputError as e:
        problems += e.problems
    try:
        hardware = resolve_hardware(answers)
    except InputError as e:
        problems += e.problems
    task_answers = {k: v for k, v in answers.task.items() if v is not None}
    data_stats = None
    if answers.data and model is not None:
        from .datastats import read_data_stats

        try:
            pinned = task_answers.get("seq_len")
            data_stats = read_data_stats(
                answers.data,
                model,
                seq_len=pinned if isinstance(pinned, int) else None,
                eval_path=answers.eval_data,
            )
        except InputError as e:
            problems += e.problems
        else:
            task_answers.setdefault("seq_len", data_stats.proposed_seq_len)
            task_answers.setdefault("dataset_tokens", data_stats.trained_tokens)
    try:
        task = Task(**task_answers)
    except ValidationError as e:
        problems += pydantic_problems(e, flags=TASK_FLAGS)
    try:
        pins = Pins(**{k: v for k, v in answers.pins.items() if v is not None})
    except ValidationError as e:
        problems += pydantic_problems(e, flags=PIN_FLAGS)
    if model is not None and pins is not None and pins.target_modules:
        from .modelspec import resolve_targets

        try:
            resolve_targets(model, pins.target_modules)
        except ValueError as e:
            problems.append(Problem("--target-modules", str(e), "use all-linear or the names listed"))
    if model is not None and pins is not None and pins.lora_rank and pins.method == "full":
        problems.append(
            Problem(
                "--lora-rank",
                "a LoRA rank was given with --method full",
                "drop --lora-rank or choose --method lora/qlora",
            )
        )
    if model is not None and pins is not None and pins.lora_alpha and pins.method == "full":
        problems.append(
            Problem(
                "--lora-alpha",
                "a LoRA alpha was given with --method full",
                "drop --lora-alpha or choose --method lora/qlora",
            )
        )
    if model is not None and task is not None and task.seq_len > model.max_position_embeddings:
        problems.append(
            Problem(
                "--seq-len",
                f"{task.seq_len} exceeds {model.name}'s context of {model.max_position_embeddings} tokens",
                f"use --seq-len {model.max_position_embeddings} or less",
            )
        )
    if problems:
        raise InputError(problems)
    assert model is not None and hardware is not None and task is not None and pins is not None
    return Inputs(hardware=hardware, model=model, task=task, pins=pins, data_stats=data_stats)
