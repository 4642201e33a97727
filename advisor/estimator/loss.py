"""Logits-and-loss terms: the cross-entropy's buffers at their peak, unchunked, chunked (as the
executor's memsave runs it) or under torch.compile.
"""

from __future__ import annotations

from tuneplan.schemas import MemorySettings, ModelSpec

from .citations import cite
from .common import Regime, Terms, num


def loss_parts(
    model: ModelSpec, st: MemorySettings, rg: Regime, compiled: bool = False
) -> list[tuple[str, int, str, str]]:
    """The loss buffers at their peak as (label, bytes, formula, source) lines.

    Unchunked (loss_chunk_size None), as transformers 5 ForCausalLMLoss and the executor's
    token_loss_sum run it: logits.float() + cross_entropy = log_softmax + nll_loss. In forward the
    logits (2 or 4 B), their fp32 copy and the saved fp32 log-softmax coexist (10 V bytes under
    16-bit); the caller drops the logits before backward, where nll_loss's fp32 gradient and
    log_softmax's fp32 input gradient join the saved log-softmax: 12 V bytes, the larger of the two.

    Chunked (settings.loss_chunk_size, as the executor runs it): see chunked_loss_parts.

    compiled (estimate(compiled_loss=True): torch.compile'd cross-entropy, torchtune's recommended
    use): AOTAutograd saves the 16-bit chunk itself and an fp32 logsumexp per token instead of the
    fp32 log-softmax (measured with saved_tensors_hooks on CPU: 2.016 vs 4.0085 B per logit element
    for bf16 logits [M]). Peak: lb·n·V (the logits, saved by the loss; in backward replaced chunk by
    chunk by their 16-bit gradients) + 4·n (logsumexp) + 8·c·V (one chunk's fp32 buffers, an upper
    bound: inductor may fuse them away); c = n when the loss is not chunked.
    """
    b, s, V = st.micro_batch, st.seq_len, model.vocab_size
    n = b * s
    lb = rg.act
    if compiled:
        c = min(st.loss_chunk_size or n, n)
        kept = lb * n * V + 4 * n
        return [
            (
                f"{lb * 8}-bit logits + fp32 logsumexp saved by the compiled cross-entropy",
                kept,
                f"b·s·V·{lb} + b·s·4 = {b}·{s}·{V}·{lb} + {n}·4 = {num(kept)} B",
                cite("chunked-ce", "compiled-ce"),
            ),
            (
                "fp32 buffers of one loss chunk (upper bound; may be fused away)",
                8 * c * V,
                f"c·V·8 = {c}·{V}·8 = {num(8 * c * V)} B (c = {c} tokens)",
                cite("chunked-ce", "compiled-ce"),
            ),
        ]
    if st.loss_chunk_size is None:
        e = n * V
        return [
            (
                "fp32 log-softmax saved by cross_entropy",
                4 * e,
                f"b·s·V·4 = {b}·{s}·{V}·4 = {num(4 * e)} B",
                cite("logits"),
            ),
            (
                "fp32 gradients in loss backward: d(log-softmax) from nll_loss + d(logits)",
                8 * e,
                f"b·s·V·(4+4) = {b}·{s}·{V}·8 = {num(8 * e)} B (the {lb}-byte logits and their fp32 copy, "
                f"{lb}+4 = {lb + 4} B/element, are freed before backward and peak lower in forward)",
                cite("logits"),
            ),
        ]
    return chunked_loss_parts(model, st, rg)


def loss_bytes(model: ModelSpec, st: MemorySettings, rg: Regime, compiled: bool = False) -> int:
    """Bytes of the loss buffers at their peak (see loss_parts)."""
    return sum(p[1] for p in loss_parts(model, st, rg, compiled))


def logits_terms(t: Terms, model: ModelSpec, st: MemorySettings, rg: Regime, compiled: bool = False) -> None:
    """Add the loss-buffer terms (unchunked or chunked, eager or compiled cross-entropy)."""
    for label, nbytes, formula, source in loss_parts(model, st, rg, compiled):
        t.add("logits_and_loss", label, nbytes, formula, source)


def chunked_loss_parts(model: ModelSpec, st: MemorySettings, rg: Regime) -> list[tuple[str, int, str, str]]:
    """Loss buffers of the executor's chunked cross-entropy (training.loss_chunk_size = c tokens).

    The model returns the final hidden states; each chunk of c tokens runs lm_head + logits.float()
    + cross_entropy under torch.utils.checkpoint, so forward saves only the (shifted) hidden-state
    copy, b·s·h in the residual dtype, and no logits survive a chunk. In backward each chunk is
    recomputed: its saved fp32 log-softmax output, nll_loss's fp32 gradient and log_softmax's fp32
    input gradient coexist (12·c·V bytes; the forward transient, logits + fp32 copy + log-softmax,
    is at most as large), one chunk at a time.
    """
    b, s, V, h = st.micro_batch, st.seq_len, model.vocab_size, model.hidden_size
    n = b * s
    c = min(st.loss_chunk_size or n, n)
    hid = rg.resid * n * h
    chunk = 12 * c * V
    return [
        (
            "hidden states saved as the chunked loss's input",
            hid,
            f"b·s·h·{rg.resid} = {b}·{s}·{h}·{rg.resid} = {num(hid)} B",
            cite("chunked-recompute"),
        ),
        (
            "fp32 buffers of one loss chunk (recomputed in backward: log-softmax + 2 gradients)",
            chunk,
            f"c·V·(4+4+4) = {c}·{V}·12 = {num(chunk)} B (c = {c} of {n} tokens per chunk; unchunked: "
            f"b·s·V·12 = {num(12 * n * V)} B)",
            cite("chunked-recompute"),
        ),
    ]
