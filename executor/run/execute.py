"""Stage 2, execute: load the model for the plan's method, encode the data, evaluate before,
train, measure, evaluate after, save the adapter (or the full model). Everything it learns goes
into the :class:`Execution` it fills as it goes, so the finish stage records whatever happened,
however far it got."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from tuneplan.base.errors import InputError

from .. import data as D
from ..signals import RunSignals, pause
from .prepare import Prepared
from .progress import Progress


@dataclass
class Execution:
    """The execute stage's state, read by the finish stage."""

    state: Any
    """executor/train.py TrainState: steps, tokens, metrics, checkpoints, the best step."""
    substitutions: list[str]
    t_wall: float = field(default_factory=time.perf_counter)
    meter: Any = None
    bar: Optional[Progress] = None
    trackers: Any = None


def start(p: Prepared) -> Execution:
    from ..train import TrainState

    return Execution(state=TrainState(), substitutions=list(p.substitutions))


@dataclass
class _Data:
    train: list
    eval: list
    probe: list
    n_train: int
    """Training sequences per rank (the step count follows it)."""


def execute(p: Prepared, ex: Execution, ctx, signals: RunSignals, progress: Optional[bool]) -> None:
    """Load, evaluate before, train, measure, evaluate after, save; sets p.result as it goes and
    its status to "succeeded" at the end (exceptions propagate to the caller, which records them)."""
    from ..loading import import_runtime, load_model
    from ..measure import MemoryMeter, count_params, runtime_baseline_bytes, runtime_imports
    from ..train import total_steps

    result, t = p.result, p.plan.training
    with runtime_imports():  # first: transformers.trainer_utils (set_seed) imports peft
        import_runtime(p.plan.method)
    from ..runlog import refresh

    refresh()  # loggers the runtime imports created (torch's): their console handlers raised too
    from transformers import set_seed

    set_seed(t.seed)
    runtime_bytes = runtime_baseline_bytes()  # RSS before the model: the runtime part of a CPU peak
    if p.tracker_names and ctx.is_main:  # before the model loads: a tracker that cannot start says so now
        ex.trackers = _open_trackers(p, ctx)
    loaded = load_model(p.plan, p.model_dir, ctx.device, dist=ctx.collectives)
    ex.substitutions += loaded.substitutions
    result.trainable_params, result.total_params = count_params(loaded.model)
    data = _encode(p, loaded, ctx, ex.substitutions)
    result.substitutions = list(ex.substitutions)

    def _eval(exs):
        return _evaluate(loaded, exs, t.per_device_batch_size, ctx.device)

    steps = total_steps(t, data.n_train, p.max_steps)
    ex.bar = bar = Progress(steps, progress if ctx.is_main else False)
    if not ctx.is_main:  # rank 0 reports for the job
        bar.log = bar.step = lambda *a, **k: None
    bar.log(
        f"run {p.run_id}: {p.plan.method} on {result.model} ({result.hardware}), {steps} steps, "
        f"{len(data.train)} train / {len(data.eval)} eval sequences"
    )
    if p.prior is None:
        bar.log("evaluating before training (eval and probe loss)")
        result.eval_loss_before = _eval(data.eval)
        result.forgetting_loss_before = _eval(data.probe)
    else:
        bar.log(
            f"resuming from {p.prior.checkpoint.name} (step {p.prior.step}); the before-training "
            "evaluation is kept from the first attempt"
        )
    ex.meter = MemoryMeter(loaded.model, ctx.device, runtime_bytes=runtime_bytes)
    _train(p, ex, ctx, signals, loaded, data, steps, lambda: (_eval(data.eval), _eval(data.probe)))
    result.measured = ctx.measured_max(ex.meter.result(), ex.state.wrapped_model)
    ex.meter.close()
    ex.substitutions += ex.meter.notes()
    bar.log("evaluating after training (eval and probe loss)")
    result.eval_loss_after = _eval(data.eval)
    result.forgetting_loss_after = _eval(data.probe)
    _save(p, ctx, loaded, ex.state, bar)
    result.status = "succeeded"


def _open_trackers(p: Prepared, ctx):
    """--report-to's trackers (executor/trackers.py), given the plan's settings as their config."""
    from accelerate import PartialState

    from ..trackers import Trackers

    # accelerate's trackers log through its process-state logger: the state first (one process:
    # this device's; several: the launcher's, already there)
    PartialState(cpu=ctx.device.type == "cpu")

    t = p.plan.training
    config = {
        "run_id": p.run_id,
        "method": p.plan.method,
        "model": p.result.model,
        "plan_hash": p.phash,
        **{k: v for k, v in t.model_dump().items() if isinstance(v, (int, float, str, bool))},
    }
    if p.plan.method != "full" and p.plan.lora is not None:
        config.update(
            {
                f"lora_{k}": v
                for k, v in p.plan.lora.model_dump().items()
                if isinstance(v, (int, float, str, bool))
            }
        )
    if p.prior is not None:
        config["resumed_from_step"] = p.prior.step
    return Trackers(p.tracker_names, p.run_dir, p.run_id, config)


