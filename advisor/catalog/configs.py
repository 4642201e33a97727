"""Models from a config.json: a catalog row's, a local directory's or one fetched from the Hub.

Stdlib + pydantic only. `model_from_dir` also cross-checks the counts with transformers on the
meta device when it is installed; that one crossing lives in exact_counts.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union


from tuneplan.schemas import ModelSpec

from tuneplan.base.errors import InputError
from ..modelspec import build_spec
from .exact_counts import meta_device_counts


# config.json model_type -> build_spec family.
MODEL_TYPES = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "gpt3": "gpt3",
    "mixtral": "mixtral",
    "qwen3_moe": "qwen3_moe",
    "qwen2_moe": "qwen2_moe",
}
_GPT2_TYPES = {"gpt2", "gpt3"}
# transformers' config-class default for tie_word_embeddings when config.json omits it.
_TIED_BY_DEFAULT = {"gemma2", "gemma3", "gemma3_text", "gpt2", "gpt3"}
_LLAMA_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
_GPT2_KEYS = ("n_layer", "n_embd", "n_head", "vocab_size")
# config.json keys of shapes the Llama reading cannot count: routed experts (DeepSeek, Qwen,
# Mixtral, OLMoE, DBRX spellings) and multi-head latent attention (DeepSeek-V2/V3 kv_lora_rank).
_NOT_LLAMA_KEYS = (
    "n_routed_experts",
    "num_experts",
    "num_local_experts",
    "moe_intermediate_size",
    "n_shared_experts",
    "kv_lora_rank",
    "ffn_config",
)


def model_from_config_dict(
    cfg: dict[str, Any], name: str, origin: str = "config", source: str = ""
) -> ModelSpec:
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
        cfg = {
            **text,
            "model_type": text.get("model_type") or cfg.get("model_type", ""),
            **(
                {"tie_word_embeddings": cfg["tie_word_embeddings"]}
                if "tie_word_embeddings" in cfg and "tie_word_embeddings" not in text
                else {}
            ),
        }
        note = "text decoder only (text_config); the vision tower is not counted"
    model_type = str(cfg.get("model_type", ""))
    family = MODEL_TYPES.get(model_type)
    if family is None:
        if not all(k in cfg for k in _LLAMA_KEYS):
            raise InputError.one(
                "--model",
                f"{name}: model_type {model_type!r} is not supported",
                f"use a model of type {', '.join(sorted(MODEL_TYPES))}, or --params N for a guess",
            )
        shaped = sorted(k for k in _NOT_LLAMA_KEYS if cfg.get(k))
        if shaped:
            # Read as Llama these would be silently wrong: DeepSeek-V3's config reads as a 38.6B
            # dense model (it has 671B parameters in 256 routed experts and MLA attention).
            raise InputError.one(
                "--model",
                f"{name}: model_type {model_type!r} is a mixture-of-experts or non-Llama attention "
                f"model ({', '.join(shaped)} in config.json) that tuneplan does not count yet; read "
                "as Llama-shaped its parameters and memory would be wrong",
                f"use a supported model type ({', '.join(sorted(MODEL_TYPES))}), or --params N "
                "for a rough guess",
            )
        family = "llama"
        note = (
            f"{note}; " * bool(note)
            + f"model_type {model_type!r} read as Llama-shaped (q/k/v/o + gate/up/down)"
        )
    moe = _moe_shape(cfg, family)
    if moe:
        cfg = {**cfg, "intermediate_size": moe.pop("expert_intermediate_size")}
    required = _GPT2_KEYS if family in _GPT2_TYPES else _LLAMA_KEYS
    missing = [k for k in required if not isinstance(cfg.get(k), int) or cfg[k] <= 0]
    if missing:
        raise InputError.one(
            "--model",
            f"{name}: config lacks positive integer {', '.join(missing)}",
            "use the model's original config.json from its Hugging Face repository",
        )
    tie = bool(cfg.get("tie_word_embeddings", family in _TIED_BY_DEFAULT))
    if family in _GPT2_TYPES:
        h = cfg["n_embd"]
        shape = dict(
            num_layers=cfg["n_layer"],
            hidden_size=h,
            intermediate_size=cfg.get("n_inner") or 4 * h,
            num_attention_heads=cfg["n_head"],
            max_position_embeddings=cfg.get("n_positions") or cfg.get("n_ctx") or 1024,
        )
    else:
        shape = dict(
            num_layers=cfg["num_hidden_layers"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg.get("num_key_value_heads"),
            head_dim=cfg.get("head_dim"),
            max_position_embeddings=cfg.get("max_position_embeddings") or 2048,
            attention_bias=None if family == "qwen2" else cfg.get("attention_bias"),
        )
    try:
        return build_spec(
            name=name,
            family=family,
            vocab_size=cfg["vocab_size"],
            tie_word_embeddings=tie,
            origin=origin,
            source="; ".join(s for s in (source, note) if s),
            **shape,
            **moe,
        )
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise InputError.one(
            "--model", f"{name}: inconsistent config: {exc}", "check the head counts and sizes in config.json"
        ) from exc


def _moe_shape(cfg: dict[str, Any], family: str) -> dict[str, Any]:
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
        raise InputError.one(
            "--model", "mixture-of-experts config lacks expert count, experts per token or expert width", fix
        )
    if cfg.get("mlp_only_layers") or (cfg.get("decoder_sparse_step") or 1) != 1:
        raise InputError.one(
            "--model",
            "mixture-of-experts models with dense layers in between "
            "(mlp_only_layers / decoder_sparse_step) are not priced yet",
            "use --params N for a rough dense guess",
        )
    shared = cfg.get("shared_expert_intermediate_size", d[3]) if family == "qwen2_moe" else 0
    return {
        "num_experts": experts,
        "experts_per_token": k,
        "expert_intermediate_size": width,
        "shared_intermediate_size": int(shared or 0),
    }


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
        raise InputError.one(
            "--model",
            f"{config_path}: cannot read it as JSON ({exc})",
            "restore the model's original config.json",
        ) from exc
    if not isinstance(cfg, dict):
        raise InputError.one(
            "--model", f"{config_path}: expected a JSON object", "restore the model's original config.json"
        )
    name = portable_path(given)
    spec = model_from_config_dict(cfg, name, origin="config", source=f"{portable_path(config_path)}")
    counts = meta_device_counts(config_path.parent)
    if counts is None:
        return spec
    if counts == spec.params:
        return spec.model_copy(update={"source": f"{spec.source}; counts match transformers"})
    return spec.model_copy(
        update={
            "params": counts,
            "source": f"{spec.source}; parameter counts from transformers (meta device) replace the "
            f"formula's {spec.params.total:,}",
        }
    )
