"""The training loop: plain torch, so every step can be measured.

AdamW (torch or bitsandbytes 8-bit/paged), a transformers scheduler with linear warmup, gradient
accumulation, clipping, autocast mixed precision (GradScaler for fp16), and loss = mean over all
trained (non -100) tokens of the optimizer step, across its micro-batches.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, Example, collate, micro_batches
from .measure import MemoryMeter
from .memsave import memory_savers

EVAL_MAX_BATCHES = max(1, int(os.environ.get("TUNEPLAN_EVAL_BATCHES", "8")))
"""Eval and probe losses use at most this many batches (the first examples, in order), so the
before/after evaluations stay fast; the cap is stated in the run's substitutions when it bites.
$TUNEPLAN_EVAL_BATCHES changes it (the test suite uses 1 to keep CPU runs short)."""


@dataclass
class TrainState:
    """Progress of a run; filled as it goes so an interrupted run can still be reported."""

    metrics: list[dict] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    wrapped_model: object = None
    """The model as wrapped for several processes (DDP, FSDP, DeepSpeed); None on one."""
    consumed: int = 0
    """Micro-batches drawn from the data stream (the data position a checkpoint saves)."""
    positions: int = 0
    """Batch positions trained on, padding included (padding share = 1 - tokens / positions)."""
    best_step: Optional[int] = None
    best_eval_loss: Optional[float] = None
    bad_evals: int = 0
    """Evaluations in a row without a new best eval loss (early stop)."""
    early_stopped: bool = False
    stop_reason: Optional[str] = None
    checkpointer: object = None
    """executor/checkpoint.py Checkpointer once training started with a run directory."""

    _SAVED = (
        "metrics",
        "steps",
        "tokens",
        "train_seconds",
        "consumed",
        "positions",
        "best_step",
        "best_eval_loss",
        "bad_evals",
    )

    def snapshot(self) -> dict:
        """What a checkpoint keeps of the loop (restored by :meth:`restore`)."""
        return {k: getattr(self, k) for k in self._SAVED}

    def restore(self, saved: dict) -> None:
        for k in self._SAVED:
            if k in saved:
                setattr(self, k, saved[k])


def total_steps(training, n_train: int, override: Optional[int] = None) -> int:
    """Optimizer steps: the override (CLI --max-steps), else training.max_steps, else epochs."""
    if override is not None:
        return override
    if training.max_steps is not None:
        return training.max_steps
    micro_per_epoch = math.ceil(n_train / training.per_device_batch_size)
    return max(1, math.ceil(training.num_epochs * micro_per_epoch / training.gradient_accumulation_steps))


def build_optimizer(model, training, device: torch.device) -> tuple[torch.optim.Optimizer, list[str]]:
    """The plan's optimizer over trainable parameters (no weight decay on biases and norms).

    On CUDA the bitsandbytes optimizers are used as planned. On CPU, bitsandbytes' 8-bit AdamW
    works (blockwise uint8 states); paging needs CUDA unified memory, so paged-adamw-8bit becomes
    adamw-8bit and paged-adamw-32bit becomes torch AdamW, recorded as substitutions.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": training.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    want = training.optimizer
    subs: list[str] = []
    if device.type != "cuda" and want.startswith("paged-"):
        got = "adamw-8bit" if want == "paged-adamw-8bit" else "adamw"
        subs.append(f"training.optimizer: {want} -> {got} (paged optimizers need CUDA)")
        want = got
    lr = training.learning_rate
    if want == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8), subs
    import bitsandbytes as bnb

    cls = {
        "adamw-8bit": bnb.optim.AdamW8bit,
        "paged-adamw-8bit": bnb.optim.PagedAdamW8bit,
        "paged-adamw-32bit": bnb.optim.PagedAdamW32bit,
    }[want]
    return cls(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8), subs


