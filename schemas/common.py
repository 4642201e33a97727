"""Shared base model and small enumerations used across tuneplan's schemas."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

GiB = 1024**3
GB = 1000**3


class Strict(BaseModel):
    """Base for every tuneplan schema: unknown keys are errors, docstrings become descriptions."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=True,
        populate_by_name=False,
    )


Method = Literal["full", "lora", "qlora"]
"""How the model is adapted: every weight (full), a 16-bit frozen base plus LoRA adapters
(lora), or a 4-bit NF4 frozen base plus LoRA adapters (qlora)."""

METHODS: tuple[Method, ...] = ("full", "lora", "qlora")

DomainDistance = Literal["near", "moderate", "far"]
ForgettingTolerance = Literal["low", "medium", "high"]
Regime = Literal["instruction", "continued-pretraining"]
Precision = Literal["bf16-mixed", "bf16", "fp16-mixed", "fp32"]
Optimizer = Literal["adamw", "adamw-8bit", "paged-adamw-8bit", "paged-adamw-32bit"]
Attention = Literal["eager", "sdpa", "flash"]
Strategy = Literal["none", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
LRScheduler = Literal["constant", "constant_with_warmup", "cosine", "linear"]
