"""The advisor's working state: an immutable draft that rules read and the engine updates.

A rule never mutates the draft; it returns an Outcome whose `updates` the engine applies with
`dataclasses.replace`, so every rule is a pure function of the draft it is given.

Fields carry the plan schema's own types (Method, Precision, Optimizer, ... from
tuneplan.schemas), so a value a rule sets is one the plan accepts. `fit` is the priced
configuration the memory rules (TP030-TP032) settled on: the plan's memory estimate is that
estimate, the one the rule saw, not a recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Optional, Union

from tuneplan.schemas import (
    CPUHardware,
    GPUHardware,
    Inputs,
    MemoryEstimate,
    ModelSpec,
    Pins,
    Quantization,
    Task,
)
from tuneplan.schemas.common import Attention, LRScheduler, Method, Optimizer, Precision, Strategy

from .estimator import DEFAULT_HEADROOM

AlphaConvention = Literal["fixed", "pinned"]
"""How the advisor sets LoRA alpha (LoraSettings.alpha_convention): fixed 32, or the user's pin."""


@dataclass(frozen=True)
class Fit:
    """A priced configuration of one method: the estimate and the settings it was priced under."""

    estimate: MemoryEstimate
    gradient_checkpointing: bool
    micro_batch: int
    strategy: Strategy
    optimizer: Optimizer
    cpu_offload: bool = False
    loss_chunk_size: Optional[int] = None
    activation_offload: bool = False

    @property
    def fits(self) -> bool:
        return self.estimate.fits


@dataclass(frozen=True)
class Draft:
    """Everything decided so far. Fields left None are still open."""

    inputs: Inputs
    # method
    advised_method: Optional[Method] = None
    method: Optional[Method] = None
    """None until TP025 (method-pin) sets it; later rules read `chosen_method`."""
    feasible: bool = True
    # numerics and kernels
    precision: Precision = "bf16-mixed"
    optimizer: Optimizer = "adamw"
    attention: Attention = "sdpa"
    gradient_checkpointing: bool = False
    activation_offload: bool = False
    loss_chunk_size: Optional[int] = None
    kbit_upcast: bool = True
    # batch geometry
    micro_batch: int = 1
    grad_accum: int = 1
    seq_len: int = 2048
    # distribution
    strategy: Strategy = "none"
    num_processes: int = 1
    cpu_offload: bool = False
    # LoRA
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ()
    use_rslora: bool = False
    alpha_convention: AlphaConvention = "fixed"
    # optimisation
    learning_rate: float = 2e-4
    learning_rate_band: Optional[tuple[float, float, float]] = None
    lr_scheduler: LRScheduler = "cosine"
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    num_epochs: Optional[float] = 3.0
    max_steps: Optional[int] = None
    planned_steps: Optional[int] = None
    quantization: Optional[Quantization] = None
    # bookkeeping
    headroom_fraction: float = DEFAULT_HEADROOM
    warnings: tuple[str, ...] = ()
    ways_out: tuple[str, ...] = ()
    seq_shortened_from: Optional[int] = None
    fit: Optional[Fit] = None
    """The chosen method's priced configuration, set by the memory rules (TP030/TP031/TP032)."""
    calibration: Optional[dict[str, float]] = field(default=None, compare=False)

    # ------------------------------------------------------------------ convenience
    @property
    def model(self) -> ModelSpec:
        return self.inputs.model

    @property
    def task(self) -> Task:
        return self.inputs.task

    @property
    def pins(self) -> Pins:
        return self.inputs.pins

    @property
    def hardware(self) -> Union[GPUHardware, CPUHardware]:
        return self.inputs.hardware

    @property
    def chosen_method(self) -> Method:
        """The method TP025 settled on; reading it before then is a bug in the rule order."""
        if self.method is None:
            raise RuntimeError("the method is read before TP025 (method-pin) chose it")
        return self.method

    @property
    def on_cpu(self) -> bool:
        return isinstance(self.inputs.hardware, CPUHardware)

    @property
    def on_cuda(self) -> bool:
        hw = self.inputs.hardware
        return not self.on_cpu and getattr(hw, "vendor", "nvidia") == "nvidia"

    @property
    def num_devices(self) -> int:
        return self.inputs.hardware.total_devices

    @property
    def billions(self) -> float:
        return self.inputs.model.total_params / 1e9

    @property
    def is_far(self) -> bool:
        """Far domain, or continued pretraining (which behaves like one: Biderman et al. §4.1)."""
        return self.task.domain_distance == "far" or self.task.regime == "continued-pretraining"

    def with_updates(self, updates: dict[str, Any]) -> "Draft":
        return replace(self, **updates)


def initial_draft(inputs: Inputs, calibration: Optional[dict[str, float]] = None) -> Draft:
    """The starting point: the task's batch and length on one micro-batch per device."""
    task = inputs.task
    devices = inputs.hardware.total_devices
    micro = max(1, math.ceil(task.batch_size / devices))
    return Draft(
        inputs=inputs,
        seq_len=task.seq_len,
        micro_batch=micro,
        grad_accum=1,
        num_processes=devices,
        strategy="ddp" if devices > 1 else "none",
        max_steps=inputs.pins.max_steps,
        calibration=calibration,
        kbit_upcast=True if inputs.pins.kbit_upcast is None else inputs.pins.kbit_upcast,
        activation_offload=bool(inputs.pins.activation_offload),
        loss_chunk_size=inputs.pins.loss_chunk_size,
        lora_dropout=0.05 if inputs.pins.lora_dropout is None else inputs.pins.lora_dropout,
    )
