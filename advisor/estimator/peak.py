"""The estimate itself: the terms of every group, the peak as the max over the two phases of a
step (loss peak, end of backward), calibration, and the MemoryEstimate.
"""

from __future__ import annotations

from typing import Literal, Optional

from tuneplan.schemas import MemoryBreakdown, MemoryEstimate, MemorySettings, MemoryTerm, ModelSpec

from ..modelspec import resolve_targets
from .activations import activation_terms, backward_working_set, offload_activation_terms
from .citations import cite
from .common import DEFAULT_HEADROOM, num, regime_for, Terms
from .loss import logits_terms
from .overhead import overhead_terms
from .optimizer import gradient_and_optimizer_terms
from .sharding import sharding, strategy_buffer_terms
from .weights import untied_head_terms, weight_terms


def grads_persist(st: MemorySettings) -> tuple[bool, str]:
    """Whether the parameter gradients are resident during forward (and why)."""
    if st.gradient_accumulation_steps > 1:
        return True, (
            f"gradient accumulation {st.gradient_accumulation_steps}: gradients persist across "
            f"micro-batches, so they are resident at the loss peak"
        )
    if st.strategy in ("deepspeed-zero2", "deepspeed-zero3"):
        return True, (
            "DeepSpeed keeps its flat gradient partitions allocated across steps (assumed, conservative)"
        )
    return False, (
        "accumulation 1 with zero_grad(set_to_none=True): gradients are created during backward "
        "while the saved activations are freed"
    )


def phase_max(
    terms: list[MemoryTerm], grad_idx: list[int], work: int, work_text: str, persist: bool, why: str
) -> list[MemoryTerm]:
    """Replace the plain sum by the max over the two phases of a step.

    Loss peak (start of backward): states + activations + loss buffers (+ gradients if they persist).
    End of backward: states + all gradients + the backward working set `work`.
    With S the other states: peak = S + max(A + G_p, G_p + G_n + W) = S + G_p + A + max(0, G_n + W − A),
    where A = activations + logits_and_loss and G_n the gradients that do not persist. The
    activation terms keep their full (loss-peak) value; the non-persistent gradient terms count
    only max(0, G_n + W − A), in order; any excess beyond G_n (W > A) is one more activation term.
    """
    if persist or not grad_idx:
        return terms
    act = sum(x.bytes for x in terms if x.component in ("activations", "logits_and_loss"))
    g_n = sum(terms[i].bytes for i in grad_idx)
    if g_n == 0:
        return terms
    extra = max(0, g_n + work - act)
    left = extra
    out = list(terms)
    for i in grad_idx:
        x = terms[i]
        c = min(left, x.bytes)
        left -= c
        out[i] = x.model_copy(
            update={
                "bytes": c,
                "label": f"{x.label} (counted where they exceed the activations freed by then)",
                "formula": (
                    f"{x.formula}; {why}: peak = max(loss peak: activations + loss A = {num(act)} B, "
                    f"end of backward: gradients G = {num(g_n)} B + working set W = {num(work)} B) ⇒ "
                    f"gradients counted max(0, G + W − A) = {num(extra)} B in all, {num(c)} B here; "
                    f"W = {work_text}"
                ),
                "source": x.source + "; " + cite("zero-grad-set-to-none"),
            }
        )
    if left > 0:
        out.append(
            MemoryTerm(
                component="activations",
                label="backward working set beyond the loss-peak activations",
                bytes=left,
                formula=f"G + W − A − G = {num(work)} − {num(act)} = {num(left)} B; W = {work_text}",
                source=cite("checkpointing", "korthikanti"),
            )
        )
    return out


