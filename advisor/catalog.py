"""Known models and GPUs, local config.json models, --params guesses and this machine's hardware.

Pure at import time: stdlib + pydantic only. transformers/torch are imported lazily inside
`model_from_dir`, and only to cross-check parameter counts on the meta device.

Model rows hold the public config.json values (Hugging Face key names) and go through
`model_from_config_dict` -> `build_spec`, the same path a local model directory takes.

GPU memory convention: `memory_bytes` is what `nvidia-smi --query-gpu=memory.total` reports
(MiB) times 1024**2, i.e. the usable total a framework sees, not the marketed GB. Where no
nvidia-smi total is known the marketed size is taken as GiB (N * 1024 MiB); each row's
`source` says which.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from pydantic import ValidationError

from tuneplan.schemas import CPUHardware, GPUHardware, ModelSpec, ParamCounts

from tuneplan.base.errors import InputError, Problem, pydantic_problems
from .modelspec import build_spec

MiB = 1024**2
GiB = 1024**3

# --------------------------------------------------------------------------- model catalog


@dataclass(frozen=True)
class ModelRow:
    """One catalog model: its id, where the numbers come from, and its config.json values."""

    name: str
    source: str
    config: dict = field(hash=False)

    @property
    def short(self) -> str:
        """The part after the slash ("Llama-3.1-8B" for "meta-llama/Llama-3.1-8B")."""
        return self.name.rsplit("/", 1)[-1]


def _cfg(model_type: str, layers: int, hidden: int, ffn: int, heads: int, kv: int, vocab: int,
         ctx: int, tie: bool, head_dim: Optional[int] = None) -> dict:
    """A Llama-style config.json subset with Hugging Face key names."""
    cfg = {
        "model_type": model_type, "num_hidden_layers": layers, "hidden_size": hidden,
        "intermediate_size": ffn, "num_attention_heads": heads, "num_key_value_heads": kv,
        "vocab_size": vocab, "max_position_embeddings": ctx, "tie_word_embeddings": tie,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return cfg


def _gpt2(layers: int, hidden: int, heads: int, vocab: int, ctx: int, model_type: str = "gpt2") -> dict:
    """A GPT-2-style config.json subset (n_inner unset means 4 * n_embd)."""
    return {"model_type": model_type, "n_layer": layers, "n_embd": hidden, "n_head": heads,
            "vocab_size": vocab, "n_positions": ctx, "tie_word_embeddings": True}


def _hf(repo: str) -> str:
    """Citation of a Hugging Face config.json."""
    return f"huggingface.co/{repo} config.json"


_MODEL_ROWS: tuple[ModelRow, ...] = (
    ModelRow("gpt3-175b", "LoRA paper (Hu et al. 2021) §4.2 / GPT-3 paper (Brown et al. 2020) "
             "Table 2.1: 96 layers, d_model 12288, 96 heads, ffn 4*d, ctx 2048; GPT-2 BPE vocab "
             "50257; tied embeddings and learned positions as in GPT-2",
             _gpt2(96, 12288, 96, 50257, 2048, model_type="gpt3")),
    ModelRow("huggyllama/llama-7b", _hf("huggyllama/llama-7b"),
             _cfg("llama", 32, 4096, 11008, 32, 32, 32000, 2048, False)),
    ModelRow("huggyllama/llama-13b", _hf("huggyllama/llama-13b"),
             _cfg("llama", 40, 5120, 13824, 40, 40, 32000, 2048, False)),
    ModelRow("huggyllama/llama-30b", _hf("huggyllama/llama-30b"),
             _cfg("llama", 60, 6656, 17920, 52, 52, 32000, 2048, False)),
    ModelRow("huggyllama/llama-65b", _hf("huggyllama/llama-65b"),
             _cfg("llama", 80, 8192, 22016, 64, 64, 32000, 2048, False)),
    ModelRow("meta-llama/Llama-2-7b-hf", _hf("meta-llama/Llama-2-7b-hf"),
             _cfg("llama", 32, 4096, 11008, 32, 32, 32000, 4096, False)),
    ModelRow("meta-llama/Llama-2-13b-hf", _hf("meta-llama/Llama-2-13b-hf"),
             _cfg("llama", 40, 5120, 13824, 40, 40, 32000, 4096, False)),
    ModelRow("meta-llama/Llama-2-70b-hf", _hf("meta-llama/Llama-2-70b-hf"),
             _cfg("llama", 80, 8192, 28672, 64, 8, 32000, 4096, False)),
    ModelRow("meta-llama/Llama-3.1-8B", _hf("meta-llama/Llama-3.1-8B"),
             _cfg("llama", 32, 4096, 14336, 32, 8, 128256, 131072, False)),
    ModelRow("meta-llama/Llama-3.1-70B", _hf("meta-llama/Llama-3.1-70B"),
             _cfg("llama", 80, 8192, 28672, 64, 8, 128256, 131072, False)),
    ModelRow("meta-llama/Llama-3.1-405B", _hf("meta-llama/Llama-3.1-405B"),
             _cfg("llama", 126, 16384, 53248, 128, 8, 128256, 131072, False)),
    ModelRow("meta-llama/Llama-3.2-1B", _hf("meta-llama/Llama-3.2-1B"),
             _cfg("llama", 16, 2048, 8192, 32, 8, 128256, 131072, True, head_dim=64)),
    ModelRow("meta-llama/Llama-3.2-3B", _hf("meta-llama/Llama-3.2-3B"),
             _cfg("llama", 28, 3072, 8192, 24, 8, 128256, 131072, True, head_dim=128)),
    ModelRow("mistralai/Mistral-7B-v0.1", _hf("mistralai/Mistral-7B-v0.1"),
             _cfg("mistral", 32, 4096, 14336, 32, 8, 32000, 32768, False)),
    ModelRow("Qwen/Qwen2.5-0.5B", _hf("Qwen/Qwen2.5-0.5B"),
             _cfg("qwen2", 24, 896, 4864, 14, 2, 151936, 32768, True)),
    ModelRow("Qwen/Qwen2.5-1.5B", _hf("Qwen/Qwen2.5-1.5B"),
             _cfg("qwen2", 28, 1536, 8960, 12, 2, 151936, 131072, True)),
    ModelRow("Qwen/Qwen2.5-3B", _hf("Qwen/Qwen2.5-3B"),
             _cfg("qwen2", 36, 2048, 11008, 16, 2, 151936, 32768, True)),
    ModelRow("Qwen/Qwen2.5-7B", _hf("Qwen/Qwen2.5-7B"),
             _cfg("qwen2", 28, 3584, 18944, 28, 4, 152064, 131072, False)),
    ModelRow("Qwen/Qwen2.5-14B", _hf("Qwen/Qwen2.5-14B"),
             _cfg("qwen2", 48, 5120, 13824, 40, 8, 152064, 131072, False)),
    ModelRow("Qwen/Qwen2.5-32B", _hf("Qwen/Qwen2.5-32B"),
             _cfg("qwen2", 64, 5120, 27648, 40, 8, 152064, 131072, False)),
    ModelRow("Qwen/Qwen2.5-72B", _hf("Qwen/Qwen2.5-72B"),
             _cfg("qwen2", 80, 8192, 29568, 64, 8, 152064, 131072, False)),
    ModelRow("google/gemma-2-2b", _hf("google/gemma-2-2b"),
             _cfg("gemma2", 26, 2304, 9216, 8, 4, 256000, 8192, True, head_dim=256)),
    ModelRow("google/gemma-2-9b", _hf("google/gemma-2-9b"),
             _cfg("gemma2", 42, 3584, 14336, 16, 8, 256000, 8192, True, head_dim=256)),
    ModelRow("google/gemma-2-27b", _hf("google/gemma-2-27b"),
             _cfg("gemma2", 46, 4608, 36864, 32, 16, 256000, 8192, True, head_dim=128)),
    ModelRow("microsoft/Phi-3-mini-4k-instruct", _hf("microsoft/Phi-3-mini-4k-instruct"),
             _cfg("phi3", 32, 3072, 8192, 32, 32, 32064, 4096, False)),
    ModelRow("HuggingFaceTB/SmolLM2-135M", _hf("HuggingFaceTB/SmolLM2-135M"),
             _cfg("llama", 30, 576, 1536, 9, 3, 49152, 8192, True)),
    ModelRow("HuggingFaceTB/SmolLM2-135M-Instruct", _hf("HuggingFaceTB/SmolLM2-135M-Instruct"),
             _cfg("llama", 30, 576, 1536, 9, 3, 49152, 8192, True)),
    ModelRow("HuggingFaceTB/SmolLM2-360M", _hf("HuggingFaceTB/SmolLM2-360M"),
             _cfg("llama", 32, 960, 2560, 15, 5, 49152, 8192, True)),
    ModelRow("HuggingFaceTB/SmolLM2-1.7B", _hf("HuggingFaceTB/SmolLM2-1.7B"),
             _cfg("llama", 24, 2048, 8192, 32, 32, 49152, 8192, True)),
    # Current families (issue 13). Values from each repository's config.json; the Gemma 3 4B+ rows
    # are the text decoder of a vision-language checkpoint (text_config), without the ~0.4B SigLIP
    # vision tower, which text-only fine-tuning leaves frozen.
    ModelRow("Qwen/Qwen3-0.6B", _hf("Qwen/Qwen3-0.6B"),
             _cfg("qwen3", 28, 1024, 3072, 16, 8, 151936, 40960, True, head_dim=128)),
    ModelRow("Qwen/Qwen3-1.7B", _hf("Qwen/Qwen3-1.7B"),
             _cfg("qwen3", 28, 2048, 6144, 16, 8, 151936, 40960, True, head_dim=128)),
    ModelRow("Qwen/Qwen3-4B", _hf("Qwen/Qwen3-4B"),
             _cfg("qwen3", 36, 2560, 9728, 32, 8, 151936, 40960, True, head_dim=128)),
    ModelRow("Qwen/Qwen3-8B", _hf("Qwen/Qwen3-8B"),
             _cfg("qwen3", 36, 4096, 12288, 32, 8, 151936, 40960, False, head_dim=128)),
    ModelRow("Qwen/Qwen3-14B", _hf("Qwen/Qwen3-14B"),
             _cfg("qwen3", 40, 5120, 17408, 40, 8, 151936, 40960, False, head_dim=128)),
    ModelRow("Qwen/Qwen3-32B", _hf("Qwen/Qwen3-32B"),
             _cfg("qwen3", 64, 5120, 25600, 64, 8, 151936, 40960, False, head_dim=128)),
    ModelRow("meta-llama/Llama-3.3-70B-Instruct", _hf("meta-llama/Llama-3.3-70B-Instruct"),
             _cfg("llama", 80, 8192, 28672, 64, 8, 128256, 131072, False)),
    ModelRow("google/gemma-3-1b-pt", _hf("google/gemma-3-1b-pt"),
             _cfg("gemma3", 26, 1152, 6912, 4, 1, 262144, 32768, True, head_dim=256)),
    ModelRow("google/gemma-3-4b-pt", f"{_hf('google/gemma-3-4b-pt')} text_config (text decoder only)",
             _cfg("gemma3", 34, 2560, 10240, 8, 4, 262208, 131072, True, head_dim=256)),
    ModelRow("google/gemma-3-12b-pt", f"{_hf('google/gemma-3-12b-pt')} text_config (text decoder only)",
             _cfg("gemma3", 48, 3840, 15360, 16, 8, 262208, 131072, True, head_dim=256)),
    ModelRow("google/gemma-3-27b-pt", f"{_hf('google/gemma-3-27b-pt')} text_config (text decoder only)",
             _cfg("gemma3", 62, 5376, 21504, 32, 16, 262208, 131072, True, head_dim=128)),
    ModelRow("microsoft/phi-4", _hf("microsoft/phi-4"),
             _cfg("phi3", 40, 5120, 17920, 40, 10, 100352, 16384, False)),
    ModelRow("mistralai/Mistral-Small-24B-Base-2501", _hf("mistralai/Mistral-Small-24B-Base-2501"),
             _cfg("mistral", 40, 5120, 32768, 32, 8, 131072, 32768, False, head_dim=128)),
    # Mixture of experts: all experts resident, top-k active (`tuneplan models` shows both counts).
    ModelRow("mistralai/Mixtral-8x7B-v0.1", _hf("mistralai/Mixtral-8x7B-v0.1"),
             {**_cfg("mixtral", 32, 4096, 14336, 32, 8, 32000, 32768, False),
              "num_local_experts": 8, "num_experts_per_tok": 2}),
    ModelRow("Qwen/Qwen3-30B-A3B", _hf("Qwen/Qwen3-30B-A3B"),
             {**_cfg("qwen3_moe", 48, 2048, 6144, 32, 4, 151936, 40960, False, head_dim=128),
              "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768}),
    ModelRow("Qwen/Qwen1.5-MoE-A2.7B", f"{_hf('Qwen/Qwen1.5-MoE-A2.7B')} (shared + routed experts, "
             "DeepSeekMoE-style)",
             {**_cfg("qwen2_moe", 24, 2048, 5632, 16, 16, 151936, 8192, False),
              "num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
              "shared_expert_intermediate_size": 5632}),
    ModelRow("openai-community/gpt2", _hf("openai-community/gpt2"), _gpt2(12, 768, 12, 50257, 1024)),
    ModelRow("openai-community/gpt2-xl", _hf("openai-community/gpt2-xl"),
             _gpt2(48, 1600, 25, 50257, 1024)),
)


def _model_index() -> dict[str, ModelRow]:
    """Lower-cased full ids and short names -> row."""
    index: dict[str, ModelRow] = {}
    for row in _MODEL_ROWS:
        index[row.name.lower()] = row
        index[row.short.lower()] = row
    return index


_MODELS_BY_KEY = _model_index()


def list_models() -> list[ModelSpec]:
    """Every catalog model as a validated ModelSpec, in catalog order (for `tuneplan models`)."""
    return [_row_spec(row) for row in _MODEL_ROWS]


def _row_spec(row: ModelRow) -> ModelSpec:
    """Build the ModelSpec of one catalog row."""
    return model_from_config_dict(row.config, row.name, origin="catalog", source=row.source)


def get_model(name: str) -> ModelSpec:
    """The catalog model by full id or short name, case-insensitive; InputError on --model if unknown."""
    key = name.strip().lower()
    row = _MODELS_BY_KEY.get(key)
    if row is not None:
        return _row_spec(row)
    close = difflib.get_close_matches(key, list(_MODELS_BY_KEY), n=10, cutoff=0.5)
    suggestions = list(dict.fromkeys(_MODELS_BY_KEY[k].name for k in close))[:5]
    fix = "run `tuneplan models` for the catalog, pass a local model directory, or use --params N"
    if suggestions:
        fix = f"did you mean {', '.join(suggestions)}? Otherwise {fix}"
    raise InputError.one("--model", f"unknown model {name!r}", fix)


# --------------------------------------------------------------------------- config.json models

# config.json model_type -> build_spec family.
MODEL_TYPES = {
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
    "gemma3": "gemma3", "gemma3_text": "gemma3", "phi3": "phi3", "gpt2": "gpt2", "gpt3": "gpt3",
    "mixtral": "mixtral", "qwen3_moe": "qwen3_moe", "qwen2_moe": "qwen2_moe",
}
_GPT2_TYPES = {"gpt2", "gpt3"}
# transformers' config-class default for tie_word_embeddings when config.json omits it.
_TIED_BY_DEFAULT = {"gemma2", "gemma3", "gemma3_text", "gpt2", "gpt3"}
_LLAMA_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
               "vocab_size")
_GPT2_KEYS = ("n_layer", "n_embd", "n_head", "vocab_size")


def model_from_config_dict(cfg: dict, name: str, origin: str = "config", source: str = "") -> ModelSpec:
    """Build a ModelSpec from config.json values (Hugging Face key names).

    Known model_type values map to families (MODEL_TYPES); an unknown type whose config has
    the Llama keys is read as Llama-shaped, and the source says so. Missing or bad values raise
    InputError on --model naming `name`.
    """
    note = ""
    if isinstance(cfg.get("text_config"), dict) and "num_hidden_layers" not in cfg:
        # A vision-language checkpoint (Gemma 3 4B+, Llava, ...): the text decoder is what a
        # text-only fine-tune trains; its numbers are under text_config.
        text = cfg["text_config"]
        cfg = {**text, "model_type": text.get("model_type") or cfg.get("model_type", ""),
               **({"tie_word_embeddings": cfg["tie_word_embeddings"]}
                  if "tie_word_embeddings" in cfg and "tie_word_embeddings" not in text else {})}
        note = "text decoder only (text_config); the vision tower is not counted"
    model_type = str(cfg.get("model_type", ""))
    family = MODEL_TYPES.get(model_type)
    if family is None:
        if not all(k in cfg for k in _LLAMA_KEYS):
            raise InputError.one(
                "--model", f"{name}: model_type {model_type!r} is not supported",
                f"use a model of type {', '.join(sorted(MODEL_TYPES))}, or --params N for a guess",
            )
        family = "llama"
        note = f"{note}; " * bool(note) + f"model_type {model_type!r} read as Llama-shaped (q/k/v/o + gate/up/down)"
    moe = _moe_shape(cfg, family)
    if moe:
        cfg = {**cfg, "intermediate_size": moe.pop("expert_intermediate_size")}
    required = _GPT2_KEYS if family in _GPT2_TYPES else _LLAMA_KEYS
    missing = [k for k in required if not isinstance(cfg.get(k), int) or cfg[k] <= 0]
    if missing:
        raise InputError.one(
            "--model", f"{name}: config lacks positive integer {', '.join(missing)}",
            "use the model's original config.json from its Hugging Face repository",
        )
    tie = bool(cfg.get("tie_word_embeddings", family in _TIED_BY_DEFAULT))
    if family in _GPT2_TYPES:
        h = cfg["n_embd"]
        shape = dict(num_layers=cfg["n_layer"], hidden_size=h,
                     intermediate_size=cfg.get("n_inner") or 4 * h,
                     num_attention_heads=cfg["n_head"],
                     max_position_embeddings=cfg.get("n_positions") or cfg.get("n_ctx") or 1024)
    else:
        shape = dict(num_layers=cfg["num_hidden_layers"], hidden_size=cfg["hidden_size"],
                     intermediate_size=cfg["intermediate_size"],
                     num_attention_heads=cfg["num_attention_heads"],
                     num_key_value_heads=cfg.get("num_key_value_heads"),
                     head_dim=cfg.get("head_dim"),
                     max_position_embeddings=cfg.get("max_position_embeddings") or 2048,
                     attention_bias=None if family == "qwen2" else cfg.get("attention_bias"))
    try:
        return build_spec(name=name, family=family, vocab_size=cfg["vocab_size"],
                          tie_word_embeddings=tie, origin=origin,
                          source="; ".join(s for s in (source, note) if s), **shape, **moe)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise InputError.one("--model", f"{name}: inconsistent config: {exc}",
                             "check the head counts and sizes in config.json") from exc


def _moe_shape(cfg: dict, family: str) -> dict:
    """Expert counts and widths of a mixture-of-experts config.json ({} for a dense model).

    Mixtral: num_local_experts, num_experts_per_tok, intermediate_size (per expert). Qwen2-/Qwen3-MoE:
    num_experts, num_experts_per_tok, moe_intermediate_size, and Qwen2-MoE's
    shared_expert_intermediate_size. Layers that stay dense (decoder_sparse_step > 1, mlp_only_layers)
    are refused rather than priced wrong.
    """
    if family not in ("mixtral", "qwen3_moe", "qwen2_moe"):
        return {}
    fix = "use the model's original config.json"
    # save_pretrained omits values equal to the config class's defaults; these are transformers'
    # MixtralConfig / Qwen3MoeConfig / Qwen2MoeConfig defaults.
    d = _MOE_DEFAULTS[family]
    # Hub configs say num_experts (Qwen) or num_local_experts (Mixtral); transformers 5 writes
    # num_local_experts for Qwen3-MoE too.
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or d[0]
    k = cfg.get("num_experts_per_tok", d[1])
    width = cfg.get("intermediate_size" if family == "mixtral" else "moe_intermediate_size", d[2])
    if not all(isinstance(v, int) and v > 0 for v in (experts, width, k)):
        raise InputError.one("--model", "mixture-of-experts config lacks expert count, experts per "
                             "token or expert width", fix)
    if cfg.get("mlp_only_layers") or (cfg.get("decoder_sparse_step") or 1) != 1:
        raise InputError.one("--model", "mixture-of-experts models with dense layers in between "
                             "(mlp_only_layers / decoder_sparse_step) are not priced yet",
                             "use --params N for a rough dense guess")
    shared = cfg.get("shared_expert_intermediate_size", d[3]) if family == "qwen2_moe" else 0
    return {"num_experts": experts, "experts_per_token": k, "expert_intermediate_size": width,
            "shared_intermediate_size": int(shared or 0)}


# (experts, experts per token, expert width, shared width) defaults of transformers' config classes.
_MOE_DEFAULTS = {"mixtral": (8, 2, 14336, 0), "qwen3_moe": (128, 8, 768, 0), "qwen2_moe": (60, 4, 1408, 5632)}


def portable_path(path: Union[str, Path]) -> str:
    """A path as a committed plan should store it: relative to the working directory when it lies
    under it, "~/..." under the home directory, else as given. Never made absolute."""
    text = str(path)
    p = Path(os.path.expanduser(text))
    if not p.is_absolute():
        return os.path.normpath(text)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = p.resolve().relative_to(base.resolve())
        except (ValueError, OSError):
            continue
        return prefix + (rel.as_posix() if str(rel) != "." else ".") if prefix else (rel.as_posix() or ".")
    return text


def model_from_dir(path: Union[str, Path]) -> ModelSpec:
    """Read a local model directory's config.json (origin "config").

    The model's name is the directory as `portable_path` writes it (relative to the working
    directory or "~/..."), so a committed plan does not carry this machine's absolute path.

    When torch and transformers are importable, the model is also built on the meta device
    and its exact parameter counts by module type replace the formula's if they differ.
    """
    given = str(path)
    p = Path(os.path.expanduser(given))
    config_path = p if p.is_file() else p / "config.json"
    fix = "pass a model directory that holds config.json, or a catalog name (`tuneplan models`)"
    if not p.exists():
        raise InputError.one("--model", f"{p}: no such file or directory", fix)
    if not config_path.is_file():
        raise InputError.one("--model", f"{p}: no config.json in this directory", fix)
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError.one("--model", f"{config_path}: cannot read it as JSON ({exc})",
                             "restore the model's original config.json") from exc
    if not isinstance(cfg, dict):
        raise InputError.one("--model", f"{config_path}: expected a JSON object",
                             "restore the model's original config.json")
    name = portable_path(given)
    spec = model_from_config_dict(cfg, name, origin="config",
                                  source=f"{portable_path(config_path)}")
    counts = _meta_device_counts(config_path.parent)
    if counts is None:
        return spec
    if counts == spec.params:
        return spec.model_copy(update={"source": f"{spec.source}; counts match transformers"})
    return spec.model_copy(update={
        "params": counts,
        "source": f"{spec.source}; parameter counts from transformers (meta device) replace the "
                  f"formula's {spec.params.total:,}",
    })


def _meta_device_counts(model_dir: Path) -> Optional[ParamCounts]:
    """Exact counts by module type from transformers on the meta device; None if unavailable."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
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


