"""Memory rules (TP030-TP032): the fitting ladder for the chosen method, shorter sequences when
nothing else fits, and the ways out when nothing fits at all.
"""

from __future__ import annotations

from typing import Optional

from ..draft import Draft
from ..fitting import PCIE_BYTES_PER_S, SLOWDOWN, best_fit, default_optimizer, host_offload_bytes, lowest
from ._base import Outcome, gib, method_word, rule


@rule(
    "TP030",
    "fit-ladder",
    "ZeRO (Rajbhandari et al. 2020); Korthikanti et al. 2022 (recomputation); HF anatomy (8-bit Adam)",
)
def fit_ladder(d: Draft) -> Optional[Outcome]:
    """Why: before giving up on a method, spend what costs only time: shard state over the devices
    (DDP, ZeRO-2, then FSDP), recompute activations (gradient checkpointing), 8-bit AdamW for full
    fine-tuning, then smaller micro-batches with gradient accumulation (same effective batch), and
    last, on several GPUs, FSDP with CPU offload (state in host RAM, slow over PCIe).
    When not: the method fits as asked; pinned settings are not changed.
    Source: ZeRO §5 (per-device model states); Korthikanti et al. 2022 (full recomputation keeps
    2·sbh per layer); HF anatomy (8-bit AdamW 2 bytes/param); ZeRO-Offload / FSDP CPUOffload
    (facts §6b)."""
    f = best_fit(d, d.chosen_method)
    if f is None:
        return None
    changes: list[str] = []
    if f.strategy != d.strategy:
        changes.append(f"strategy {f.strategy} over {d.num_devices} devices")
    warnings: tuple[str, ...] = ()
    if f.cpu_offload:
        host = host_offload_bytes(d, f)
        changes.append("CPU offload of parameters, gradients and optimizer states")
        warnings = (
            f"Only fits with CPU offload: each node needs about {gib(host)} of host RAM for "
            f"the offloaded parameters, gradients and optimizer states (plus pinned "
            f"buffers), and steps are much slower (PCIe transfers every step). More GPUs "
            f"or a smaller method avoid it.",
        )
    if f.gradient_checkpointing != d.gradient_checkpointing:
        changes.append(
            f"gradient checkpointing on (~{SLOWDOWN['gradient_checkpointing']:.0%} slower)"
            if f.gradient_checkpointing
            else "gradient checkpointing off"
        )
    if f.optimizer != default_optimizer(d, d.chosen_method):
        changes.append(f"optimizer {f.optimizer}")
    if f.loss_chunk_size != d.loss_chunk_size and f.loss_chunk_size:
        changes.append(
            f"chunked cross-entropy ({f.loss_chunk_size} tokens per chunk, "
            f"~{SLOWDOWN['loss_chunking']:.0%} slower)"
        )
    if f.activation_offload and not d.activation_offload:
        hb = f.estimate.host_bytes
        changes.append(
            f"activation offload to host RAM instead of checkpointing ({gib(hb)} of host RAM; "
            f"~{SLOWDOWN['activation_offload']:.0%} slower on the embedded model on CPU, plus "
            f"~{2 * hb / PCIE_BYTES_PER_S:.1f} s per micro-batch of PCIe transfers on a GPU)"
        )
        warnings = warnings + (
            f"Activation offload needs about {gib(hb)} of host RAM per GPU (pinned), on top of the process.",
        )
    if f.micro_batch != d.micro_batch:
        changes.append(f"micro-batch {d.micro_batch} -> {f.micro_batch} with accumulation")
    updates = {
        "gradient_checkpointing": f.gradient_checkpointing,
        "micro_batch": f.micro_batch,
        "strategy": f.strategy,
        "optimizer": f.optimizer,
        "cpu_offload": f.cpu_offload,
        "loss_chunk_size": f.loss_chunk_size,
        "activation_offload": f.activation_offload,
        "fit": f,
    }
    if not changes:
        return Outcome(
            f"{method_word(d.chosen_method)} fits as asked: {gib(f.estimate.per_device_bytes)} per device.",
            updates,
        )
    return Outcome(
        f"To fit {method_word(d.chosen_method)}: {', '.join(changes)} -> "
        f"{gib(f.estimate.per_device_bytes)} per device.",
        updates,
        warnings,
    )


