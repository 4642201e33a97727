"""Optimisation rules (TP040-TP048): learning rate and its sweep band, schedule recipe per method,
QLoRA's quantisation recipe, optimizer paging, batch and capacity warnings, accumulation, steps.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from tuneplan.schemas import Quantization
from tuneplan.schemas.common import Method

from ..draft import Draft
from ._base import Outcome, method_word, rule, size_phrase
from .adapter import FIXED_ALPHA


LR_FIT_BASE = 5e-5
"""Full fine-tuning rate of the fit at hidden size 2000 and batch 128 (tinker-cookbook get_lr:
LoRA 5e-4 there, full = LoRA / 10)."""
LR_FIT_EXPONENT = {"llama": 0.781, "qwen2": 0.0775}
"""p in (2000 / h)^p by family, fitted on Llama-3 and Qwen3 sweeps (tinker-cookbook get_lr)."""
LR_REF_BATCH = 128
"""Batch (sequences) the fit was calibrated at (Tulu-3 SFT sweep, batch 128)."""
LR_BATCH_CLAMP = (0.25, 2.0)
"""Bounds on the sqrt(B / 128) factor: B = 8 .. 512; the batch term is the least certain part."""
LR_HIDDEN_RANGE = (576, 8192)
"""Hidden sizes the fit is used over: SmolLM2-135M (576; the smallest with a published recipe,
alignment-handbook) to Llama-3.1-70B (8192, the largest swept); sizes outside are clamped."""
LORA_LR_CAP = 1e-3
"""Highest advised LoRA/QLoRA rate: 3e-3 diverged in 72 of 80 diverged sweep runs, 1e-3 diverged
only at low rank on 70B (tinker sft_sweep.md)."""
FULL_LR_CAP = LORA_LR_CAP / 10
SHORT_RUN_STEPS = 100

ComputeDtype = Literal["bfloat16", "float16", "float32"]
"""Quantization.compute_dtype: the dtype bitsandbytes dequantises to for each matmul."""


def _epochs(method: Optional[Method]) -> float:
    """Default epochs: full FT peaked at 2, LoRA needed ~4 (Biderman et al. App. C)."""
    return 2.0 if method == "full" else 4.0


def planned_steps(d: Draft) -> Optional[int]:
    """Optimizer steps of the run when they can be known before it: the --max-steps pin, or the
    default epochs over the data's training rows at the effective batch; None when unknown."""
    if d.max_steps is not None:
        return d.max_steps
    ds = d.inputs.data_stats
    if ds is None:
        return None
    return max(1, math.ceil(_epochs(d.method) * ds.train_rows / d.task.batch_size))


def lr_band(lr: float) -> tuple[float, float, float]:
    """The sweep band LR/3, LR, 3·LR, rounded to 3 significant figures."""
    lo, mid, hi = (float(f"{x:.3g}") for x in (lr / 3, lr, 3 * lr))
    return lo, mid, hi


