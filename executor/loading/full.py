"""Full fine-tuning: every weight trainable, in the plan's precision for the device."""

from __future__ import annotations

from pathlib import Path

from .common import LoadedModel, enable_checkpointing, load_base, resolve_precision


def import_runtime() -> None:
    """transformers and peft (the estimator's "Python + torch + transformers + peft" runtime;
    without bitsandbytes, which a full run never uses)."""
    from .lora import import_runtime as lora_runtime

    lora_runtime()


def load(plan, model_dir: Path, device, dist=None) -> LoadedModel:
    precision = resolve_precision(plan, device)
    model, tokenizer, attn, subs = load_base(plan, model_dir, device, dist, precision=precision)
    if plan.training.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    return LoadedModel(model, tokenizer, device, precision, attn, precision.substitutions + subs)