# --------------------------------------------------------------------------- --params guesses

# (total params, hidden size) of real Llama-shaped models: SmolLM2-135M/360M, Llama-3.2-1B/3B,
# Llama-2-7B/13B, LLaMA-30B, Llama-3.1-70B/405B. The guess interpolates hidden size in log-log.
_HIDDEN_ANCHORS = (
    (134.5e6, 576), (361.8e6, 960), (1.236e9, 2048), (3.213e9, 3072), (6.738e9, 4096),
    (13.02e9, 5120), (32.53e9, 6656), (70.55e9, 8192), (405.9e9, 16384),
)
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
_PARAMS_RANGE = (1e7, 2e12)


def parse_params(params: Union[float, int, str]) -> float:
    """A parameter count from 7e9, "7B", "7b", "1.5B", "350M" or "7e9"; InputError on --params."""
    fix = "write a count such as 7B, 1.5B, 350M or 7e9"
    if isinstance(params, bool):
        raise InputError.one("--params", f"{params!r} is not a parameter count", fix)
    if isinstance(params, (int, float)):
        value = float(params)
    else:
        m = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*([KMBT]?)", params.strip().upper())
        if m is None:
            raise InputError.one("--params", f"{params!r} is not a parameter count", fix)
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    low, high = _PARAMS_RANGE
    if not (low <= value <= high):
        raise InputError.one("--params", f"{params!r} is outside the supported range",
                             "use a count between 10M and 2T")
    return value