@rule(
    "TP040",
    "learning-rate",
    "tinker-cookbook get_lr fit and recipes/chat_sl sft_sweep.md; LoRA Without Regret (LoRA ≈ 10x "
    "full FT, ~15x under ~100 steps); Malladi et al. 2022 (sqrt batch scaling for Adam)",
)
def learning_rate(d: Draft) -> Optional[Outcome]:
    """Why: the learning rate is the lever that decides the outcome, and its best value follows the
    model's width, not its parameter count: full fine-tuning LR = 5e-5 x (2000 / h)^p at batch 128,
    p = 0.781 for Llama-family and 0.0775 for Qwen-family (an empirical fit of Tulu-3 sweeps; h
    clamped to 576..8192), times sqrt(B / 128) for the effective batch B (Adam's square-root rule,
    clamped to 1/4..2), capped at 1e-4. LoRA and QLoRA take 10x that (15x for runs under ~100
    planned steps), times 32/alpha when alpha is pinned away from the fixed 32, capped at 1e-3 where
    the sweeps diverged. With alpha fixed the rate does not depend on rank. Other families get
    Llama's exponent and a warning: they are uncalibrated. Every plan carries a sweep band
    LR/3, LR, 3·LR (the sweeps' grids are ~3x apart) for `tuneplan sweep --lr band`.
    When not: the user pinned --learning-rate (kept, with the band around it). The batch term is the
    least certain part of the fit; LoRA tolerates large batches less than full FT (TP044).
    Source: tinker-cookbook hyperparam_utils.get_lr (formula version) and sft_sweep.md (best LoRA
    LR: Llama-3.2-1B/3B 1e-3, Llama-3.1-8B/70B 3e-4 at batch 128); LoRA Without Regret; Malladi et
    al. 2022; QLoRA scripts (2e-4 at batch 16, alpha 16 for 7B and 13B)."""
    pin = d.pins.learning_rate
    if pin:
        band = lr_band(pin)
        return Outcome(
            f"Learning rate pinned to {pin:g}; sweep band {band[0]:g}, {band[1]:g}, {band[2]:g}.",
            {"learning_rate": pin, "learning_rate_band": band},
        )
    m = d.model
    family = m.family
    p = LR_FIT_EXPONENT.get(family)
    warnings: tuple[str, ...] = ()
    if p is None:
        p = LR_FIT_EXPONENT["llama"]
        warnings = (
            f"Uncalibrated family {family!r}: the learning rate uses the Llama-family fit; "
            f"sweep it (`tuneplan sweep plan.json --lr band`).",
        )
    lo, hi = LR_HIDDEN_RANGE
    h = min(max(m.hidden_size, lo), hi)
    hnote = "" if h == m.hidden_size else f" (hidden {m.hidden_size} clamped to {h})"
    batch = d.task.batch_size
    bfac = min(max(math.sqrt(batch / LR_REF_BATCH), LR_BATCH_CLAMP[0]), LR_BATCH_CLAMP[1])
    full = LR_FIT_BASE * (2000 / h) ** p * bfac
    parts = [
        f"full-FT fit 5e-5 x (2000/{h})^{p:g}{hnote} x sqrt({batch}/{LR_REF_BATCH})"
        f"{' clamped' if bfac != math.sqrt(batch / LR_REF_BATCH) else ''} = {full:.3g}"
    ]
    if d.method == "full":
        lr = min(full, FULL_LR_CAP)
        if lr < full:
            parts.append(f"capped at {FULL_LR_CAP:g}")
        band = lr_band(lr)
        return Outcome(
            f"Learning rate {band[1]:g} for full fine-tuning of a {size_phrase(d)} {family} "
            f"model: {'; '.join(parts)}. Sweep band {band[0]:g}, {band[1]:g}, {band[2]:g}.",
            {"learning_rate": band[1], "learning_rate_band": band},
            warnings,
        )
    steps = planned_steps(d)
    mult = 15.0 if steps is not None and steps < SHORT_RUN_STEPS else 10.0
    parts.append(
        f"x {mult:g} for LoRA" + (f" ({steps} planned steps < {SHORT_RUN_STEPS})" if mult == 15 else "")
    )
    lr = full * mult
    alpha = d.lora_alpha
    if alpha != FIXED_ALPHA:
        lr *= FIXED_ALPHA / alpha
        parts.append(f"x 32/alpha = 32/{alpha:g}")
    if lr > LORA_LR_CAP:
        parts.append(f"capped at {LORA_LR_CAP:g} (sweeps diverged above)")
        lr = LORA_LR_CAP
    band = lr_band(lr)
    return Outcome(
        f"Learning rate {band[1]:g} for {method_word(d.chosen_method)} ({family}): {'; '.join(parts)}. "
        f"Sweep band {band[0]:g}, {band[1]:g}, {band[2]:g}.",
        {"learning_rate": band[1], "learning_rate_band": band},
        warnings,
    )


@rule(
    "TP041",
    "schedule-recipe",
    "QLoRA repo (constant LR, warmup 0.03, max_grad_norm 0.3, wd 0); Biderman App. A "
    "(cosine, 10% warmup, clip 1.0)",
)
def schedule_recipe(d: Draft) -> Optional[Outcome]:
    """Why: each method keeps the schedule it was validated with: QLoRA a constant rate after 3%
    warmup with gradient clipping at 0.3 and no weight decay; LoRA and full fine-tuning cosine decay
    after 10% warmup, clipping at 1.0. Epochs: full FT peaked at 2 epochs, LoRA needed ~4.
    When not: --max-steps pinned replaces epochs.
    Source: artidoro/qlora qlora.py defaults; Biderman et al. App. A and App. C (epochs)."""
    if d.method == "qlora":
        upd: dict[str, Any] = {
            "lr_scheduler": "constant_with_warmup",
            "warmup_ratio": 0.03,
            "max_grad_norm": 0.3,
            "weight_decay": 0.0,
        }
        msg = "QLoRA recipe: constant LR after 3% warmup, clip 0.3, no weight decay"
    elif d.method == "lora":
        upd = {"lr_scheduler": "cosine", "warmup_ratio": 0.1, "max_grad_norm": 1.0, "weight_decay": 0.0}
        msg = "LoRA: cosine after 10% warmup, clip 1.0"
    else:
        upd = {"lr_scheduler": "cosine", "warmup_ratio": 0.1, "max_grad_norm": 1.0, "weight_decay": 0.01}
        msg = "Full fine-tuning: cosine after 10% warmup, clip 1.0, weight decay 0.01"
    if d.max_steps is None:
        epochs = _epochs(d.method)
        upd["num_epochs"] = epochs
        msg += f"; {epochs:g} epochs"
    else:
        upd["num_epochs"] = None
        msg += f"; {d.max_steps} steps (pinned)"
    return Outcome(msg + ".", upd)


