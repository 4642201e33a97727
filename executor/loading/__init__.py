"""Loading a model for training, one module per method.

- :mod:`.common`: what every method shares: precision and attention for the device, the
  tokenizer, the base model's ``from_pretrained``, activation checkpointing, :class:`LoadedModel`;
- :mod:`.full`: every weight trainable;
- :mod:`.lora`: a frozen 16-bit base (fp32 on CPU) and peft LoRA adapters;
- :mod:`.qlora`: a frozen 4-bit base through bitsandbytes, prepare_model_for_kbit_training, LoRA.

bitsandbytes is imported by the QLoRA loader only (peft imports it whenever it is installed, so the
LoRA loader hides it from peft: :func:`.lora.without_bitsandbytes`). Where the model comes from
(the embedded GGUF, a local directory, the Hub cache) is executor/models.py.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from .common import LoadedModel, PrecisionSetup, load_tokenizer, resolve_attention, resolve_precision

__all__ = [
    "LoadedModel",
    "PrecisionSetup",
    "import_runtime",
    "load_model",
    "load_tokenizer",
    "loader",
    "resolve_attention",
    "resolve_precision",
]


def loader(method: str):
    """The loader module for ``method`` (full, lora, qlora)."""
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"unknown method {method!r}")
    return import_module(f"{__name__}.{method}")


def import_runtime(method: str) -> None:
    """Import the libraries ``method`` trains with, before the runtime's memory is measured
    (executor/measure.py runtime_baseline_bytes: the runtime part of a CPU peak)."""
    loader(method).import_runtime()


def load_model(plan, model_dir: Path, device=None, dist=None) -> LoadedModel:
    """Load the model for plan.method on ``device`` (default: the first CUDA device, else the CPU)
    and wrap it for training. ``dist`` is the DistContext of a multi-process worker, None on one
    process (executor/distributed/context.py)."""
    from ..models import pick_device

    return loader(plan.method).load(plan, Path(model_dir), device or pick_device(), dist)