def _format_count(n: float) -> str:
    """7e9 -> "7B", 1.5e9 -> "1.5B", 3.5e8 -> "350M" (3 significant digits)."""
    if n >= 1e12:
        return f"{n / 1e12:.3g}T"
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    return f"{n / 1e6:.3g}M"


def _guess_hidden(n: float) -> float:
    """Hidden size for n params by log-log interpolation of the anchors (extrapolated at the ends)."""
    anchors = _HIDDEN_ANCHORS
    i = 1
    while i < len(anchors) - 1 and n > anchors[i][0]:
        i += 1
    (p0, h0), (p1, h1) = anchors[i - 1], anchors[i]
    slope = math.log(h1 / h0) / math.log(p1 / p0)
    return h0 * (n / p0) ** slope


def guess_model(params: Union[float, int, str]) -> ModelSpec:
    """A Llama-shaped architecture whose total lands near the requested count (origin "guess").

    Choices: hidden size interpolated from real Llama-family models; head_dim 64 below a
    3072-wide model, else 128; from 8B up Llama 3's block (8 KV heads, MLP width 3.5*h), below
    it multi-head attention and Llama 2's 8/3*h, both rounded up to 256; from 1B up the Llama 3
    vocabulary (128256) and 128k context, below it 32000 and 8k; embeddings tied below 4B
    (Llama 3.2, SmolLM2). The layer count then makes the total match.
    """
    n = parse_params(params)
    raw_h = _guess_hidden(n)
    head_dim = 64 if raw_h < 3072 else 128
    gqa = n >= 8e9
    step = head_dim * (8 if gqa else 1)
    h = max(step, round(raw_h / step) * step)
    heads = h // head_dim
    kv = 8 if gqa else heads
    ffn = math.ceil((3.5 if gqa else 8 / 3) * h / 256) * 256
    vocab, ctx = (128256, 131072) if n >= 1e9 else (32000, 8192)
    tie = n < 4e9
    per_layer = 2 * h * h + 2 * h * kv * head_dim + 3 * h * ffn + 2 * h
    fixed = vocab * h * (1 if tie else 2) + h
    layers = max(1, round((n - fixed) / per_layer))
    label = _format_count(n)
    return build_spec(
        name=f"guess-{label}", family="llama", num_layers=layers, hidden_size=h,
        intermediate_size=ffn, num_attention_heads=heads, num_key_value_heads=kv,
        vocab_size=vocab, head_dim=head_dim, tie_word_embeddings=tie,
        max_position_embeddings=ctx, origin="guess",
        source=f"guess from --params {label}: a Llama-shaped architecture, not a real model's "
               f"config; layer count chosen so the total is about {_format_count(n)}",
    )