@rule(
    "TP042",
    "qlora-recipe",
    "QLoRA §3, Table 2, Table 4 (NF4 + double quantisation; FP4 a point behind); transformers "
    "BitsAndBytesConfig defaults",
)
def qlora_recipe(d: Draft) -> Optional[Outcome]:
    """Why: QLoRA only matches 16-bit LoRA with its full recipe — NF4 storage, double quantisation
    (4.127 instead of 4.5 bits/param), bf16 compute — while the libraries' defaults are FP4, no
    double quantisation and fp32 compute; the plan spells it out.
    When not: method is not QLoRA.
    Source: QLoRA §3 and Table 4 (FP4 'consistently one percentage point behind')."""
    if d.method != "qlora":
        return None
    compute: ComputeDtype = "float32" if d.on_cpu else ("bfloat16" if d.hardware.bf16 else "float16")
    q = Quantization(
        bits=4, quant_type="nf4", double_quant=True, compute_dtype=compute, kbit_upcast=d.kbit_upcast
    )
    up = (
        "non-quantised parameters upcast to fp32 (peft prepare_model_for_kbit_training)"
        if d.kbit_upcast
        else "non-quantised parameters kept in the compute dtype (kbit_upcast off, as qlora.py/torchtune)"
    )
    return Outcome(f"4-bit NF4 with double quantisation, {compute} compute; {up}.", {"quantization": q})


@rule(
    "TP043",
    "paged-optimizer",
    "QLoRA §3-4 (paged optimizers critical for 33B/65B on one 24/48 GB GPU); bitsandbytes docs",
)
def paged_optimizer(d: Draft) -> Optional[Outcome]:
    """Why: paged optimizer states spill to CPU RAM during memory spikes instead of failing, at no
    cost when everything fits; the QLoRA recipe uses them. They need NVIDIA unified memory.
    When not: not QLoRA, not on an NVIDIA GPU (CPU plans use torch AdamW), or the optimizer pinned.
    Source: QLoRA §3; bitsandbytes optimizer docs (paging only on OOM)."""
    if d.method != "qlora" or not d.on_cuda or d.pins.optimizer:
        return None
    if d.optimizer.startswith("paged"):
        return Outcome(f"Optimizer {d.optimizer}: spills to CPU RAM on memory spikes.")
    return None


@rule(
    "TP044",
    "lora-small-batch",
    "LoRA Without Regret ('Batch size effects': LoRA pays more at large batch, at any rank)",
)
def lora_small_batch(d: Draft) -> Optional[Outcome]:
    """Why: LoRA is less tolerant of large batches than full fine-tuning, independent of rank; the
    gap was small at 32 and grew above it.
    When not: full fine-tuning, or an effective batch of 32 or less.
    Source: LoRA Without Regret, 'Batch size effects'."""
    if d.method == "full" or d.task.batch_size <= 32:
        return None
    return Outcome(
        f"Effective batch {d.task.batch_size} is large for LoRA.",
        warnings=(
            f"LoRA trains worse than full fine-tuning at large batches (LoRA Without Regret); "
            f"consider an effective batch of 32 or less instead of {d.task.batch_size}.",
        ),
    )


@rule(
    "TP045",
    "lora-capacity",
    "LoRA Without Regret ('How much capacity': ~2 bits/param stored vs ~1 bit/token of data)",
)
def lora_capacity(d: Draft) -> Optional[Outcome]:
    """Why: an adapter stores at most ~2 bits per parameter, and instruction data carries up to ~1
    bit per token; an adapter with fewer than half as many parameters as the dataset has tokens is
    likely capacity-bound and learns less than full fine-tuning.
    When not: full fine-tuning, or the dataset size is unknown.
    Source: LoRA Without Regret (capacity argument; Allen-Zhu & Li for 2 bits/param)."""
    tokens = d.task.dataset_tokens
    if d.method == "full" or not tokens:
        return None
    params = d.model.lora_params(d.lora_rank, list(d.target_modules))
    if 2 * params >= tokens:
        return None
    return Outcome(
        f"Adapter has {params / 1e6:.1f}M parameters for {tokens / 1e6:.0f}M tokens.",
        warnings=(
            f"The adapter ({params / 1e6:.1f}M params at r={d.lora_rank}) may be capacity-bound "
            f"for {tokens / 1e6:.0f}M tokens; raise the rank or consider full fine-tuning.",
        ),
    )


