"""Gradient and optimizer-state terms: what each trainable parameter costs in gradients and in
AdamW's moments (32-bit, 8-bit, paged), with the fp32 master copy under ZeRO mixed precision.
"""

from __future__ import annotations

from tuneplan.schemas import MemorySettings, ModelSpec
from tuneplan.schemas.common import Optimizer

from .citations import cite
from .common import Terms, num
from .sharding import Shard, place


def optimizer_bytes(opt: Optimizer, param_bytes: int) -> tuple[int, str, str]:
    """Optimizer state bytes per trainable param (without any fp32 master copy), label, source."""
    if opt == "adamw":
        per = 2 * param_bytes
        return (
            per,
            f"AdamW m+v in the parameter dtype ({param_bytes} B each)",
            (cite("pure-bf16") if param_bytes == 2 else cite("hf-anatomy")),
        )
    if opt in ("adamw-8bit", "paged-adamw-8bit"):
        extra = " (paged: device-resident until the GPU runs out)" if opt.startswith("paged") else ""
        return (
            2,
            f"8-bit AdamW m+v (1 B each){extra}",
            (cite("hf-anatomy", "paged") if extra else cite("hf-anatomy")),
        )
    return (
        8,
        "paged 32-bit AdamW m+v (4 B each; device-resident until the GPU runs out)",
        (cite("hf-anatomy", "paged")),
    )


def gradient_and_optimizer_terms(
    t: Terms, model: ModelSpec, st: MemorySettings, trainable: int, shard: Shard
) -> None:
    """Gradients and optimizer states of the trainable parameters, after sharding or offload."""
    P = model.total_params
    opt = st.optimizer
    if st.method == "full":
        if st.precision in ("bf16-mixed", "fp16-mixed"):
            if st.strategy in ("deepspeed-zero2", "deepspeed-zero3"):
                place(
                    t,
                    "gradients",
                    "16-bit gradients of all parameters",
                    2 * P,
                    shard.grads,
                    shard.offload_grads,
                    f"{num(P)} params × 2 B",
                    cite("zero"),
                )
                per, what, src = optimizer_bytes(opt, 4)
                place(
                    t,
                    "optimizer_states",
                    f"fp32 master weights (4 B) + {what}",
                    (4 + per) * P,
                    shard.optim,
                    shard.offload_optim,
                    f"{num(P)} params × (4 + {per}) B",
                    cite("zero") + "; " + src,
                )
            else:
                place(
                    t,
                    "gradients",
                    "fp32 gradients of all parameters",
                    4 * P,
                    shard.grads,
                    shard.offload_grads,
                    f"{num(P)} params × 4 B",
                    cite("hf-anatomy"),
                )
                per, what, src = optimizer_bytes(opt, 4)
                place(
                    t,
                    "optimizer_states",
                    what,
                    per * P,
                    shard.optim,
                    shard.offload_optim,
                    f"{num(P)} params × {per} B",
                    src,
                )
        else:
            pb = 4 if st.precision == "fp32" else 2
            src_w = cite("biderman-app-h") if pb == 4 else cite("pure-bf16")
            place(
                t,
                "gradients",
                f"{'fp32' if pb == 4 else 'bf16'} gradients",
                pb * P,
                shard.grads,
                shard.offload_grads,
                f"{num(P)} params × {pb} B",
                src_w,
            )
            per, what, src = optimizer_bytes(opt, pb)
            place(
                t,
                "optimizer_states",
                what,
                per * P,
                shard.optim,
                shard.offload_optim,
                f"{num(P)} params × {per} B",
                src if opt != "adamw" else src_w,
            )
        return
    place(
        t,
        "gradients",
        "fp32 gradients of the adapters",
        4 * trainable,
        shard.grads,
        shard.offload_grads,
        f"{num(trainable)} adapter params × 4 B",
        cite("lora"),
    )
    per, what, src = optimizer_bytes(opt, 4)
    place(
        t,
        "optimizer_states",
        f"{what} for the adapters",
        per * trainable,
        shard.optim,
        shard.offload_optim,
        f"{num(trainable)} adapter params × {per} B",
        src,
    )