# --------------------------------------------------------------------------- GPU catalog


@dataclass(frozen=True)
class GPURow:
    """One GPU model: display name, lookup aliases, memory of one card, bf16, vendor, source."""

    name: str
    aliases: tuple[str, ...]
    memory_mib: int
    bf16: bool
    vendor: str
    source: str

    @property
    def memory_bytes(self) -> int:
        """Memory of one card in bytes."""
        return self.memory_mib * MiB


_SMI = "nvidia-smi memory.total as seen in public nvidia-smi output"
_SMI_TYPICAL = "typical nvidia-smi memory.total (not re-checked)"


def _marketed(gb: int) -> str:
    """Source note for a card whose nvidia-smi total is unknown."""
    return f"marketed {gb} GB taken as {gb} GiB (no nvidia-smi total known)"


_GPU_ROWS: tuple[GPURow, ...] = (
    GPURow("NVIDIA T4", ("t4", "tesla t4"), 15360, False, "nvidia", f"{_SMI}; Turing, no bf16"),
    GPURow("NVIDIA V100 16GB", ("v100-16gb", "v100-sxm2-16gb", "v100-pcie-16gb"), 16160, False,
           "nvidia", f"{_SMI}; Volta, no bf16"),
    GPURow("NVIDIA V100 32GB", ("v100-32gb", "v100-sxm2-32gb", "v100-pcie-32gb", "v100s"), 32510,
           False, "nvidia", f"{_SMI}; Volta, no bf16"),
    GPURow("NVIDIA A10G", ("a10g",), 23028, True, "nvidia", f"{_SMI} (AWS g5)"),
    GPURow("NVIDIA A10", ("a10",), 23028, True, "nvidia", f"{_SMI_TYPICAL}; same board as A10G"),
    GPURow("NVIDIA L4", ("l4",), 23034, True, "nvidia", _SMI),
    GPURow("NVIDIA GeForce RTX 3060 12GB", ("rtx 3060", "3060", "rtx 3060 12gb"), 12288, True,
           "nvidia", _SMI_TYPICAL),
    GPURow("NVIDIA GeForce RTX 3090", ("rtx 3090", "3090"), 24576, True, "nvidia", _SMI_TYPICAL),
    GPURow("NVIDIA GeForce RTX 4060 Ti 16GB", ("rtx 4060 ti", "4060 ti", "rtx 4060 ti 16gb",
                                               "4060ti 16gb"), 16380, True, "nvidia", _SMI),
    GPURow("NVIDIA GeForce RTX 4070 Ti", ("rtx 4070 ti", "4070 ti"), 12282, True, "nvidia", _SMI),
    GPURow("NVIDIA GeForce RTX 4080", ("rtx 4080", "4080"), 16376, True, "nvidia", _SMI),
    GPURow("NVIDIA GeForce RTX 4090", ("rtx 4090", "4090"), 24564, True, "nvidia", _SMI_TYPICAL),
    GPURow("NVIDIA GeForce RTX 5090", ("rtx 5090", "5090"), 32607, True, "nvidia", _SMI),
    GPURow("NVIDIA RTX A4000", ("a4000", "rtx a4000"), 16376, True, "nvidia", _SMI_TYPICAL),
    GPURow("NVIDIA RTX A5000", ("a5000", "rtx a5000"), 24564, True, "nvidia", _SMI),
    GPURow("NVIDIA RTX A6000", ("a6000", "rtx a6000"), 49140, True, "nvidia",
           f"{_SMI} (ECC off; 46068 MiB with ECC on)"),
    GPURow("NVIDIA RTX 6000 Ada", ("rtx 6000 ada", "6000 ada", "rtx 6000 ada generation"), 49140,
           True, "nvidia", _SMI),
    GPURow("NVIDIA L40S", ("l40s",), 46068, True, "nvidia", _SMI),
    GPURow("NVIDIA A100 40GB", ("a100-40gb", "a100-sxm4-40gb", "a100-pcie-40gb", "a100 40gb pcie"),
           40960, True, "nvidia", _SMI),
    GPURow("NVIDIA A100 80GB", ("a100-80gb", "a100-sxm4-80gb", "a100-pcie-80gb", "a100 80gb pcie"),
           81920, True, "nvidia", _SMI),
    GPURow("NVIDIA H100 80GB", ("h100", "h100-80gb", "h100 sxm", "h100 pcie", "h100-sxm5-80gb",
                                "h100 80gb hbm3"), 81559, True, "nvidia",
           f"{_SMI}; PCIe and SXM have the same memory"),
    GPURow("NVIDIA H100 NVL", ("h100 nvl", "h100-nvl-94gb"), 95830, True, "nvidia", _SMI),
    GPURow("NVIDIA H200", ("h200", "h200-141gb", "h200 nvl"), 143771, True, "nvidia", _SMI),
    GPURow("NVIDIA B200", ("b200", "b200-180gb"), 183359, True, "nvidia", _SMI),
    GPURow("AMD Instinct MI250X (one GCD)", ("mi250x", "mi250"), 64 * 1024, True, "amd",
           f"{_marketed(64)}; an MI250X card is two 64 GB GCDs, each its own device: count GCDs"),
    GPURow("AMD Instinct MI300X", ("mi300x", "mi300"), 192 * 1024, True, "amd", _marketed(192)),
)

