"""Model-state terms: weights, quantisation constants, adapters, gradients and optimizer states,
after sharding (ZeRO stages, FSDP) or offload, plus the strategies' persistent buffers (DDP
allreduce buckets, FSDP all-gather) and an untied lm_head.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneplan.schemas import MemorySettings, ModelSpec

from .citations import cite
from .common import Component, Regime, Terms, block_params, ceil_div, gib_text, linear_weight_params, num


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


def state_terms(t: Terms, model: ModelSpec, st: MemorySettings, rg: Regime, trainable: int,
                 targets: list[str], shard: Shard) -> None:
    """Weights, quantisation constants, adapters, gradients and optimizer states."""
    P = model.total_params
    opt = st.optimizer
    zero_itemisation = st.strategy in ("deepspeed-zero2", "deepspeed-zero3")

    def place(component: Component, label: str, raw: int, divisor: int, offloaded: bool,
              formula: str, source: str) -> None:
        """Add a state term after sharding; offloaded states become a 0-byte host-memory note."""
        per_dev = ceil_div(raw, divisor)
        shard_txt = f" / N_d={divisor}" if divisor > 1 else ""
        if offloaded:
            t.add(component, f"{label} — offloaded to host RAM ({gib_text(per_dev)} per rank on the host)", 0,
                  f"{formula}{shard_txt} = {num(per_dev)} B in host memory, 0 B on the device", cite("cpu-offload"))
        else:
            t.add(component, label, per_dev, f"{formula}{shard_txt} = {num(per_dev)} B", source)

    def optimizer_bytes(param_bytes: int) -> tuple[int, str, str]:
        """Optimizer state bytes per trainable param (without any fp32 master copy)."""
        if opt == "adamw":
            per = 2 * param_bytes
            return per, f"AdamW m+v in the parameter dtype ({param_bytes} B each)", (
                cite("pure-bf16") if param_bytes == 2 else cite("hf-anatomy"))
        if opt in ("adamw-8bit", "paged-adamw-8bit"):
            extra = " (paged: device-resident until the GPU runs out)" if opt.startswith("paged") else ""
            return 2, f"8-bit AdamW m+v (1 B each){extra}", (cite("hf-anatomy", "paged") if extra else cite("hf-anatomy"))
        return 8, "paged 32-bit AdamW m+v (4 B each; device-resident until the GPU runs out)", (
            cite("hf-anatomy", "paged"))

    if st.method == "full":
        if st.precision in ("bf16-mixed", "fp16-mixed"):
            if zero_itemisation:
                place("weights", "16-bit working copy of all parameters", 2 * P, shard.weights,
                      shard.offload_params, f"{num(P)} params × 2 B", cite("zero"))
                place("gradients", "16-bit gradients of all parameters", 2 * P, shard.grads,
                      shard.offload_grads, f"{num(P)} params × 2 B", cite("zero"))
                per, what, src = optimizer_bytes(4)
                place("optimizer_states", f"fp32 master weights (4 B) + {what}", (4 + per) * P, shard.optim,
                      shard.offload_optim, f"{num(P)} params × (4 + {per}) B", cite("zero") + "; " + src)
            else:
                place("weights", "fp32 master weights (autocast computes in 16-bit)", 4 * P, shard.weights,
                      shard.offload_params, f"{num(P)} params × 4 B", cite("hf-anatomy", "zero"))
                place("gradients", "fp32 gradients of all parameters", 4 * P, shard.grads, shard.offload_grads,
                      f"{num(P)} params × 4 B", cite("hf-anatomy"))
                per, what, src = optimizer_bytes(4)
                place("optimizer_states", what, per * P, shard.optim, shard.offload_optim,
                      f"{num(P)} params × {per} B", src)
        else:
            pb = 4 if st.precision == "fp32" else 2
            src_w = cite("biderman-app-h") if pb == 4 else cite("pure-bf16")
            place("weights", f"{'fp32' if pb == 4 else 'bf16'} weights", pb * P, shard.weights,
                  shard.offload_params, f"{num(P)} params × {pb} B", src_w)
            place("gradients", f"{'fp32' if pb == 4 else 'bf16'} gradients", pb * P, shard.grads,
                  shard.offload_grads, f"{num(P)} params × {pb} B", src_w)
            per, what, src = optimizer_bytes(pb)
            place("optimizer_states", what, per * P, shard.optim, shard.offload_optim,
                  f"{num(P)} params × {per} B", src if opt != "adamw" else src_w)
        return

    # ---- LoRA / QLoRA: frozen base + fp32 adapters
    base_b = 4 if st.precision == "fp32" else 2
    if st.method == "lora":
        place("weights", f"frozen base weights in {'fp32' if base_b == 4 else '16-bit'}", base_b * P,
              shard.weights, shard.offload_params, f"{num(P)} params × {base_b} B", cite("lora", "biderman-app-h"))
    else:
        qw = linear_weight_params(model)
        rest = P - qw
        place("weights", "NF4 block linear weights (4 bits/param)", ceil_div(qw, 2), shard.weights,
              shard.offload_params, f"{num(qw)} params × 4 bits / 8", cite("nf4"))
        place("weights", "unquantised embeddings, lm_head, norms and biases",
              base_b * rest, shard.weights, shard.offload_params,
              f"{num(rest)} params × {base_b} B", cite("keep-16bit"))
        if rg.kbit_upcast:
            place("weights", "fp32 upcast of the unquantised parameters (prepare_model_for_kbit_training)",
                  (4 - base_b) * rest, shard.weights, shard.offload_params,
                  f"{num(rest)} params × (4 − {base_b}) B", cite("kbit-upcast"))
        blocks = ceil_div(qw, 64)
        if st.double_quant:
            # 8-bit absmax per 64 weights + an fp32 absmax per 256 first-level constants.
            consts = blocks * 1 + ceil_div(blocks, 256) * 4
            f = (f"{num(qw)} params: {num(blocks)} blocks of 64 × 1 B (8-bit absmax) + "
                 f"{num(ceil_div(blocks, 256))} × 4 B (fp32 absmax per 256 constants) "
                 f"[= 8/64 + 32/(64·256) bits/param]")
            label = "NF4 double-quantised block constants"
        else:
            consts = blocks * 4
            f = f"{num(qw)} params: {num(blocks)} blocks of 64 × 4 B (fp32 absmax) [= 32/64 bits/param]"
            label = "NF4 block constants (fp32 absmax, no double quantisation)"
        place("quantization_constants", label, consts, shard.weights, shard.offload_params, f, cite("double-quant"))
    place("adapter_weights", f"LoRA A,B for {', '.join(targets)} (r={st.lora_rank}) in fp32", 4 * trainable,
          shard.weights, shard.offload_params, f"{num(trainable)} adapter params × 4 B", cite("lora"))
    place("gradients", "fp32 gradients of the adapters", 4 * trainable, shard.grads, shard.offload_grads,
          f"{num(trainable)} adapter params × 4 B", cite("lora"))
    per, what, src = optimizer_bytes(4)
    place("optimizer_states", f"{what} for the adapters", per * trainable, shard.optim, shard.offload_optim,
          f"{num(trainable)} adapter params × {per} B", src)



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
            ("weights", shard.weights), ("gradients", shard.grads), ("optimizer_states", shard.optim))
        for comp, div in per_state:
            have = sum(x.bytes for x in t.items if x.component == comp)
            per = have * div / P
            nb = ceil_div(int(round(per * n)), div) if have else 0
            t.add(comp, "untied lm_head (its own V·h weight)", nb,
                  f"V·h {num(n)} × {per:.3g} B/param (as the other parameters){f' / N_d={div}' if div > 1 else ''} "
                  f"= {num(nb)} B", src)
        return
    pb = (4 if st.precision == "fp32" or rg.kbit_upcast else 2)
    nb = ceil_div(pb * n, shard.weights)
    t.add("weights", "untied lm_head (frozen, its own V·h weight)", nb, f"V·h {num(n)} × {pb} B = {num(nb)} B", src)


def strategy_buffer_terms(t: Terms, model: ModelSpec, st: MemorySettings) -> None:
    """Buffers a strategy allocates once and keeps: DDP's gradient-sized allreduce buckets, FSDP's
    (ZeRO-3's) all-gather of one block plus the prefetched next one."""
    if st.strategy == "ddp" and st.num_devices > 1:
        g = sum(x.bytes for x in t.items if x.component == "gradients")
        t.add("gradients", "DDP allreduce buckets (gradient-sized)", g,
              f"= gradient bytes {num(g)} B (gradient_as_bucket_view=False)", cite("ddp-buckets"))
    if st.strategy in ("fsdp", "deepspeed-zero3") and st.num_devices > 1:
        bp = block_params(model)
        if st.method == "qlora":
            per, per_f = ((0.5 + 0.127 / 8, "0.516 B (NF4+DQ)") if st.double_quant
                          else (0.5 + 0.5 / 8, "0.5625 B (NF4, fp32 absmax)"))
            gb = int(2 * bp * per)
        else:
            pb = 4 if st.precision == "fp32" else 2
            per_f = f"{pb} B"
            gb = 2 * bp * pb
        t.add("weights", "all-gathered parameters of one block (+ the prefetched next block)", gb,
              f"2 × {num(bp)} block params × {per_f} = {num(gb)} B", cite("fsdp-gather"))