def build_scheduler(optimizer, training, steps: int):
    """transformers.get_scheduler with warmup = ceil(warmup_ratio * steps)."""
    from transformers import get_scheduler

    warmup = math.ceil(training.warmup_ratio * steps)
    return get_scheduler(training.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def _autocast(device: torch.device, dtype) -> object:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropy over positions whose label is not IGNORE_INDEX (fp32)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(logits.device)
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _forward(model, batch: dict, device: torch.device):
    """Logits for one batch; packed batches pass their position ids (and, under
    flash_attention_2, no attention mask, so its varlen path keeps packed examples apart)."""
    kw = {"input_ids": batch["input_ids"].to(device)}
    if "position_ids" in batch:
        kw["position_ids"] = batch["position_ids"].to(device)
        cfg = getattr(getattr(model, "module", model), "config", None)
        if getattr(cfg, "_attn_implementation", None) != "flash_attention_2":
            kw["attention_mask"] = batch["attention_mask"].to(device)
    else:
        kw["attention_mask"] = batch["attention_mask"].to(device)
    return model(**kw).logits


def _targets(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate(
    model,
    examples: list[Example],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast_dtype=None,
    max_batches: int = EVAL_MAX_BATCHES,
) -> Optional[float]:
    """Mean token loss over at most max_batches batches of `examples` (None when empty)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for b in range(min(max_batches, math.ceil(len(examples) / batch_size))):
            batch = collate(examples[b * batch_size : (b + 1) * batch_size], pad_id)
            with _autocast(device, autocast_dtype):
                logits = _forward(model, batch, device)
            total += float(token_loss_sum(logits, batch["labels"]))
            count += _targets(batch)
    finally:
        model.train(was_training)
    return total / count if count else None


def train(
    loaded,
    train_examples: list[Example],
    training,
    *,
    steps: int,
    meter: MemoryMeter,
    state: TrainState,
    on_step: Callable[[dict], None] = lambda m: None,
    dist=None,
    run_dir=None,
    plan_hash: Optional[str] = None,
    resume_from=None,
    evaluate_fn: Optional[Callable[[], tuple]] = None,
    signals=None,
) -> list[str]:
    """Run `steps` optimizer steps, appending one metrics dict per step to state.metrics.

    Returns the substitutions made (optimizer fallbacks). KeyboardInterrupt and errors propagate
    with state holding the completed steps. `dist` (executor/distributed/context.py DistContext, several
    processes): model and optimizer are wrapped by it, and each step's loss (mean) and tokens
    (sum) are reduced over ranks before they are recorded.

    With `run_dir`, checkpoints (executor/checkpoint.py) are written every
    training.save_every_steps / save_every_minutes and when `signals` (executor/signals.py,
    in soft mode here) asks to stop: the step in progress ends, a checkpoint is written, then
    KeyboardInterrupt is raised. `resume_from` (a checkpoint directory) restores weights,
    optimizer, scheduler, scaler, RNG states, data position and metrics before the first step,
    so the run continues exactly. `evaluate_fn` () -> (eval_loss, probe_loss) runs every
    training.eval_every_steps steps; the best step is tracked and training.early_stop_patience
    stops the loop early.
    """
    model, device, prec = loaded.model, loaded.device, loaded.precision
    pad_id = loaded.tokenizer.pad_token_id
    optimizer, subs = build_optimizer(model, training, device)
    if dist is not None:
        model, optimizer = dist.prepare(model, optimizer)
        state.wrapped_model = model
    scheduler = build_scheduler(optimizer, training, steps)
    scaler = torch.amp.GradScaler(device.type) if prec.grad_scaler else None
    ckpt = None
    if run_dir is not None:
        from .checkpoint import Checkpointer

        ckpt = Checkpointer(
            run_dir,
            plan_hash or "",
            keep=training.save_total_limit,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            loop_get=state.snapshot,
            loop_put=state.restore,
            device=device,
            dist=dist,
            total_steps=steps,
        )
        state.checkpointer = ckpt
    if resume_from is not None:
        if ckpt is None:
            raise RuntimeError("resume_from needs the run directory its checkpoints belong to")
        ckpt.load(resume_from)
    first = state.steps + 1
    stream = micro_batches(
        train_examples, training.per_device_batch_size, training.seed, start=state.consumed
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    savers = memory_savers(model, training, device, meter, distributed=dist is not None)
    subs += savers.substitutions
    model.train()
    meter.start()
    t_start = time.perf_counter() - (state.metrics[-1]["elapsed_s"] if state.metrics else 0.0)
    last_save = _clock()
    every_eval = training.eval_every_steps if evaluate_fn is not None else None
    soft = signals.soft() if signals is not None else nullcontext()
    with soft:
        for step in range(first, steps + 1):
            _one_step(
                step,
                steps,
                model,
                optimizer,
                scheduler,
                scaler,
                trainable,
                stream,
                training,
                prec,
                device,
                pad_id,
                meter,
                state,
                dist,
                t_start,
                savers,
            )
            record = state.metrics[-1]
            if every_eval and step % every_eval == 0:
                ev, pr = evaluate_fn()
                record["eval_loss"], record["probe_loss"] = ev, pr
                if ev is not None:
                    if state.best_eval_loss is None or ev < state.best_eval_loss:
                        state.best_step, state.best_eval_loss, state.bad_evals = step, ev, 0
                    else:
                        state.bad_evals += 1
            on_step(record)
            stop = signals.stop_requested if signals is not None else None
            if dist is not None and dist.max_int(1 if stop else 0) and not stop:
                stop = "a signal on another process"
            minutes = training.save_every_minutes
            by_time = minutes is not None and _clock() - last_save >= minutes * 60
            if dist is not None and minutes is not None:  # every rank saves, or none (a collective)
                by_time = bool(dist.max_int(1 if by_time else 0))
            due = (
                ckpt is not None
                and step < steps
                and (bool(training.save_every_steps and step % training.save_every_steps == 0) or by_time)
            )
            if ckpt is not None and (stop or due):
                ckpt.save(step)
                last_save = _clock()
                if signals is not None and not stop:
                    stop = signals.stop_requested
            if stop:
                state.stop_reason = f"{stop} at step {step}; " + (
                    f"checkpoint {ckpt.last_dir.name} written"
                    if ckpt is not None and ckpt.last_dir is not None
                    else "no checkpoint"
                )
                if signals is not None:
                    signals.stop_now()
                raise KeyboardInterrupt(stop)
            patience = training.early_stop_patience
            if patience and state.bad_evals >= patience and step < steps:
                state.early_stopped = True
                state.stop_reason = (
                    f"early stop at step {step}: eval loss not improved for {patience} "
                    f"evaluations (best {state.best_eval_loss:.4f} at step {state.best_step})"
                )
                break
    return subs


_clock = time.monotonic
"""The wall clock training.save_every_minutes is measured on (a test sets a fake one)."""


def _one_step(
    step,
    steps,
    model,
    optimizer,
    scheduler,
    scaler,
    trainable,
    stream,
    training,
    prec,
    device,
    pad_id,
    meter,
    state: TrainState,
    dist,
    t_start: float,
    savers,
) -> None:
    """One optimizer step over gradient_accumulation_steps micro-batches; appends its record."""
    t0 = time.perf_counter()
    batches = [collate(next(stream), pad_id) for _ in range(training.gradient_accumulation_steps)]
    meter.begin_step(step, batches, steps)
    n_targets = max(1, sum(_targets(b) for b in batches))
    loss_sum = 0.0
    for batch in batches:
        with meter.forward(), _autocast(device, prec.autocast_dtype):
            with savers.offload():
                if "position_ids" in batch and not savers.chunk:
                    logits = _forward(model, batch, device)  # packed: position ids reset per example
                else:
                    logits = savers.forward(
                        model, batch["input_ids"].to(device), batch["attention_mask"].to(device)
                    )
            loss = savers.loss(model, logits, batch["labels"], token_loss_sum) / n_targets
        meter.end_forward(logits)
        del logits
        if dist is not None:
            dist.backward(scaler.scale(loss) if scaler else loss, training.gradient_accumulation_steps)
        else:
            (scaler.scale(loss) if scaler else loss).backward()
        loss_sum += float(loss.detach())
    meter.after_backward()
    if scaler:
        scaler.unscale_(optimizer)
    if dist is not None:
        grad_norm = dist.clip_grad_norm_(model, training.max_grad_norm)
    else:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, training.max_grad_norm))
    lr = float(scheduler.get_last_lr()[0])
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    meter.after_step(optimizer)
    meter.end_step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    positions = sum(int(b["attention_mask"].numel()) for b in batches)
    trained = sum(_targets(b) for b in batches)
    if dist is not None:
        dist.maybe_fail(step)
        loss_sum, tokens = dist.reduce_step(loss_sum, tokens)
    state.steps = step
    state.consumed += training.gradient_accumulation_steps
    state.tokens += tokens
    state.positions += positions * (dist.world_size if dist is not None else 1)
    state.train_seconds += time.perf_counter() - t0
    state.metrics.append(
        {
            "step": step,
            "loss": loss_sum,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": tokens,
            "trained_tokens": trained,
            "positions": positions,
            "elapsed_s": round(time.perf_counter() - t_start, 4),
        }
    )
