"""Weight terms: the base weights by method and precision (fp32 master copy, 16-bit, NF4 with its
quantisation constants, the kbit upcast), the LoRA adapters, and an untied lm_head.
"""

from __future__ import annotations

from tuneplan.schemas import MemorySettings, ModelSpec

from .citations import cite
from .common import Component, Regime, Terms, ceil_div, linear_weight_params, num
from .sharding import Shard, place


def weight_terms(
    t: Terms,
    model: ModelSpec,
    st: MemorySettings,
    rg: Regime,
    trainable: int,
    targets: list[str],
    shard: Shard,
) -> None:
    """Weights, quantisation constants and adapters, after sharding (before the gradient terms)."""
    P = model.total_params
    if st.method == "full":
        if st.precision in ("bf16-mixed", "fp16-mixed"):
            if st.strategy in ("deepspeed-zero2", "deepspeed-zero3"):
                place(
                    t,
                    "weights",
                    "16-bit working copy of all parameters",
                    2 * P,
                    shard.weights,
                    shard.offload_params,
                    f"{num(P)} params × 2 B",
                    cite("zero"),
                )
            else:
                place(
                    t,
                    "weights",
                    "fp32 master weights (autocast computes in 16-bit)",
                    4 * P,
                    shard.weights,
                    shard.offload_params,
                    f"{num(P)} params × 4 B",
                    cite("hf-anatomy", "zero"),
                )
        else:
            pb = 4 if st.precision == "fp32" else 2
            src_w = cite("biderman-app-h") if pb == 4 else cite("pure-bf16")
            place(
                t,
                "weights",
                f"{'fp32' if pb == 4 else 'bf16'} weights",
                pb * P,
                shard.weights,
                shard.offload_params,
                f"{num(P)} params × {pb} B",
                src_w,
            )
        return

    # ---- LoRA / QLoRA: frozen base + fp32 adapters
    base_b = 4 if st.precision == "fp32" else 2
    if st.method == "lora":
        place(
            t,
            "weights",
            f"frozen base weights in {'fp32' if base_b == 4 else '16-bit'}",
            base_b * P,
            shard.weights,
            shard.offload_params,
            f"{num(P)} params × {base_b} B",
            cite("lora", "biderman-app-h"),
        )
    else:
        qw = linear_weight_params(model)
        rest = P - qw
        place(
            t,
            "weights",
            "NF4 block linear weights (4 bits/param)",
            ceil_div(qw, 2),
            shard.weights,
            shard.offload_params,
            f"{num(qw)} params × 4 bits / 8",
            cite("nf4"),
        )
        place(
            t,
            "weights",
            "unquantised embeddings, lm_head, norms and biases",
            base_b * rest,
            shard.weights,
            shard.offload_params,
            f"{num(rest)} params × {base_b} B",
            cite("keep-16bit"),
        )
        if rg.kbit_upcast:
            place(
                t,
                "weights",
                "fp32 upcast of the unquantised parameters (prepare_model_for_kbit_training)",
                (4 - base_b) * rest,
                shard.weights,
                shard.offload_params,
                f"{num(rest)} params × (4 − {base_b}) B",
                cite("kbit-upcast"),
            )
        blocks = ceil_div(qw, 64)
        if st.double_quant:
            # 8-bit absmax per 64 weights + an fp32 absmax per 256 first-level constants.
            consts = blocks * 1 + ceil_div(blocks, 256) * 4
            f = (
                f"{num(qw)} params: {num(blocks)} blocks of 64 × 1 B (8-bit absmax) + "
                f"{num(ceil_div(blocks, 256))} × 4 B (fp32 absmax per 256 constants) "
                f"[= 8/64 + 32/(64·256) bits/param]"
            )
            label = "NF4 double-quantised block constants"
        else:
            consts = blocks * 4
            f = f"{num(qw)} params: {num(blocks)} blocks of 64 × 4 B (fp32 absmax) [= 32/64 bits/param]"
            label = "NF4 block constants (fp32 absmax, no double quantisation)"
        place(
            t,
            "quantization_constants",
            label,
            consts,
            shard.weights,
            shard.offload_params,
            f,
            cite("double-quant"),
        )
    place(
        t,
        "adapter_weights",
        f"LoRA A,B for {', '.join(targets)} (r={st.lora_rank}) in fp32",
        4 * trainable,
        shard.weights,
        shard.offload_params,
        f"{num(trainable)} adapter params × 4 B",
        cite("lora"),
    )


def untied_head_terms(t: Terms, model: ModelSpec, st: MemorySettings, rg: Regime, shard: Shard) -> None:
    """settings.untied_head on a tied-embedding model: the stack gives lm_head its own V·h weight,
    stored like the other parameters (full fine-tuning: the same bytes per parameter for weights,
    gradients and optimizer states as the rest; LoRA/QLoRA: a frozen 16-bit weight, fp32 under the
    kbit upcast). Counted once when the model is untied already."""
    if not st.untied_head or not model.tie_word_embeddings:
        return
    n = model.vocab_size * model.hidden_size
    P = max(1, model.total_params)
    src = cite("untied-head")
    if st.method == "full":
        per_state: tuple[tuple[Component, int], ...] = (
            ("weights", shard.weights),
            ("gradients", shard.grads),
            ("optimizer_states", shard.optim),
        )
        for comp, div in per_state:
            have = sum(x.bytes for x in t.items if x.component == comp)
            per = have * div / P
            nb = ceil_div(int(round(per * n)), div) if have else 0
            t.add(
                comp,
                "untied lm_head (its own V·h weight)",
                nb,
                f"V·h {num(n)} × {per:.3g} B/param (as the other parameters){f' / N_d={div}' if div > 1 else ''} "
                f"= {num(nb)} B",
                src,
            )
        return
    pb = 4 if st.precision == "fp32" or rg.kbit_upcast else 2
    nb = ceil_div(pb * n, shard.weights)
    t.add(
        "weights",
        "untied lm_head (frozen, its own V·h weight)",
        nb,
        f"V·h {num(n)} × {pb} B = {num(nb)} B",
        src,
    )
