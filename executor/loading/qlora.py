"""QLoRA: a frozen 4-bit base (bitsandbytes NF4/FP4, double quantisation as planned), peft's
prepare_model_for_kbit_training (or its steps less the fp32 upcast), then LoRA adapters. The only
loader that imports bitsandbytes."""

from __future__ import annotations

from pathlib import Path

from .common import LoadedModel, PrecisionSetup, enable_checkpointing, freeze, load_base, resolve_precision
from .lora import add_adapters


def import_runtime() -> None:
    """bitsandbytes, transformers and peft: all of them run in a QLoRA step."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401


def compute_dtype(plan, device) -> tuple[object, list[str]]:
    import torch

    want = plan.quantization.compute_dtype
    if device.type != "cuda":
        # bitsandbytes dequantises to bf16 on CPU and CPU autocast supports it; fp16 is not worth it there
        if want == "float16":
            return torch.float32, [f"quantization.compute_dtype: {want} -> float32 (CPU)"]
        return getattr(torch, want), []
    if want == "bfloat16" and not torch.cuda.is_bf16_supported():
        return torch.float16, ["quantization.compute_dtype: bfloat16 -> float16 (this GPU lacks bf16)"]
    return getattr(torch, want), []


def keep_cpu_4bit_differentiable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, a Linear4bit run in eval mode without grad (our eval-before pass)
    permanently repacks its weight into an inference layout whose kernel has no autograd: later
    training steps would silently get no gradient through the frozen base (and bf16 absmax).
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def quantization_config(plan, compute, dist):
    """transformers' BitsAndBytesConfig for the plan's quantization block."""
    from transformers import BitsAndBytesConfig

    q = plan.quantization
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute,
        # FSDP-QLoRA: sharding needs the packed 4-bit weights stored in the compute dtype.
        **(
            {"bnb_4bit_quant_storage": compute}
            if dist is not None and dist.strategy in ("fsdp", "deepspeed-zero3")
            else {}
        ),
    )


def load(plan, model_dir: Path, device, dist=None) -> LoadedModel:
    import torch

    planned = resolve_precision(plan, device)
    compute, csubs = compute_dtype(plan, device)
    # Frozen 4-bit base dequantises into `compute`; fp32 adapters run under autocast to it.
    half = compute if compute != torch.float32 else None
    precision = PrecisionSetup(compute, half, compute == torch.float16, planned.substitutions)
    device_map = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model, tokenizer, attn, subs = load_base(
        plan,
        model_dir,
        device,
        dist,
        precision=precision,
        to_device=False,
        extra={"quantization_config": quantization_config(plan, compute, dist), "device_map": device_map},
    )
    subs = planned.substitutions + subs + csubs
    gc = plan.training.gradient_checkpointing
    keep_cpu_4bit_differentiable(model)
    if getattr(plan.quantization, "kbit_upcast", True):
        from peft import prepare_model_for_kbit_training

        before = {n: p.dtype for n, p in model.named_parameters()}
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        upcast = [n for n, p in model.named_parameters() if before.get(n) != p.dtype]
        if upcast:
            subs.append(
                f"qlora: prepare_model_for_kbit_training upcast {len(upcast)} non-quantised "
                "parameter tensors (norms, embeddings) to float32"
            )
    else:
        # quantization.kbit_upcast false: what prepare_model_for_kbit_training does, less the
        # fp32 cast (the QLoRA paper's qlora.py and torchtune keep these in the compute dtype).
        freeze(model)
        if gc:
            enable_checkpointing(model)
    if gc:
        model.enable_input_require_grads()
    model = add_adapters(model, plan)
    model.train()
    return LoadedModel(model, tokenizer, device, precision, attn, subs)