# Names that fit several rows: the lookup asks which one instead of guessing.
_AMBIGUOUS = {"a100": ("NVIDIA A100 40GB", "NVIDIA A100 80GB"),
              "v100": ("NVIDIA V100 16GB", "NVIDIA V100 32GB")}


def _norm_gpu(name: str) -> str:
    """Lower-case, drop vendor words and non-alphanumerics and a trailing "gb"."""
    text = re.sub(r"nvidia|geforce|tesla|amd|instinct", "", name.lower())
    text = re.sub(r"[^a-z0-9]", "", text)
    return text[:-2] if text.endswith("gb") else text


def _gpu_index() -> dict[str, GPURow]:
    """Normalised display names and aliases -> row."""
    index: dict[str, GPURow] = {}
    for row in _GPU_ROWS:
        for key in (row.name, *row.aliases):
            index[_norm_gpu(key)] = row
    return index


_GPUS_BY_KEY = _gpu_index()


def list_gpus() -> list[GPURow]:
    """The GPU catalog rows in catalog order (for `tuneplan gpus`)."""
    return list(_GPU_ROWS)


def get_gpu(name: str) -> GPURow:
    """The GPU row for a name ("a100-80gb", "A100 80GB", "rtx4090", "4090"); InputError on --gpu."""
    key = _norm_gpu(name)
    row = _GPUS_BY_KEY.get(key)
    if row is not None:
        return row
    if key in _AMBIGUOUS:
        choices = _AMBIGUOUS[key]
        raise InputError.one("--gpu", f"{name!r} names {len(choices)} cards",
                             f"say which: {', '.join(choices)}")
    close = difflib.get_close_matches(key, list(_GPUS_BY_KEY), n=10, cutoff=0.5)
    suggestions = list(dict.fromkeys(_GPUS_BY_KEY[k].name for k in close))[:5]
    fix = "run `tuneplan gpus` for the catalog, or give the memory with --gpu-memory GIB"
    if suggestions:
        fix = f"did you mean {', '.join(suggestions)}? Otherwise {fix}"
    raise InputError.one("--gpu", f"unknown GPU {name!r}", fix)


