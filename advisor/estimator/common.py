"""What every group of terms shares: units, the number formats used in formula text, the dtype
regime of one (method, precision, device), the term accumulator and the parameter counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuneplan.schemas import MemoryTerm, ModelSpec


DEFAULT_HEADROOM = 0.10
"""Fraction of device capacity kept free for allocator fragmentation and transient spikes.
accelerate's model-size docs tell users to "add up to an additional 20%" on top of an estimate
(facts 6a [P]); the estimate already itemises the known transients, so 10% is kept in reserve."""

GiB = 1024**3
MiB = 1024**2

Component = Literal[
    "weights",
    "quantization_constants",
    "adapter_weights",
    "gradients",
    "optimizer_states",
    "activations",
    "logits_and_loss",
    "framework_overhead",
]


def num(x: int | float) -> str:
    """Format a number with thousands separators for formula text."""
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.6g}"
    return f"{int(x):,}"


def gib_text(x: int) -> str:
    """Format bytes as GiB for labels."""
    return f"{x / GiB:.2f} GiB"


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division (shards round up: the largest rank holds the remainder)."""
    return -(-a // b)


@dataclass(frozen=True)
class Regime:
    """Derived dtypes and switches for one (method, precision, device) combination."""

    method: str
    precision: str
    device: str
    act: int
    """Bytes per element of tensors produced by matmuls (compute dtype): 2 under bf16/fp16, 4 fp32."""
    resid: int
    """Bytes per element of the residual stream / norm outputs: 4 when the weights are fp32."""
    autocast: bool
    """torch.autocast is active (mixed precision or 16-bit LoRA with fp32 adapters)."""
    cast_per_linear: bool
    """Full fine-tuning under *-mixed: each linear saves its own 16-bit cast of an fp32 input."""
    adapter_in: int
    """Bytes per element of a LoRA adapter's saved input (fp32 adapters; 2 when autocast re-casts)."""
    mask: int
    """Bytes per element of a dropout mask: bool on CUDA, input dtype on CPU."""
    mlp_out: int
    """Bytes per element of the gate/up outputs and their product (4 when a 4-bit base's outputs are
    cast back to an fp32 residual stream)."""
    kbit_upcast: bool
    """QLoRA under peft's prepare_model_for_kbit_training: non-quantised params fp32, fp32 residual."""
    adapter_cast: bool
    """Each LoRA target makes its own copy of its input (autocast or a dtype cast to the adapters)."""


def regime_for(method: str, precision: str, device: str, kbit_upcast: bool = False) -> Regime:
    """Work out the storage dtypes that decide activation bytes for these settings.

    kbit_upcast (QLoRA as the executor runs it): peft's prepare_model_for_kbit_training casts every
    16-bit parameter that is not Params4bit to fp32, so the embedding output and the residual stream
    are fp32; bitsandbytes Linear4bit casts its input to the compute dtype and its output back to the
    input dtype (fp32), so gate/up outputs are fp32 too; the executor runs the adapters under autocast
    to the compute dtype (sdpa/flash then see 16-bit q, k, v).
    """
    fp32 = precision == "fp32"
    mixed = precision in ("bf16-mixed", "fp16-mixed")
    act = 4 if fp32 else 2
    upcast = kbit_upcast and method == "qlora" and not fp32
    if method == "full":
        resid = 4 if (fp32 or mixed) else 2
        autocast = mixed
        cast_per_linear = mixed
    else:  # frozen 16-bit (or 4-bit) base: residual stream in the compute dtype
        resid = 4 if fp32 else 2
        autocast = mixed
        cast_per_linear = False
    mlp_out = act
    if upcast:
        resid, mlp_out, autocast = 4, 4, True
    adapter_in = 2 if autocast else 4
    mask = 1 if device == "cuda" else 4
    adapter_cast = autocast or act != 4 or resid != 4
    return Regime(
        method,
        precision,
        device,
        act,
        resid,
        autocast,
        cast_per_linear,
        adapter_in,
        mask,
        mlp_out,
        upcast,
        adapter_cast,
    )


class Terms:
    """Accumulates MemoryTerms."""

    def __init__(self) -> None:
        self.items: list[MemoryTerm] = []

    def add(self, component: Component, label: str, nbytes: int, formula: str, source: str) -> None:
        """Append one itemised line (bytes are clamped at 0 and made integer)."""
        self.items.append(
            MemoryTerm(
                component=component, label=label, bytes=max(0, int(nbytes)), formula=formula, source=source
            )
        )


# ----------------------------------------------------------------------------- parameter counts


def linear_weight_params(model: ModelSpec) -> int:
    """Weights (no biases) of all block linear layers: what bitsandbytes quantises."""
    return model.num_layers * sum(m.weight_params for m in model.linear_modules)  # all experts (moe.py)


def block_params(model: ModelSpec) -> int:
    """Parameters of one decoder block (linears with biases + its norms)."""
    linear = model.params.linear // model.num_layers
    norms = max(0, model.params.norm - model.hidden_size) // model.num_layers
    return linear + norms