MIN_SEQ = 128
PIN_FLAGS = (
    ("gradient_checkpointing", "--[no-]gradient-checkpointing"),
    ("optimizer", "--optimizer"),
    ("activation_offload", "--[no-]activation-offload"),
    ("loss_chunk_size", "--loss-chunk-size"),
)


def _blocking_pins(d: Draft) -> list[str]:
    """Flags of memory-relevant pins without which the method would fit at the current length."""
    out: list[str] = []
    for pin, flag in PIN_FLAGS:
        if getattr(d.pins, pin) is None:
            continue
        free = d.with_updates(
            {"inputs": d.inputs.model_copy(update={"pins": d.pins.model_copy(update={pin: None})})}
        )
        if best_fit(free, d.chosen_method) is not None:
            out.append(flag)
    return out


@rule("TP031", "shorten-sequences", "Korthikanti et al. 2022 (activations linear in s); tuneplan")
def shorten_sequences(d: Draft) -> Optional[Outcome]:
    """Why: activations and logits grow with sequence length; when nothing else fits, shorter
    sequences may — but they change what the model sees, so the plan says so loudly.
    When not: the method fits at the requested length, or not even 128 tokens fit.
    Source: Korthikanti et al. 2022 Eq. 1 (per-layer activations proportional to s·b·h)."""
    if best_fit(d, d.chosen_method) is not None:
        return None
    s = d.seq_len // 2
    while s >= MIN_SEQ:
        f = best_fit(d, d.chosen_method, seq_len=s)
        if f is not None:
            return Outcome(
                f"{method_word(d.chosen_method)} does not fit at {d.seq_len} tokens even at micro-batch "
                f"1; at {s} tokens it needs {gib(f.estimate.per_device_bytes)} per device.",
                {
                    "seq_len": s,
                    "seq_shortened_from": d.seq_len,
                    "gradient_checkpointing": f.gradient_checkpointing,
                    "micro_batch": f.micro_batch,
                    "strategy": f.strategy,
                    "optimizer": f.optimizer,
                    "cpu_offload": f.cpu_offload,
                    "loss_chunk_size": f.loss_chunk_size,
                    "activation_offload": f.activation_offload,
                    "fit": f,
                },
                (
                    f"Sequences shortened from {d.seq_len} to {s} tokens to fit; longer examples "
                    f"will be truncated."
                    + "".join(
                        f" Without the {flag} pin, {d.seq_len} tokens would fit."
                        for flag in _blocking_pins(d)
                    ),
                ),
            )
        s //= 2
    return None


@rule("TP032", "infeasible-ways-out", "tuneplan estimator (advisor/estimator/, docs/memory-model.md)")
def infeasible_ways_out(d: Draft) -> Optional[Outcome]:
    """Why: when nothing fits even at 128 tokens and micro-batch 1, say so, and say what would fit:
    more GPUs (sharded), a larger card, a smaller model.
    When not: a configuration fits.
    Source: tuneplan's estimator applied to the alternatives named."""
    if best_fit(d, d.chosen_method) is not None:
        return None
    low = lowest(d, d.chosen_method)
    ways = [
        f"{method_word(d.chosen_method)} needs at least {gib(low.estimate.per_device_bytes)} per "
        f"device; this device allows {gib(int(d.hardware.memory_bytes * (1 - d.headroom_fraction)))}."
    ]
    if d.chosen_method != "qlora" and not d.pins.method:
        ways.append("Use QLoRA (4-bit base).")
    ways += [f"Drop the {flag} pin: without it the plan fits." for flag in _blocking_pins(d)]
    need = low.estimate.per_device_bytes / (1 - d.headroom_fraction)
    ways.append(f"Use a device with at least {gib(int(need))} of memory.")
    if not d.on_cpu:
        ways.append("Add GPUs: with FSDP the weights, gradients and optimizer states are sharded.")
    ways.append("Choose a smaller model (see `tuneplan models`).")
    updates = {
        "feasible": False,
        "gradient_checkpointing": low.gradient_checkpointing,
        "micro_batch": low.micro_batch,
        "strategy": low.strategy,
        "optimizer": low.optimizer,
        "cpu_offload": low.cpu_offload,
        "loss_chunk_size": low.loss_chunk_size,
        "activation_offload": low.activation_offload,
        "fit": low,
    }
    return Outcome(
        f"Nothing fits: {ways[0]}", updates, ("No configuration fits this hardware.",), tuple(ways)
    )
