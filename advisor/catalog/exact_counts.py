"""Exact parameter counts of a local model directory, from transformers on the meta device.

The advisor's one deliberate reach for torch/transformers (import-linter ignore_imports and
tests/test_layering.py's DEFERRED_ALLOWED name this module): `advise --model DIR` cross-checks the
formula's counts against the real module tree when both are installed, and says so in the model's
`source` ("counts match transformers" or "... replace the formula's N"). Imported lazily, only on
that path; catalog ids, --params guesses and Hub configs never reach it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tuneplan.schemas import ParamCounts


def meta_device_counts(model_dir: Path) -> Optional[ParamCounts]:
    """Exact counts by module type from transformers on the meta device; None if unavailable."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except Exception:  # any architecture transformers cannot build: keep the formula's counts
        return None
    buckets = dict.fromkeys(ParamCounts.model_fields, 0)
    for pname, param in model.named_parameters():  # tied weights are listed once
        kind = param_kind(pname)
        if kind is None:
            return None
        buckets[kind] += param.numel()
    return ParamCounts(**buckets)


def param_kind(param_name: str) -> Optional[str]:
    """The ParamCounts field a transformers parameter name belongs to (None if unrecognised)."""
    parts = param_name.split(".")
    if parts[0] == "lm_head":
        return "lm_head"
    if any(p in ("embed_tokens", "wte", "wpe") for p in parts):
        return "embedding"
    if any("norm" in p or p.startswith("ln_") for p in parts):
        return "norm"
    if any(p in ("self_attn", "attn") for p in parts):
        return "attention"
    if "mlp" in parts:
        return "mlp"
    return None
