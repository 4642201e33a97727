"""Activation terms: the saved-tensor inventory of one decoder block (Korthikanti et al. 2022
re-derived per tensor), over all blocks or under gradient checkpointing, the tensors outside the
blocks, the backward working set, and activation offload to host RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneplan.schemas import MemorySettings, MemoryTerm, ModelSpec

from ..moe import active_ffn_width
from .citations import cite
from .common import Regime, Terms, gib_text, linear_weight_params, num
from .loss import loss_bytes


@dataclass
class SavedItem:
    """One saved tensor kind in a block: bytes per token and how it was computed."""

    group: str
    label: str
    per_token: int
    formula: str


def block_inventory(model: ModelSpec, st: MemorySettings, rg: Regime, targets: list[str]) -> list[SavedItem]:
    """Bytes per token saved for backward by ONE decoder block (no checkpointing).

    The groups: norms, attention core, attention scores (eager only), MLP internals, linear inputs
    (full fine-tuning), LoRA adapter inputs. Verified tensor-by-tensor against
    torch.autograd.graph.saved_tensors_hooks on a tiny Llama (fp32, CPU).
    """
    h, f = model.hidden_size, active_ffn_width(model)
    a, kv, hd = model.num_attention_heads, model.num_key_value_heads, model.head_dim
    q_w, kv_w = a * hd, kv * hd
    D, R = rg.act, rg.resid
    full = st.method == "full"
    gpt = model.family in ("gpt2", "gpt3")
    items: list[SavedItem] = []

    # Norms: RMSNorm keeps its fp32 upcast input (+ a 4 B rsqrt per token); LayerNorm its input (+ mean,
    # rstd). With a trainable norm weight, RMSNorm also keeps the normalised tensor for the weight grad.
    n_norms = 4 if model.family == "gemma2" else 2
    if gpt:
        per = n_norms * (R * h + 8)
        items.append(
            SavedItem(
                "norms",
                f"{n_norms} LayerNorm inputs (+mean, rstd)",
                per,
                f"{n_norms}·({R}·h + 8) = {n_norms}·({R}·{h} + 8)",
            )
        )
    else:
        normed = R * h if full else 0
        per = n_norms * (4 * h + 4 + normed)
        items.append(
            SavedItem(
                "norms",
                f"{n_norms} RMSNorm fp32 inputs + rsqrt"
                + (" + normalised (trainable weight)" if full else ""),
                per,
                f"{n_norms}·(4·h + 4{f' + {R}·h' if full else ''}) with h={h}",
            )
        )

    # Attention core.
    if st.attention in ("sdpa", "flash"):
        per = D * (q_w + 2 * kv_w + q_w) + 4 * a
        items.append(
            SavedItem(
                "attention",
                "sdpa/flash: q, k, v, output (+fp32 logsumexp)",
                per,
                f"{D}·(q {q_w} + k {kv_w} + v {kv_w} + out {q_w}) + 4·a {a}",
            )
        )
    else:
        s = st.seq_len
        per_qkv = D * 3 * q_w
        cast = D * a * s if D == 2 else 0
        items.append(
            SavedItem(
                "attention",
                "eager: q and k, v repeated to all heads",
                per_qkv,
                f"{D}·3·a·head_dim = {D}·3·{q_w}",
            )
        )
        items.append(
            SavedItem(
                "scores",
                "eager: fp32 softmax(QK^T)" + (" + its 16-bit cast" if cast else ""),
                4 * a * s + cast,
                f"(4{' + ' + str(D) if cast else ''})·a·s = {4 + (D if cast else 0)}·{a}·{s}",
            )
        )

    # MLP internals needed for input gradients regardless of which weights train.
    M = rg.mlp_out
    if model.gated_mlp:
        items.append(
            SavedItem(
                "mlp",
                "gated MLP: gate, up and act(gate) outputs"
                + (" (fp32: Linear4bit casts back to the fp32 input dtype)" if M != D else ""),
                3 * M * f,
                f"3·{M}·ffn = 3·{M}·{f}",
            )
        )
    else:
        items.append(SavedItem("mlp", "MLP: fc output (activation input)", M * f, f"{M}·ffn = {M}·{f}"))
    if gpt:
        items.append(
            SavedItem(
                "mlp",
                "GPT-2 residual dropout masks (2 per block)",
                2 * rg.mask * h,
                f"2·{rg.mask}·h = 2·{rg.mask}·{h}",
            )
        )

    # Inputs of the linear layers, grouped by the tensor they read.
    attn = [m for m in model.linear_modules if m.kind == "attention"]
    mlp = [m for m in model.linear_modules if m.kind == "mlp"]
    groups = [
        ("attention input (norm output)", attn[:-1], "norm"),
        ("attention output", attn[-1:], "attn_out"),
        ("MLP input (norm output)", mlp[:-1], "norm"),
        ("MLP hidden (down-projection input)", mlp[-1:], "hidden"),
    ]
    if full:
        per = 0
        parts: list[str] = []
        for label, mods, kind in groups:
            if not mods:
                continue
            width = mods[0].in_features
            if kind == "norm":
                if rg.cast_per_linear:  # autocast: one 16-bit copy per consuming linear
                    b = len(mods) * D * width
                    parts.append(f"{len(mods)}·{D}·{width} ({label}, autocast copy per linear)")
                else:
                    b = R * width
                    parts.append(f"{R}·{width} ({label})")
            elif kind == "attn_out":
                if st.attention in ("sdpa", "flash"):
                    continue  # the sdpa output itself (already counted) is what the projection saves
                b = D * width
                parts.append(f"{D}·{width} ({label}, contiguous copy)")
            else:
                b = D * width
                parts.append(f"{D}·{width} ({label})")
            per += b
        items.append(
            SavedItem("linear_inputs", "inputs saved by trainable linear layers", per, " + ".join(parts))
        )
    else:
        r = st.lora_rank or 0
        dropout = st.lora_dropout is None or st.lora_dropout > 0
        A = rg.adapter_in
        per = 0
        parts = []
        for _label, mods, kind in groups:
            shared_done = False
            for m in mods:
                if m.name not in targets:
                    continue
                if dropout:
                    # each target drops its own copy of the input and keeps the mask
                    b = (rg.mask + A) * m.in_features + A * r
                    parts.append(f"{m.name}: ({rg.mask} mask + {A} dropped input)·{m.in_features} + {A}·{r}")
                elif rg.adapter_cast:
                    # nn.Identity, but autocast/dtype cast still gives each lora_A its own copy
                    b = A * m.in_features + A * r
                    parts.append(f"{m.name}: {A}·{m.in_features} (cast input) + {A}·{r}")
                else:
                    # nn.Identity and no cast: lora_A saves the shared input tensor itself, once per
                    # input (the sdpa output is already counted in the attention core)
                    same = shared_done or (kind == "attn_out" and st.attention in ("sdpa", "flash"))
                    b = (0 if same else A * m.in_features) + A * r
                    parts.append(f"{m.name}: {'shared input' if same else f'{A}·{m.in_features}'} + {A}·{r}")
                    shared_done = True
                per += b
        if per:
            what = (
                "dropout mask + dropped input" if dropout else "input (dropout 0: no mask, no dropped copy)"
            ) + " + A output per target"
            items.append(SavedItem("lora", f"LoRA: {what}", per, " + ".join(parts)))
    return items


def block_phase(model: ModelSpec, st: MemorySettings, rg: Regime, items: list[SavedItem]) -> tuple[int, str]:
    """Bytes per token while ONE block is back-propagated: its saved inventory plus its gradient
    transients (the gate/up gradients, 2·M·ffn; with eager attention the fp32 softmax gradients,
    8·a·s, while the MLP's saved tensors are already freed), and the formula text."""
    s = st.seq_len
    block = sum(i.per_token for i in items)
    f_mlp = active_ffn_width(model)
    mlp_saved = sum(i.per_token for i in items if i.group == "mlp")
    phase_mlp = block + 2 * rg.mlp_out * f_mlp
    phase_attn = block - mlp_saved + 8 * model.num_attention_heads * s if st.attention == "eager" else 0
    f = (
        f"max(block {num(block)} + 2·{rg.mlp_out}·ffn {f_mlp}"
        + (f", block − MLP {num(mlp_saved)} + 8·a·s (fp32 softmax grads)" if st.attention == "eager" else "")
        + ")"
    )
    return max(phase_mlp, phase_attn), f


def backward_working_set(
    model: ModelSpec, st: MemorySettings, rg: Regime, targets: list[str]
) -> tuple[int, str]:
    """Activation-like bytes still live at the end of backward, when every gradient exists.

    The last block back-propagated (block 0) still holds its saved tensors (recomputed under
    gradient checkpointing, plus its checkpointed input) and its gradient transients; everything the
    later blocks and the loss saved is already freed. QLoRA adds the dequantised-weight temporary.
    The state in between is linear in the number of blocks done (activations freed, gradients
    created), so the two ends bound the whole backward pass.
    """
    b, s, h = st.micro_batch, st.seq_len, model.hidden_size
    tokens = b * s
    items = block_inventory(model, st, rg, targets)
    per, f = block_phase(model, st, rg, items)
    out = per * tokens
    text = f"b·s·{f} = {b}·{s}·{num(per)} = {num(per * tokens)} B (block 0 back-propagated)"
    if st.gradient_checkpointing:
        ck = rg.resid * h * tokens
        out += ck
        text += f" + its checkpointed input b·s·h·{rg.resid} = {num(ck)} B"
    if st.method == "qlora":
        big = max(m.in_features * m.out_features for m in model.linear_modules) * rg.act
        out += big
        text += f" + dequantised weight {num(big)} B"
    return out, text


def activation_terms(
    t: Terms,
    model: ModelSpec,
    st: MemorySettings,
    rg: Regime,
    targets: list[str],
    compiled_loss: bool = False,
) -> None:
    """Saved activations over all blocks (or checkpointed inputs + one block) plus outside-block tensors."""
    b, s, L, h = st.micro_batch, st.seq_len, model.num_layers, model.hidden_size
    tokens = b * s
    items = block_inventory(model, st, rg, targets)
    detail = "; ".join(f"{i.label}: {i.formula} = {num(i.per_token)}" for i in items)

    if not st.gradient_checkpointing:
        by_group: dict[str, list[SavedItem]] = {}
        for i in items:
            by_group.setdefault(i.group, []).append(i)
        names = {
            "norms": "activations: block norms",
            "attention": "activations: attention core",
            "scores": "activations: eager attention scores (Korthikanti 5as/h term)",
            "mlp": "activations: MLP internals",
            "linear_inputs": "activations: inputs of trainable linears",
            "lora": "activations: LoRA adapter inputs",
        }
        for g, its in by_group.items():
            per = sum(i.per_token for i in its)
            f = "; ".join(f"{i.label}: {i.formula} = {num(i.per_token)} B/token" for i in its)
            src = {
                "attention": cite("attention-sdpa") if st.attention != "eager" else cite("attention-eager"),
                "scores": cite("attention-eager"),
                "lora": cite("lora-activations"),
            }.get(g, cite("korthikanti"))
            t.add(
                "activations",
                names[g],
                per * tokens * L,
                f"b·s·L·({f}) = {b}·{s}·{L}·{num(per)} = {num(per * tokens * L)} B",
                src,
            )
    else:
        ck = rg.resid * h * tokens * L
        t.add(
            "activations",
            "checkpointed block inputs (gradient checkpointing)",
            ck,
            f"b·s·h·L·{rg.resid} B = {b}·{s}·{h}·{L}·{rg.resid} = {num(ck)} B",
            cite("checkpointing"),
        )
        # While the last block is recomputed and back-propagated the loss buffers are already freed,
        # so that phase and the loss phase do not add up: only the excess over the loss buffers counts.
        phase_tok, phase_f = block_phase(model, st, rg, items)
        phase = phase_tok * tokens
        loss = loss_bytes(model, st, rg, compiled_loss)
        extra = max(0, phase - loss)
        t.add(
            "activations",
            "one block recomputed in backward (+ its gradient transients), beyond the loss buffers",
            extra,
            f"max(0, b·s·{phase_f} − loss buffers {num(loss)}) = max(0, {num(phase)} − {num(loss)}) = {num(extra)} B; "
            f"block: {detail}",
            cite("checkpointing", "korthikanti", "measured-checkpointing-rss"),
        )

    # Outside the blocks: final norm (+ lm_head input when lm_head trains) and the token ids.
    full = st.method == "full"
    if model.family in ("gpt2", "gpt3"):
        norm = rg.resid * h + 8
        nf = f"{rg.resid}·h + 8"
    else:
        norm = 4 * h + 4 + (rg.resid * h if full else 0)
        nf = f"4·h + 4{f' + {rg.resid}·h' if full else ''}"
    # chunked loss: lm_head runs inside the loss (its input is priced there), not in the model forward
    head_in = (rg.act if rg.cast_per_linear else rg.resid) * h if full and st.loss_chunk_size is None else 0
    ids = 8 if full else 0
    per = norm + head_in + ids
    t.add(
        "activations",
        "final norm, lm_head input and token ids",
        per * tokens,
        f"b·s·({nf} [final norm] + {head_in // h if h else 0}·h [lm_head input] + {ids} [int64 ids]) "
        f"= {b}·{s}·{num(per)} = {num(per * tokens)} B",
        cite("korthikanti"),
    )

    if rg.cast_per_linear and st.strategy in ("none", "ddp"):
        # autocast caches a 16-bit cast of every fp32 leaf weight it feeds to a matmul and F.linear
        # saves it for backward (HF anatomy's 6 B "weights": fp32 + 16-bit copy). Under FSDP/ZeRO
        # mixed precision the gathered parameters are already 16-bit, so there is no copy.
        lw = linear_weight_params(model) + model.vocab_size * model.hidden_size
        sh = lw * 2
        t.add(
            "activations",
            "16-bit autocast copies of the linear and lm_head weights, saved for backward",
            sh,
            f"({num(linear_weight_params(model))} linear + {num(model.vocab_size * model.hidden_size)} lm_head "
            f"weights) × 2 B = {num(sh)} B",
            cite("hf-anatomy", "measured-autocast-copies"),
        )

    if rg.kbit_upcast:
        # The upcast lm_head is a frozen fp32 leaf: autocast casts it to 16 bits on every call without
        # caching (only grad-requiring leaves are cached) and F.linear saves that cast for the input grad.
        lh = model.vocab_size * model.hidden_size * 2
        t.add(
            "activations",
            "16-bit autocast cast of the fp32 (upcast) lm_head weight, saved for backward",
            lh,
            f"V·h·2 B = {model.vocab_size}·{model.hidden_size}·2 = {num(lh)} B",
            cite("kbit-upcast", "autocast-per-call"),
        )

    if st.method == "qlora":
        big = max(m.in_features * m.out_features for m in model.linear_modules)
        t.add(
            "activations",
            "dequantised weight temporary (largest linear of a block)",
            big * rg.act,
            f"max(in·out) {num(big)} × {rg.act} B = {num(big * rg.act)} B",
            cite("dequant"),
        )


# Chunked cross-entropy and activation offloading, as executor/memsave.py runs them (issue 14).

OFFLOADABLE = (
    "activations: ",
    "final norm, lm_head input and token ids",
    "16-bit autocast cast of the fp32 (upcast) lm_head weight",
)


def offload_activation_terms(
    t: Terms, model: ModelSpec, st: MemorySettings, rg: Regime, targets: list[str]
) -> int:
    """Under training.activation_offload, move the saved activations to host RAM; returns host bytes.

    The executor's saved-tensor hooks copy every saved tensor of >= 1 KiB that is not a parameter
    to host memory during forward and bring each back as backward reaches it, so the device keeps
    one block's tensors in flight (priced as one block's inventory; the end-of-backward working
    set, block 0 back-propagated, is unchanged). The per-block terms become 0-byte lines stating
    their host bytes. Under gradient checkpointing torch.utils.checkpoint keeps the block inputs
    itself (its own saved-tensor hooks run innermost), so nothing moves; the plan says so.
    """
    if not st.activation_offload:
        return 0
    if st.gradient_checkpointing:
        t.add(
            "activations",
            "activation offload: nothing moved under gradient checkpointing",
            0,
            "torch.utils.checkpoint holds the checkpointed block inputs itself; 0 B moved",
            cite("activation-offload"),
        )
        return 0
    host = 0
    out: list[MemoryTerm] = []
    for x in t.items:
        if x.component == "activations" and x.label.startswith(OFFLOADABLE) and x.bytes > 0:
            host += x.bytes
            out.append(
                x.model_copy(
                    update={
                        "bytes": 0,
                        "label": f"{x.label} — offloaded to host RAM ({gib_text(x.bytes)})",
                        "formula": f"{x.formula}; in host memory, 0 B on the device",
                        "source": x.source + "; " + cite("activation-offload"),
                    }
                )
            )
        else:
            out.append(x)
    t.items = out
    b, s = st.micro_batch, st.seq_len
    per = sum(i.per_token for i in block_inventory(model, st, rg, targets))
    flight = min(host, per * b * s)
    t.add(
        "activations",
        "activation offload: one block's saved tensors in flight",
        flight,
        f"b·s·(one block's inventory) = {b}·{s}·{num(per)} = {num(flight)} B; host RAM holds {num(host)} B",
        cite("activation-offload"),
    )
    return host
