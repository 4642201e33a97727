"""What every method's loader shares: precision and attention for the device, the tokenizer, the
base model's from_pretrained, activation checkpointing, and the :class:`LoadedModel` handed to the
training loop. Every place the plan could not be honoured on this device is a substitution."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PrecisionSetup:
    """How the plan's precision is realised on the device."""

    param_dtype: object
    """dtype the (non-quantised) weights are loaded in."""
    autocast_dtype: object = None
    """dtype for torch.autocast, or None for no autocast."""
    grad_scaler: bool = False
    """Whether fp16 loss scaling is needed."""
    substitutions: list[str] = field(default_factory=list)
    """Departures from the plan."""


def resolve_precision(plan, device) -> PrecisionSetup:
    """Choose weight dtype and autocast for the plan's method and precision on this device."""
    import torch

    want = plan.training.precision
    subs: list[str] = []
    if device.type != "cuda":
        if want != "fp32":
            subs.append(f"training.precision: {want} -> fp32 (CPU: fp32 weights and compute, no autocast)")
        return PrecisionSetup(torch.float32, None, False, subs)
    if want in ("bf16-mixed", "bf16") and not torch.cuda.is_bf16_supported():
        subs.append(f"training.precision: {want} -> fp16-mixed (this GPU lacks bf16)")
        want = "fp16-mixed"
    half = torch.bfloat16 if want in ("bf16-mixed", "bf16") else torch.float16
    lowbit_base = plan.method in ("lora", "qlora")  # frozen base stored in 16 bits
    if want == "fp32":
        return PrecisionSetup(torch.float32, None, False, subs)
    if want == "bf16":
        return PrecisionSetup(torch.bfloat16, None, False, subs)
    param = half if lowbit_base else torch.float32
    return PrecisionSetup(param, half, want == "fp16-mixed", subs)


def resolve_attention(want: str, device) -> tuple[str, list[str]]:
    """Map training.attention to a transformers attn_implementation, recording fallbacks."""
    if want == "eager":
        return "eager", []
    if want == "flash":
        if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2", []
        why = "flash-attn is not installed" if device.type == "cuda" else "no CUDA device"
        return "sdpa", [f"training.attention: flash -> sdpa ({why})"]
    return "sdpa", []


@dataclass
class LoadedModel:
    """A model ready to train, with everything needed to run and report it."""

    model: object
    tokenizer: object
    device: object
    precision: PrecisionSetup
    attn_implementation: str
    substitutions: list[str]


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False):
    """Load a tokenizer (right padding, pad token defaulting to EOS)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (transformers 5 name, else the 4.x one)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def freeze(model) -> None:
    """No base weight trains (the adapters added afterwards do)."""
    for p in model.parameters():
        p.requires_grad_(False)


def load_base(
    plan,
    model_dir: Path,
    device,
    dist,
    *,
    precision: PrecisionSetup,
    extra: dict | None = None,
    to_device: bool = True,
) -> tuple[object, object, str, list[str]]:
    """(model, tokenizer, attn_implementation, substitutions): the base model in ``precision``'s
    weight dtype (``extra`` adds from_pretrained arguments, e.g. a quantization config), on
    ``device`` when ``to_device``, with the KV cache off (training)."""
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    subs: list[str] = []
    attn, attn_subs = resolve_attention(plan.training.attention, device)
    subs += attn_subs
    if dist is None and (plan.distributed.num_processes > 1 or plan.distributed.strategy != "none"):
        subs.append(
            f"distributed: {plan.distributed.num_processes} processes/{plan.distributed.strategy} "
            "-> 1 process/none (the executor trains on one device)"
        )
    tokenizer = load_tokenizer(model_dir, plan.trust_remote_code)
    kwargs: dict = {
        "attn_implementation": attn,
        "trust_remote_code": plan.trust_remote_code,
        "dtype": precision.param_dtype,
        **(extra or {}),
    }
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if to_device:
        model.to(device)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    return model, tokenizer, attn, subs