def _gpu(name: str, memory_bytes: int, count: int, nodes: int, bf16: bool, vendor: str) -> GPUHardware:
    """GPUHardware, with count/nodes problems reported on --gpus/--nodes."""
    try:
        return GPUHardware(name=name, memory_bytes=memory_bytes, count=count, nodes=nodes,
                           bf16=bf16, vendor=vendor)
    except ValidationError as exc:
        raise InputError(pydantic_problems(exc, flags={"count": "--gpus", "nodes": "--nodes",
                                                       "memory_bytes": "--gpu-memory"})) from exc


def gpu_hardware(name: str, count: int = 1, nodes: int = 1) -> GPUHardware:
    """GPUHardware for `count` catalog cards per node on `nodes` nodes."""
    row = get_gpu(name)
    return _gpu(row.name, row.memory_bytes, count, nodes, row.bf16, row.vendor)


def custom_gpu(memory_gib: float, count: int = 1, nodes: int = 1) -> GPUHardware:
    """GPUHardware for a card given only by its memory (--gpu-memory GIB); assumes bf16."""
    if not (memory_gib > 0 and math.isfinite(memory_gib)):
        raise InputError.one("--gpu-memory", f"{memory_gib!r} GiB is not a positive size",
                             "give one card's memory in GiB, e.g. --gpu-memory 24")
    return _gpu(f"custom {memory_gib:g} GiB", int(memory_gib * GiB), count, nodes, True, "nvidia")