def estimate(
    model: ModelSpec,
    settings: MemorySettings,
    *,
    capacity_bytes: int,
    device: Literal["cuda", "cpu"] = "cuda",
    headroom_fraction: float = DEFAULT_HEADROOM,
    calibration: Optional[dict[str, float]] = None,
    kbit_upcast: Optional[bool] = None,
    compiled_loss: bool = False,
) -> MemoryEstimate:
    """Predict the peak memory of one training step on each device, itemised.

    model: the architecture (exact parameter counts). settings: method, precision, optimizer,
    checkpointing, attention, micro-batch (per device), sequence length, LoRA rank/targets (targets
    default to all-linear), strategy, num_devices, cpu_offload. capacity_bytes: memory of ONE
    device (GPU memory, or RAM for device="cpu"). headroom_fraction: share of capacity kept free;
    fits = per_device_bytes <= int(capacity*(1-headroom)). calibration: optional multipliers per
    breakdown component (e.g. {"activations": 0.9}) from measured runs; calibration_factor is the
    overall after/before ratio. kbit_upcast (None: settings.kbit_upcast, the plan's
    quantization.kbit_upcast): QLoRA runs through peft's prepare_model_for_kbit_training
    as the executor does (non-quantised params upcast to fp32, fp32 residual stream); False for stacks
    that keep them in 16 bits (torchtune, the QLoRA paper's qlora.py, which re-casts them to bf16).
    compiled_loss: the cross-entropy runs under torch.compile (torchtune with compile: True), which
    saves the 16-bit logits instead of the fp32 log-softmax; the executor runs it eagerly (False).

    Two predicted figures: per_device_bytes (everything, what must fit) and allocated_peak_bytes
    (tensor bytes: per_device_bytes − framework_overhead, what torch.cuda.max_memory_allocated and
    published peaks report). host_bytes: activations moved to host RAM by activation_offload.

    Raises ValueError on inconsistent settings (LoRA without rank, unknown targets, bad headroom,
    unknown calibration keys).
    """
    if capacity_bytes <= 0:
        raise ValueError("capacity_bytes must be > 0")
    if not 0 <= headroom_fraction < 1:
        raise ValueError("headroom_fraction must be in [0, 1)")
    if device not in ("cuda", "cpu"):
        raise ValueError("device must be 'cuda' or 'cpu'")
    st = settings
    targets: list[str] = []
    if st.method == "full":
        trainable = model.total_params
    else:
        if st.lora_rank is None:
            raise ValueError(f"settings.lora_rank is required for method {st.method!r}")
        targets = resolve_targets(model, st.target_modules or ["all-linear"])
        trainable = model.lora_params(st.lora_rank, targets)

    rg = regime_for(st.method, st.precision, device, st.kbit_upcast if kbit_upcast is None else kbit_upcast)
    shard = sharding(st)
    t = Terms()
    weight_terms(t, model, st, rg, trainable, targets, shard)
    gradient_and_optimizer_terms(t, model, st, trainable, shard)
    untied_head_terms(t, model, st, rg, shard)
    # Parameter gradients (not the DDP buckets below, which are allocated once and persist).
    grad_idx = [i for i, x in enumerate(t.items) if x.component == "gradients" and x.bytes > 0]

    strategy_buffer_terms(t, model, st)
    activation_terms(t, model, st, rg, targets, compiled_loss)
    host = offload_activation_terms(t, model, st, rg, targets)
    logits_terms(t, model, st, rg, compiled_loss)
    overhead_terms(t, device)

    work, work_text = backward_working_set(model, st, rg, targets)
    persist, why = grads_persist(st)
    terms = t.items
    factor: Optional[float] = None
    if calibration:
        fields = set(MemoryBreakdown.model_fields)
        bad = sorted(set(calibration) - fields)
        if bad:
            raise ValueError(f"unknown calibration components {bad}; use {sorted(fields)}")
        out: list[MemoryTerm] = []
        for x in terms:
            m = calibration.get(x.component)
            if m is None:
                out.append(x)
                continue
            if m < 0:
                raise ValueError(f"calibration multiplier for {x.component} must be >= 0")
            nb = int(round(x.bytes * m))
            out.append(
                x.model_copy(
                    update={
                        "bytes": nb,
                        "formula": f"{x.formula}; × calibration {m:g} (tuneplan calibrate) = {num(nb)} B",
                    }
                )
            )
        before = sum(x.bytes for x in phase_max(terms, grad_idx, work, work_text, persist, why))
        terms = out
        work = int(round(work * calibration.get("activations", 1.0)))
        terms = phase_max(terms, grad_idx, work, work_text, persist, why)
        after = sum(x.bytes for x in terms)
        factor = after / before if before else 1.0
    else:
        terms = phase_max(terms, grad_idx, work, work_text, persist, why)

    comp = {f: 0 for f in MemoryBreakdown.model_fields}
    for x in terms:
        comp[x.component] += x.bytes
    breakdown = MemoryBreakdown(**comp)
    total = breakdown.total
    usable = int(capacity_bytes * (1 - headroom_fraction))
    return MemoryEstimate(
        method=st.method,
        per_device_bytes=total,
        allocated_peak_bytes=total - breakdown.framework_overhead,
        host_bytes=host,
        device_capacity_bytes=capacity_bytes,
        usable_bytes=max(1, usable),
        fits=total <= usable,
        headroom_bytes=capacity_bytes - total,
        headroom_fraction=headroom_fraction,
        breakdown=breakdown,
        terms=terms,
        settings=st,
        trainable_params=trainable,
        calibration_factor=factor,
    )
