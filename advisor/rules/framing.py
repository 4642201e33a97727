"""Framing rules (TP001-TP005): is fine-tuning the right tool, what is known about the model, the
numerics and kernels the hardware affords, and the share of memory kept free.
"""

from __future__ import annotations

from typing import Optional

from ..draft import Draft
from ._base import Outcome, gib, rule


@rule(
    "TP001",
    "retrieval-first",
    "Seed document (fine-tuning vs RAG is the prior question); LoRA paper §7.2 fn 6",
)
def retrieval_first(d: Draft) -> Optional[Outcome]:
    """Why: facts that change or must be cited belong in a retrieval index, not in weights —
    fine-tuning teaches behaviour and format, and its knowledge goes stale with the next release.
    When not: the task is a style, format, skill or language (set needs_fresh_facts false).
    Source: the seed document's prior question — retrieval vs fine-tuning before any GPU-hour."""
    if not d.task.needs_fresh_facts:
        return None
    return Outcome(
        "The need is facts that change or must be cited: start with retrieval (RAG); fine-tune "
        "afterwards only for format, tone or skills. The plan below is for that second step.",
        warnings=("Retrieval comes first: fine-tuning does not keep changing facts current or citable.",),
    )


@rule("TP002", "guessed-architecture", "tuneplan: --params builds a standard Llama-style shape")
def guessed_architecture(d: Draft) -> Optional[Outcome]:
    """Why: a parameter count alone does not fix layer count, width, vocabulary or GQA, which set
    activation and logits memory; the estimate rests on a standard Llama-style guess.
    When not: the model came from the catalog or a config.json (exact counts).
    Source: tuneplan's own guess table (advisor/catalog/guesses.py)."""
    if d.model.origin != "guess":
        return None
    m = d.model
    return Outcome(
        f"Architecture guessed from the parameter count: {m.num_layers} layers, hidden "
        f"{m.hidden_size}, MLP {m.intermediate_size}, {m.num_key_value_heads} KV heads, vocab "
        f"{m.vocab_size}.",
        warnings=(
            "The model's architecture is a guess from its parameter count; give --model "
            "(catalog id or a local directory) for exact numbers.",
        ),
    )


@rule(
    "TP003",
    "precision-by-hardware",
    "QLoRA README (fp16 compute 'can lead to instabilities'); bf16 needs Ampere or newer",
)
def precision_by_hardware(d: Draft) -> Optional[Outcome]:
    """Why: bf16 mixed precision has fp32's range, so no loss scaling; cards without bf16 fall back
    to fp16 mixed precision; CPUs train in fp32 (bf16 on many CPUs is emulated and slow).
    When not: the user pinned a precision (it stays; a warning says if the card cannot do it).
    Source: QLoRA README — fp16 runs of 7B LLaMA completed only 80% of the time."""
    hw = d.hardware
    advised = "fp32" if d.on_cpu else ("bf16-mixed" if hw.bf16 else "fp16-mixed")
    pin = d.pins.precision
    if pin:
        warnings: tuple[str, ...] = ()
        if pin.startswith("bf16") and not hw.bf16:
            warnings = (
                f"--precision {pin} pinned, but {hw.name} has no bf16 support; "
                f"the advisor would use {advised}.",
            )
        return Outcome(f"Precision pinned to {pin}.", {"precision": pin}, warnings)
    reason = (
        "CPU: fp32"
        if d.on_cpu
        else f"{hw.name} computes in bf16"
        if hw.bf16
        else f"{hw.name} lacks bf16: fp16 with loss scaling"
    )
    warnings = (
        ()
        if d.on_cpu or hw.bf16
        else ("fp16 mixed precision is less stable than bf16 (QLoRA README: 80% of 7B fp16 runs completed).",)
    )
    return Outcome(f"Precision {advised} ({reason}).", {"precision": advised}, warnings)


@rule("TP004", "attention-kernel", "Korthikanti et al. 2022 (5as/h score term); FlashAttention")
def attention_kernel(d: Draft) -> Optional[Outcome]:
    """Why: eager attention stores the b*a*s*s scores and softmax for backward (Korthikanti's
    5as/h term, larger than the rest of the block at long sequences); SDPA and FlashAttention
    recompute them and keep memory linear in s.
    When not: the user pinned an attention implementation (kept, with a warning for eager).
    Source: Korthikanti et al. 2022 Eq. 1; FlashAttention never materialises the s x s scores."""
    pin = d.pins.attention
    if pin == "eager":
        extra = 5 * d.model.num_attention_heads * d.seq_len / d.model.hidden_size
        return Outcome(
            "Attention pinned to eager.",
            {"attention": "eager"},
            (
                f"--attention eager stores the s x s attention scores: about {extra:.0f}·sbh extra "
                f"bytes per layer vs 34·sbh for the rest of the block; sdpa avoids it.",
            ),
        )
    if pin:
        return Outcome(f"Attention pinned to {pin}.", {"attention": pin})
    return Outcome(
        "Attention: sdpa (memory linear in sequence length; flash where installed).", {"attention": "sdpa"}
    )


@rule("TP005", "memory-headroom", "accelerate model-size estimator docs ('add up to 20%')")
def memory_headroom(d: Draft) -> Optional[Outcome]:
    """Why: allocators fragment and peaks spike (optimizer step, loss upcast), so a plan that fills
    the card to the byte fails in practice; the advisor keeps a stated share free.
    When not: never skipped; the share is stated so it can be argued with.
    Source: accelerate's estimator docs advise adding up to 20% on top of its estimate."""
    cap = d.hardware.memory_bytes
    usable = int(cap * (1 - d.headroom_fraction))
    return Outcome(
        f"Headroom: {d.headroom_fraction:.0%} of {gib(cap)} kept free; plans must fit in "
        f"{gib(usable)} per device."
    )
