"""How model states are divided over devices (ZeRO stages, FSDP) or offloaded, and the buffers a
strategy keeps: DDP's allreduce buckets, FSDP's all-gather of one block.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneplan.schemas import MemorySettings, ModelSpec

from .citations import cite
from .common import Component, Terms, block_params, ceil_div, gib_text, num


@dataclass
class Shard:
    """How each kind of state is divided over devices, and what is offloaded."""

    weights: int
    grads: int
    optim: int
    offload_params: bool
    offload_grads: bool
    offload_optim: bool
    note: str


def sharding(settings: MemorySettings) -> Shard:
    """Translate strategy/num_devices/cpu_offload into divisors (ZeRO stages, facts 6b)."""
    n = settings.num_devices
    s = settings.strategy
    off = settings.cpu_offload
    if s in ("none", "ddp"):
        return Shard(1, 1, 1, False, False, off, f"{s}: replicated")
    if s == "deepspeed-zero2":
        return Shard(1, n, n, False, False, off, f"ZeRO-2 over N_d={n}: gradients and optimizer states /N_d")
    # fsdp / deepspeed-zero3
    return Shard(n, n, n, off, off, off, f"{s} over N_d={n}: parameters, gradients and optimizer states /N_d")


def place(
    t: Terms,
    component: Component,
    label: str,
    raw: int,
    divisor: int,
    offloaded: bool,
    formula: str,
    source: str,
) -> None:
    """Add a state term after sharding; offloaded states become a 0-byte host-memory note."""
    per_dev = ceil_div(raw, divisor)
    shard_txt = f" / N_d={divisor}" if divisor > 1 else ""
    if offloaded:
        t.add(
            component,
            f"{label} — offloaded to host RAM ({gib_text(per_dev)} per rank on the host)",
            0,
            f"{formula}{shard_txt} = {num(per_dev)} B in host memory, 0 B on the device",
            cite("cpu-offload"),
        )
    else:
        t.add(component, label, per_dev, f"{formula}{shard_txt} = {num(per_dev)} B", source)


def strategy_buffer_terms(t: Terms, model: ModelSpec, st: MemorySettings) -> None:
    """Buffers a strategy allocates once and keeps: DDP's gradient-sized allreduce buckets, FSDP's
    (ZeRO-3's) all-gather of one block plus the prefetched next one."""
    if st.strategy == "ddp" and st.num_devices > 1:
        g = sum(x.bytes for x in t.items if x.component == "gradients")
        t.add(
            "gradients",
            "DDP allreduce buckets (gradient-sized)",
            g,
            f"= gradient bytes {num(g)} B (gradient_as_bucket_view=False)",
            cite("ddp-buckets"),
        )
    if st.strategy in ("fsdp", "deepspeed-zero3") and st.num_devices > 1:
        bp = block_params(model)
        if st.method == "qlora":
            per, per_f = (
                (0.5 + 0.127 / 8, "0.516 B (NF4+DQ)")
                if st.double_quant
                else (0.5 + 0.5 / 8, "0.5625 B (NF4, fp32 absmax)")
            )
            gb = int(2 * bp * per)
        else:
            pb = 4 if st.precision == "fp32" else 2
            per_f = f"{pb} B"
            gb = 2 * bp * pb
        t.add(
            "weights",
            "all-gathered parameters of one block (+ the prefetched next block)",
            gb,
            f"2 × {num(bp)} block params × {per_f} = {num(gb)} B",
            cite("fsdp-gather"),
        )