@rule(
    "TP046",
    "continued-pretraining-with-lora",
    "Biderman et al. 2024 §4.7 rec. (a): LoRA for instruction finetuning, not continued pretraining",
)
def cpt_with_lora(d: Draft) -> Optional[Outcome]:
    """Why: on continued pretraining (billions of raw tokens) LoRA trailed full fine-tuning at every
    rank, even r=256 after 20B tokens.
    When not: instruction regime, or full fine-tuning chosen.
    Source: Biderman et al. §4.1 and recommendation (a) in §4.7."""
    if d.task.regime != "continued-pretraining" or d.method == "full":
        return None
    return Outcome(
        "Continued pretraining with adapters.",
        warnings=(
            "LoRA is recommended for instruction tuning, not continued "
            "pretraining, where it learns less at every rank (Biderman et al. "
            "2024); full fine-tuning on more devices would learn more.",
        ),
    )


@rule("TP047", "gradient-accumulation", "tuneplan: effective batch = micro x accumulation x devices")
def gradient_accumulation(d: Draft) -> Optional[Outcome]:
    """Why: the effective batch the user asked for is kept whatever the micro-batch: accumulation
    makes up the difference across steps and devices.
    When not: never skipped; it only restates the arithmetic.
    Source: the definition of gradient accumulation."""
    per_step = d.micro_batch * d.num_devices
    accum = max(1, math.ceil(d.task.batch_size / per_step))
    eff = per_step * accum
    msg = (
        f"Effective batch {eff} = micro-batch {d.micro_batch} x {accum} accumulation steps x "
        f"{d.num_devices} device{'s' if d.num_devices > 1 else ''}."
    )
    warnings: tuple[str, ...] = ()
    if eff != d.task.batch_size:
        warnings = (
            f"Effective batch is {eff}, not {d.task.batch_size}: it must be a multiple of "
            f"micro-batch x devices ({per_step}).",
        )
    return Outcome(msg, {"grad_accum": accum}, warnings)


@rule(
    "TP048",
    "steps-from-data",
    "tuneplan: steps = epochs x ceil(training rows / (micro-batch x devices)) / accumulation, "
    "as the executor counts them (executor/train.py total_steps)",
)
def steps_from_data(d: Draft) -> Optional[Outcome]:
    """Why: with the row count known the plan can say how many optimizer steps it will take, and
    warmup and schedule lengths stop being abstract. Under ~100 steps a run is short: warmup is a
    handful of steps and the learning rate matters more (LoRA Without Regret).
    When not: no --data file was read. With --max-steps pinned the steps are the pin, and the rule
    states how many epochs that is.
    Source: the executor's own step count (executor/train.py)."""
    ds = d.inputs.data_stats
    if ds is None:
        return None
    micro_per_epoch = math.ceil(ds.train_rows / (d.micro_batch * d.num_devices))
    per_epoch = max(1, math.ceil(micro_per_epoch / d.grad_accum))
    eff = d.micro_batch * d.grad_accum * d.num_devices
    carve = "" if ds.train_rows == ds.rows else f" ({ds.rows - ds.train_rows:,} held out for eval)"
    if d.max_steps is not None:
        epochs = d.max_steps / per_epoch
        return Outcome(
            f"{d.max_steps} steps pinned: {epochs:.2g} epochs over {ds.train_rows:,} training "
            f"rows{carve} at an effective batch of {eff}.",
            {"planned_steps": d.max_steps},
        )
    epochs = d.num_epochs or 1.0
    steps = max(1, math.ceil(epochs * micro_per_epoch / d.grad_accum))
    msg = (
        f"{steps} optimizer steps planned: {epochs:g} epochs x {per_epoch} steps per epoch "
        f"({ds.train_rows:,} training rows{carve} / effective batch {eff}); "
        f"{ds.trained_tokens:,} loss-bearing tokens per epoch."
    )
    if steps < 100:
        msg += " A short run (< 100 steps)."
    return Outcome(msg, {"planned_steps": steps})
