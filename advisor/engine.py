"""Run the ordered rules over a draft and assemble a validated Plan."""

from __future__ import annotations

from typing import Optional

from tuneplan.schemas import (
    METHODS,
    Alternative,
    Decision,
    Distributed,
    Inputs,
    LoraSettings,
    MemoryEstimate,
    Plan,
    Training,
    tuneplan_version,
)
from tuneplan.schemas.common import Method

from .checkpointing import checkpoint_bytes, checkpoint_cadence
from .draft import Draft, initial_draft
from .fitting import best_fit, estimate_whole, lowest
from .rules import RULES, Rule

GIB = 1024**3


def run_rules(
    inputs: Inputs, rules: list[Rule] = RULES, calibration: Optional[dict[str, float]] = None
) -> tuple[Draft, list[Decision]]:
    """Apply every rule in order; return the final draft and the decisions of those that fired."""
    d = initial_draft(inputs, calibration)
    decisions: list[Decision] = []
    for r in rules:
        out = r(d)
        if out is None:
            continue
        updates = dict(out.updates)
        if out.warnings:
            updates["warnings"] = d.warnings + tuple(w for w in out.warnings if w not in d.warnings)
        if out.ways_out:
            updates["ways_out"] = d.ways_out + out.ways_out
        d = d.with_updates(updates)
        decisions.append(Decision(rule=r.id, name=r.name, message=out.message, source=r.source))
    return d, decisions


def advise(inputs: Inputs, *, calibration: Optional[dict[str, float]] = None) -> Plan:
    """The advisor: inputs in, a validated plan out (feasible or not)."""
    d, decisions = run_rules(inputs, calibration=calibration)
    method = d.chosen_method
    memory = _chosen_estimate(d)
    planned = d.planned_steps or d.max_steps
    save_steps, save_minutes = checkpoint_cadence(planned)
    return Plan(
        tuneplan_version=tuneplan_version(),
        method=method,
        feasible=d.feasible and memory.fits,
        training=Training(
            learning_rate=d.learning_rate,
            learning_rate_band=list(d.learning_rate_band) if d.learning_rate_band else None,
            lr_scheduler=d.lr_scheduler,
            warmup_ratio=d.warmup_ratio,
            num_epochs=d.num_epochs,
            max_steps=d.max_steps,
            planned_steps=d.planned_steps or d.max_steps,
            per_device_batch_size=d.micro_batch,
            gradient_accumulation_steps=d.grad_accum,
            max_grad_norm=d.max_grad_norm,
            weight_decay=d.weight_decay,
            optimizer=d.optimizer,
            precision=d.precision,
            gradient_checkpointing=d.gradient_checkpointing,
            attention=d.attention,
            seq_len=d.seq_len,
            activation_offload=d.activation_offload,
            loss_chunk_size=d.loss_chunk_size,
            save_every_steps=save_steps,
            save_every_minutes=save_minutes,
            checkpoint_bytes=checkpoint_bytes(method, estimate_whole(d, memory).breakdown),
        ),
        lora=None
        if method == "full"
        else LoraSettings(
            rank=d.lora_rank,
            alpha=d.lora_alpha,
            dropout=d.lora_dropout,
            target_modules=list(d.target_modules),
            use_rslora=d.use_rslora,
            alpha_convention=d.alpha_convention,
        ),
        quantization=d.quantization if method == "qlora" else None,
        memory=memory,
        alternatives=[_alternative(d, m, memory) for m in METHODS if m != method],
        distributed=Distributed(
            num_processes=d.num_processes,
            strategy=d.strategy,
            num_nodes=d.hardware.nodes,
            cpu_offload=d.cpu_offload,
        ),
        decisions=decisions,
        warnings=list(d.warnings),
        ways_out=list(d.ways_out),
        inputs=inputs,
    )


def _chosen_estimate(d: Draft) -> MemoryEstimate:
    """The estimate of the fit the memory rules chose (TP030/TP031/TP032 carry it in the draft):
    the plan states the very estimate the rule decided on, not a recomputation."""
    if d.fit is None:
        raise RuntimeError("no memory rule (TP030-TP032) priced the chosen method")
    return d.fit.estimate


def _alternative(d: Draft, method: Method, chosen: MemoryEstimate) -> Alternative:
    """Price another method under its own cheapest fitting settings, and say why it lost."""
    f = best_fit(d, method) or lowest(d, method)
    est = f.estimate
    return Alternative(
        method=method,
        per_device_bytes=est.per_device_bytes,
        fits=est.fits,
        reason=_reason(d, method, est, chosen),
        estimate=est,
    )


def _reason(d: Draft, method: Method, est: MemoryEstimate, chosen: MemoryEstimate) -> str:
    need = f"{est.per_device_bytes / GIB:.1f} GiB per device"
    if d.pins.method:
        return f"--method {d.pins.method} was pinned ({method} would need {need})."
    if not est.fits:
        return f"Does not fit: needs {need} at best, the device allows {est.usable_bytes / GIB:.1f} GiB."
    ratio = est.per_device_bytes / max(1, chosen.per_device_bytes)
    far, tol = d.is_far, d.task.forgetting_tolerance
    if method == "full":
        if far and tol == "low":
            return (
                f"Fits ({need}), but forgets more than LoRA (Biderman et al. §4.2) and the "
                f"forgetting tolerance is low."
            )
        return (
            f"Fits ({need}, {ratio:.1f}x the chosen plan), but on a {d.task.domain_distance} "
            f"domain LoRA matches full fine-tuning (Biderman et al. App. C)."
        )
    if d.method == "full":
        return f"Fits ({need}), but learns less than full fine-tuning on a far domain (Biderman et al. §4.1)."
    if method == "qlora":
        return (
            f"Fits ({need}); QLoRA matches 16-bit LoRA (QLoRA Table 4), so with LoRA fitting the "
            f"choice is only memory — LoRA avoids 4-bit dequantisation cost."
        )
    return f"Fits ({need}); the chosen method was preferred by the rules above."
