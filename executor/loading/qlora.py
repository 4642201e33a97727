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


def _store_4bit(module, name: str, quant_type: str, double_quant: bool, compute, storage=None):
    """Replace ``module.<name>`` by its packed 4-bit form behind a torch parametrization that
    dequantises it on read; returns the packed parameter."""
    import bitsandbytes.functional as bnbf
    import torch
    from torch import nn

    class Dequantize4bit(nn.Module):
        """``original`` is the packed 4-bit stack (uint8, two weights a byte, bitsandbytes'
        blocksize-64 absmax, double-quantised as planned); reading the parameter dequantises
        it into the compute dtype, as bitsandbytes' Linear4bit does for each matmul."""

        def __init__(self, quant_state) -> None:
            super().__init__()
            self.quant_state = quant_state

        def forward(self, packed: torch.Tensor) -> torch.Tensor:
            return bnbf.dequantize_4bit(packed, self.quant_state).to(compute)

    weight = getattr(module, name).detach().contiguous()
    packed, quant_state = bnbf.quantize_4bit(
        weight,
        blocksize=64,
        compress_statistics=double_quant,
        quant_type=quant_type,
        quant_storage=storage or torch.uint8,
    )
    del weight
    delattr(module, name)
    module.register_parameter(name, nn.Parameter(packed, requires_grad=False))
    nn.utils.parametrize.register_parametrization(module, name, Dequantize4bit(quant_state), unsafe=True)
    original = module.parametrizations[name].original
    original.quant_state = quant_state  # count_params / the memory measurement read the logical size here
    return original


def fused_expert_parameters(model) -> list[tuple[str, object, str]]:
    """(module name, module, parameter name) of every mixture-of-experts projection stored fused
    as one 3-D parameter (transformers >= 5: ``mlp.experts.gate_up_proj`` / ``down_proj``). The
    router (``mlp.gate``, 2-D) and shared experts (nn.Linear) are not among them."""
    out = []
    for mname, module in model.named_modules():
        if not mname.endswith("experts"):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if p.ndim == 3:
                out.append((mname, module, pname))
    return out


def quantize_fused_experts(model, plan, compute, dist=None) -> list[str]:
    """Store the fused expert stacks of a mixture-of-experts model in 4 bits.

    transformers' bitsandbytes integration replaces nn.Linear layers only, so fused expert
    parameters would stay in the load dtype (then fp32 after prepare_model_for_kbit_training):
    the experts, most of an MoE model's weights, at 4-8x the NF4 bytes the estimator plans. Each
    stack is quantised with bitsandbytes' own quantize_4bit (the plan's NF4/FP4 and double quant,
    blocksize 64 like Linear4bit) behind a torch parametrization that dequantises on read; peft's
    ParamWrapper (target_parameters) stacks its LoRA proxy on top. Returns the stacks' full
    parameter names (peft matches a parametrized parameter by its whole name). Under FSDP /
    ZeRO-3 the packed bytes are stored in the compute dtype, as quantization_config asks of
    Linear4bit (bnb_4bit_quant_storage), so sharding sees one dtype."""
    q = plan.quantization
    sharded = dist is not None and dist.strategy in ("fsdp", "deepspeed-zero3")
    found = fused_expert_parameters(model)
    for _, module, name in found:
        _store_4bit(module, name, q.quant_type, q.double_quant, compute, compute if sharded else None)
    return [f"{mname}.{name}" for mname, _, name in found]


def _remove_lora_proxy(wrapper) -> None:
    """peft's ParamWrapper._remove_parametrizations, for a parameter that already carries a
    parametrization (the 4-bit store): peft 0.21 only looks for its _LoraParameterProxy there,
    not the _LoraFactorsProxy it uses for one adapter on a 3-D stack, so the LoRA proxy would
    pile up on every forward. The LoRA proxy is always the last one registered: remove it."""
    base = wrapper.get_base_layer()
    plist = base.parametrizations[wrapper.parameter_name]
    del plist[len(plist) - 1]


def _activate_lora_fresh(wrapper, original):
    """peft's ParamWrapper._activate_lora, then the parametrization cache entry of this
    parameter dropped: with two stacks on one experts module peft nests two wrappers, and the
    inner one reads its parameter (for its dtype) inside the outer one's parametrize.cached()
    before registering its LoRA proxy, so without this the cached 4-bit dequantisation, LoRA-less,
    would be what the forward reads (the inner stack's adapters would get no gradient)."""
    from contextlib import contextmanager

    from torch.nn.utils import parametrize

    @contextmanager
    def activate(active_adapters):
        with original(active_adapters):
            parametrize._cache.pop((id(wrapper.get_base_layer()), wrapper.parameter_name), None)
            yield

    return activate


def keep_lora_proxies_removable(model) -> None:
    """Bind the two fixes above to every peft ParamWrapper over a 4-bit expert stack."""
    import types

    from peft.tuners.lora.layer import ParamWrapper

    for module in model.modules():
        if isinstance(module, ParamWrapper):
            base = module.get_base_layer()
            params = getattr(base, "parametrizations", {})
            if module.parameter_name in params:
                module._remove_parametrizations = types.MethodType(_remove_lora_proxy, module)
                module._activate_lora = _activate_lora_fresh(module, module._activate_lora)


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
    stacks = quantize_fused_experts(model, plan, compute, dist)
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
    model = add_adapters(model, plan, stacks)
    if stacks:
        keep_lora_proxies_removable(model)
    model.train()
    return LoadedModel(model, tokenizer, device, precision, attn, subs)
