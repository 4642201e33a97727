"""LoRA: a frozen base in the plan's 16-bit dtype (fp32 on CPU) with peft LoRA adapters.

peft imports bitsandbytes whenever it is installed (peft/helpers.py when peft is imported, the
8-bit and 4-bit dispatchers in get_peft_model); a LoRA run uses none of it, so this loader hides
it from peft (:func:`without_bitsandbytes`): 1.4 s and ~44 MiB of RSS less, and no bitsandbytes
warnings, on a run that never quantises."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tuneplan.base.errors import InputError

from .common import LoadedModel, enable_checkpointing, freeze, load_base, resolve_precision

BNB = "bitsandbytes"


@contextmanager
def without_bitsandbytes() -> Iterator[None]:
    """bitsandbytes unimportable inside (``sys.modules[name] = None``: ``import`` raises
    ImportError and ``importlib.util.find_spec`` answers None, which is how peft and transformers
    ask). Availability checks they cache are warmed before (transformers) or cleared after (peft),
    so a QLoRA load later in the same process still finds bitsandbytes. A no-op once bitsandbytes
    is imported (a QLoRA run came first)."""
    if BNB in sys.modules:
        yield
        return
    try:
        from transformers.utils import import_utils as tf_imports

        tf_imports.is_bitsandbytes_available()  # cached True (when installed) before it is hidden
    except (ImportError, AttributeError):
        pass
    sys.modules[BNB] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if BNB in sys.modules and sys.modules[BNB] is None:
            del sys.modules[BNB]
        peft_imports = sys.modules.get("peft.import_utils")
        for name in ("is_bnb_available", "is_bnb_4bit_available"):
            fn = getattr(peft_imports, name, None)
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()


def import_runtime() -> None:
    """transformers and peft (the estimator's "Python + torch + transformers + peft" runtime)."""
    import transformers  # noqa: F401

    with without_bitsandbytes():
        import peft  # noqa: F401


def lora_config(lora, parameter_names: list[str] | None = None):
    """peft's LoraConfig for the plan's lora block. ``parameter_names``: the full names of fused
    expert parameters already parametrized (QLoRA's 4-bit store), which peft matches only by
    their whole name, not by suffix."""
    from peft import LoraConfig

    targets = lora.target_modules
    target_modules = "all-linear" if targets in (["all-linear"], ["all"]) else list(targets)
    # Mixture-of-experts projections stored fused as 3-D nn.Parameters (transformers >= 5:
    # mlp.experts.gate_up_proj / down_proj) are not nn.Linear modules: peft adapts them through
    # target_parameters (one LoRA pair per expert). The router (mlp.gate) is never a target.
    fused = [t for t in targets if t.startswith("experts.")] if isinstance(target_modules, list) else []
    if fused:
        target_modules = [t for t in target_modules if t not in fused] or None
    if fused and parameter_names:
        fused = [n for n in parameter_names if any(n.endswith("." + t) for t in fused)] + [
            t for t in fused if not any(n.endswith("." + t) for n in parameter_names)
        ]
    extra = {"target_parameters": fused} if fused else {}
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target_modules,
        **extra,
        use_rslora=lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_adapters(model, plan, parameter_names: list[str] | None = None):
    """get_peft_model with the plan's LoRA settings; InputError when the targets match no layer."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(plan.lora, parameter_names))
    except ValueError as exc:
        raise InputError.one(
            "lora.target_modules",
            f"{plan.lora.target_modules} do not match this model's layers: {exc}",
            "use the model's own linear layer names (e.g. q_proj, v_proj) or all-linear",
        ) from None


def load(plan, model_dir: Path, device, dist=None) -> LoadedModel:
    """The frozen base, activation checkpointing when planned, then the adapters."""
    precision = resolve_precision(plan, device)
    model, tokenizer, attn, subs = load_base(plan, model_dir, device, dist, precision=precision)
    freeze(model)
    if plan.training.gradient_checkpointing:
        enable_checkpointing(model)
        model.enable_input_require_grads()
    with without_bitsandbytes():
        model = add_adapters(model, plan)
    model.train()
    return LoadedModel(model, tokenizer, device, precision, attn, precision.substitutions + subs)