# --------------------------------------------------------------------------- this machine

# Ampere-or-newer names, for cards that nvidia-smi reports but the catalog lacks.
_BF16_NAME = re.compile(
    r"\b(a100|a800|a10g?|a16|a2|a30|a40|l4|l20|l40s?|h100|h800|h200|h20|gh200|b100|b200|gb200)\b"
    r"|geforce rtx [345]0[5-9]0|rtx a\d000|ada generation|blackwell"
)


def _read(path: str) -> str:
    """A file's text, or "" if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _ram_bytes() -> Optional[int]:
    """MemTotal from /proc/meminfo (os.sysconf fallback), capped by a cgroup memory limit."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", _read("/proc/meminfo"), re.MULTILINE)
    total: Optional[int] = int(m.group(1)) * 1024 if m else None
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        limit = _read(limit_file).strip()
        if limit.isdigit() and (total is None or int(limit) < total):
            total = int(limit)
    return total if total and total > 0 else None


def cpu_hardware(name: Optional[str] = None, memory_gib: Optional[float] = None,
                 cores: Optional[int] = None) -> CPUHardware:
    """This machine as CPUHardware, with any of name / RAM (GiB) / cores pinned instead.

    RAM is MemTotal (not MemAvailable, which swings with whatever else runs: the plan states
    what training may use, and the fit check keeps its own margin), lowered to the cgroup
    limit inside a container. Cores are the ones this process may run on. Pinned values
    (--cpu-name, --cpu-memory, --cpu-cores) replace detection so a committed plan means the
    same on every machine; with all three pinned nothing is read from this host.
    """
    problems = []
    if memory_gib is not None and not (memory_gib > 0 and math.isfinite(memory_gib)):
        problems.append(Problem("--cpu-memory", f"{memory_gib!r} GiB is not a positive size",
                                "give the RAM training may use in GiB, e.g. --cpu-memory 64"))
    if cores is not None and cores < 1:
        problems.append(Problem("--cpu-cores", f"must be at least 1, got {cores}", "e.g. --cpu-cores 8"))
    if name is not None and not name.strip():
        problems.append(Problem("--cpu-name", "is empty", "give a CPU name, e.g. --cpu-name 'Xeon 8480'"))
    if problems:
        raise InputError(problems)
    if memory_gib is not None:
        ram: Optional[int] = int(memory_gib * GiB)
    else:
        ram = _ram_bytes()
    if ram is None:
        raise InputError.one("hardware", "cannot read this machine's RAM size",
                             "give it with --cpu-memory GIB, or name the hardware with --gpu")
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if name is None:
        m = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.MULTILINE)
        name = m.group(1).strip() if m else "cpu"
    return CPUHardware(name=name.strip(), memory_bytes=ram, cores=max(1, cores))


def _nvidia_gpus() -> Optional[GPUHardware]:
    """The GPUs nvidia-smi lists (None when it is absent or fails).

    Mixed cards: the first card's name with the smallest memory, counted all together. bf16
    comes from the catalog row when the name matches, else from an Ampere-or-newer name.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=2, check=True,
        ).stdout
        cards = [line.rsplit(",", 1) for line in out.splitlines() if line.strip()]
        name = cards[0][0].strip()
        row = _GPUS_BY_KEY.get(_norm_gpu(name))
        return GPUHardware(
            name=name,
            memory_bytes=min(int(float(mib)) for _, mib in cards) * MiB,
            count=min(len(cards), 4096),
            bf16=row.bf16 if row else bool(_BF16_NAME.search(name.lower())),
            vendor="nvidia",
        )
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):  # ValidationError too
        return None


def detect_hardware() -> Union[GPUHardware, CPUHardware]:
    """The GPUs nvidia-smi reports, else this machine's CPU and RAM.

    GPU probing never raises; only a host whose RAM size cannot be read raises InputError.
    """
    return _nvidia_gpus() or cpu_hardware()