def _evaluate(loaded, examples, batch_size: int, device):
    from ..train import evaluate

    return evaluate(
        loaded.model,
        examples,
        batch_size=batch_size,
        pad_id=loaded.tokenizer.pad_token_id,
        device=device,
        autocast_dtype=loaded.precision.autocast_dtype,
    )


def _encode(p: Prepared, loaded, ctx, substitutions: list[str]) -> _Data:
    """Tokenise train/eval/probe rows; pack when planned; this rank's share of the training set."""
    from ..train import EVAL_MAX_BATCHES

    t, tok = p.plan.training, loaded.tokenizer
    train_ex, notes = D.encode_rows(p.train_rows, tok, t.seq_len)
    substitutions += [f"data: {n}" for n in notes]
    if not train_ex:
        raise InputError.one(
            p.where,
            f"no training row has a trained token within seq_len={t.seq_len}",
            "raise training.seq_len or shorten the prompts",
        )
    if t.packing:
        n_before = len(train_ex)
        train_ex = D.pack(train_ex, t.seq_len)
        substitutions.append(
            f"data: packed {n_before} sequences into {len(train_ex)} of at most "
            f"{t.seq_len} tokens (position ids reset per example)"
        )
        if t.attention != "flash" and loaded.model.config._attn_implementation != "flash_attention_2":
            substitutions.append(
                "packing: with sdpa/eager attention packed examples attend to earlier "
                "ones in their sequence (only flash_attention_2 separates them)"
            )
    n_train = len(train_ex)
    if ctx.distributed:  # each rank trains on its interleaved share; steps agree on all ranks
        if n_train < ctx.world_size:
            raise InputError.one(
                p.where,
                f"{n_train} training sequences for {ctx.world_size} processes",
                "give at least one sequence per process",
            )
        n_train = -(-n_train // ctx.world_size)
        train_ex = ctx.shard(train_ex)
    eval_ex, _ = D.encode_rows(p.eval_rows, tok, t.seq_len)
    probe_ex = D.probe_examples(tok, t.seq_len, p.probe)
    bs = t.per_device_batch_size
    for name, exs in (("eval", eval_ex), ("probe", probe_ex)):
        if len(exs) > EVAL_MAX_BATCHES * bs:
            substitutions.append(
                f"{name}: loss over the first {EVAL_MAX_BATCHES * bs} of {len(exs)} "
                f"sequences (cap: {EVAL_MAX_BATCHES} batches of {bs})"
            )
    return _Data(train_ex, eval_ex, probe_ex, n_train)


def _train(
    p: Prepared, ex: Execution, ctx, signals: RunSignals, loaded, data: _Data, steps: int, evaluate_fn
) -> None:
    """The training loop, each step appended to metrics.jsonl (rank 0) and the trackers."""
    from ..train import train

    t = p.plan.training
    bar, trackers = ex.bar, ex.trackers
    with p.metrics_file.open("a", encoding="utf-8") if ctx.is_main else open(os.devnull, "w") as mf:

        def on_step(m: dict) -> None:
            mf.write(json.dumps(m) + "\n")
            mf.flush()
            if trackers is not None:
                trackers.log(m)
            bar.step(m)
            if m["step"] == 1:
                pause("training", signals)

        ex.substitutions += train(
            loaded,
            data.train,
            t,
            steps=steps,
            meter=ex.meter,
            state=ex.state,
            on_step=on_step,
            run_dir=p.run_dir,
            plan_hash=p.phash,
            resume_from=p.prior.checkpoint if p.prior is not None else None,
            evaluate_fn=evaluate_fn,
            signals=signals,
            dist=ctx.collectives,
        )


def _save(p: Prepared, ctx, loaded, state, bar: Progress) -> None:
    """The adapter (lora, qlora) or the full model, with the tokenizer, made portable."""
    full = p.plan.method == "full"
    art = p.run_dir / ("model" if full else "adapter")
    bar.log(f"saving the {'model' if full else 'adapter'} to {art}")
    ctx.save_pretrained(state.wrapped_model or loaded.model, art)  # a collective for sharded models
    if ctx.is_main:
        from ..portable import make_portable

        loaded.tokenizer.save_pretrained(str(art))
        make_portable(art, p.plan.inputs.model.name)
        p.result.artifact_path = str(art.resolve())
        p.result.artifact_bytes = sum(f.stat().st_size for f in art.rglob("*") if f.is_file())
