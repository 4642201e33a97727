"""The model catalog: public config.json values of known models, looked up by id or short name.

Rows hold the config.json values (Hugging Face key names) and go through
`model_from_config_dict` -> `build_spec`, the same path a local model directory takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


from tuneplan.schemas import ModelSpec

from tuneplan.base.errors import InputError
from .configs import model_from_config_dict


@dataclass(frozen=True)
class ModelRow:
    """One catalog model: its id, where the numbers come from, and its config.json values."""

    name: str
    source: str
    config: dict[str, Any] = field(hash=False)

    @property
    def short(self) -> str:
        """The part after the slash ("Llama-3.1-8B" for "meta-llama/Llama-3.1-8B")."""
        return self.name.rsplit("/", 1)[-1]


def _cfg(
    model_type: str,
    layers: int,
    hidden: int,
    ffn: int,
    heads: int,
    kv: int,
    vocab: int,
    ctx: int,
    tie: bool,
    head_dim: Optional[int] = None,
) -> dict[str, Any]:
    """A Llama-style config.json subset with Hugging Face key names."""
    cfg: dict[str, Any] = {
        "model_type": model_type,
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": ctx,
        "tie_word_embeddings": tie,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return cfg


def _gpt2(
    layers: int, hidden: int, heads: int, vocab: int, ctx: int, model_type: str = "gpt2"
) -> dict[str, Any]:
    """A GPT-2-style config.json subset (n_inner unset means 4 * n_embd)."""
    return {
        "model_type": model_type,
        "n_layer": layers,
        "n_embd": hidden,
        "n_head": heads,
        "vocab_size": vocab,
        "n_positions": ctx,
        "tie_word_embeddings": True,
    }


def _hf(repo: str) -> str:
    """Citation of a Hugging Face config.json."""
    return f"huggingface.co/{repo} config.json"


_MODEL_ROWS: tuple[ModelRow, ...] = (
    ModelRow(
        "gpt3-175b",
        "LoRA paper (Hu et al. 2021) §4.2 / GPT-3 paper (Brown et al. 2020) "
        "Table 2.1: 96 layers, d_model 12288, 96 heads, ffn 4*d, ctx 2048; GPT-2 BPE vocab "
        "50257; tied embeddings and learned positions as in GPT-2",
        _gpt2(96, 12288, 96, 50257, 2048, model_type="gpt3"),
    ),
    ModelRow(
        "huggyllama/llama-7b",
        _hf("huggyllama/llama-7b"),
        _cfg("llama", 32, 4096, 11008, 32, 32, 32000, 2048, False),
    ),
    ModelRow(
        "huggyllama/llama-13b",
        _hf("huggyllama/llama-13b"),
        _cfg("llama", 40, 5120, 13824, 40, 40, 32000, 2048, False),
    ),
    ModelRow(
        "huggyllama/llama-30b",
        _hf("huggyllama/llama-30b"),
        _cfg("llama", 60, 6656, 17920, 52, 52, 32000, 2048, False),
    ),
    ModelRow(
        "huggyllama/llama-65b",
        _hf("huggyllama/llama-65b"),
        _cfg("llama", 80, 8192, 22016, 64, 64, 32000, 2048, False),
    ),
    ModelRow(
        "meta-llama/Llama-2-7b-hf",
        _hf("meta-llama/Llama-2-7b-hf"),
        _cfg("llama", 32, 4096, 11008, 32, 32, 32000, 4096, False),
    ),
    ModelRow(
        "meta-llama/Llama-2-13b-hf",
        _hf("meta-llama/Llama-2-13b-hf"),
        _cfg("llama", 40, 5120, 13824, 40, 40, 32000, 4096, False),
    ),
    ModelRow(
        "meta-llama/Llama-2-70b-hf",
        _hf("meta-llama/Llama-2-70b-hf"),
        _cfg("llama", 80, 8192, 28672, 64, 8, 32000, 4096, False),
    ),
    ModelRow(
        "meta-llama/Llama-3.1-8B",
        _hf("meta-llama/Llama-3.1-8B"),
        _cfg("llama", 32, 4096, 14336, 32, 8, 128256, 131072, False),
    ),
    ModelRow(
        "meta-llama/Llama-3.1-70B",
        _hf("meta-llama/Llama-3.1-70B"),
        _cfg("llama", 80, 8192, 28672, 64, 8, 128256, 131072, False),
    ),
    ModelRow(
        "meta-llama/Llama-3.1-405B",
        _hf("meta-llama/Llama-3.1-405B"),
        _cfg("llama", 126, 16384, 53248, 128, 8, 128256, 131072, False),
    ),
    ModelRow(
        "meta-llama/Llama-3.2-1B",
        _hf("meta-llama/Llama-3.2-1B"),
        _cfg("llama", 16, 2048, 8192, 32, 8, 128256, 131072, True, head_dim=64),
    ),
    ModelRow(
        "meta-llama/Llama-3.2-3B",
        _hf("meta-llama/Llama-3.2-3B"),
        _cfg("llama", 28, 3072, 8192, 24, 8, 128256, 131072, True, head_dim=128),
    ),
    ModelRow(
        "mistralai/Mistral-7B-v0.1",
        _hf("mistralai/Mistral-7B-v0.1"),
        _cfg("mistral", 32, 4096, 14336, 32, 8, 32000, 32768, False),
    ),
    ModelRow(
        "Qwen/Qwen2.5-0.5B",
        _hf("Qwen/Qwen2.5-0.5B"),
        _cfg("qwen2", 24, 896, 4864, 14, 2, 151936, 32768, True),
    ),
    ModelRow(
        "Qwen/Qwen2.5-1.5B",
        _hf("Qwen/Qwen2.5-1.5B"),
        _cfg("qwen2", 28, 1536, 8960, 12, 2, 151936, 131072, True),
    ),
    ModelRow(
        "Qwen/Qwen2.5-3B", _hf("Qwen/Qwen2.5-3B"), _cfg("qwen2", 36, 2048, 11008, 16, 2, 151936, 32768, True)
    ),
    ModelRow(
        "Qwen/Qwen2.5-7B",
        _hf("Qwen/Qwen2.5-7B"),
        _cfg("qwen2", 28, 3584, 18944, 28, 4, 152064, 131072, False),
    ),
    ModelRow(
        "Qwen/Qwen2.5-14B",
        _hf("Qwen/Qwen2.5-14B"),
        _cfg("qwen2", 48, 5120, 13824, 40, 8, 152064, 131072, False),
    ),
    ModelRow(
        "Qwen/Qwen2.5-32B",
        _hf("Qwen/Qwen2.5-32B"),
        _cfg("qwen2", 64, 5120, 27648, 40, 8, 152064, 131072, False),
    ),
    ModelRow(
        "Qwen/Qwen2.5-72B",
        _hf("Qwen/Qwen2.5-72B"),
        _cfg("qwen2", 80, 8192, 29568, 64, 8, 152064, 131072, False),
    ),
    ModelRow(
        "google/gemma-2-2b",
        _hf("google/gemma-2-2b"),
        _cfg("gemma2", 26, 2304, 9216, 8, 4, 256000, 8192, True, head_dim=256),
    ),
    ModelRow(
        "google/gemma-2-9b",
        _hf("google/gemma-2-9b"),
        _cfg("gemma2", 42, 3584, 14336, 16, 8, 256000, 8192, True, head_dim=256),
    ),
    ModelRow(
        "google/gemma-2-27b",
        _hf("google/gemma-2-27b"),
        _cfg("gemma2", 46, 4608, 36864, 32, 16, 256000, 8192, True, head_dim=128),
    ),
    ModelRow(
        "microsoft/Phi-3-mini-4k-instruct",
        _hf("microsoft/Phi-3-mini-4k-instruct"),
        _cfg("phi3", 32, 3072, 8192, 32, 32, 32064, 4096, False),
    ),
    ModelRow(
        "HuggingFaceTB/SmolLM2-135M",
        _hf("HuggingFaceTB/SmolLM2-135M"),
        _cfg("llama", 30, 576, 1536, 9, 3, 49152, 8192, True),
    ),
    ModelRow(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        _hf("HuggingFaceTB/SmolLM2-135M-Instruct"),
        _cfg("llama", 30, 576, 1536, 9, 3, 49152, 8192, True),
    ),
    ModelRow(
        "HuggingFaceTB/SmolLM2-360M",
        _hf("HuggingFaceTB/SmolLM2-360M"),
        _cfg("llama", 32, 960, 2560, 15, 5, 49152, 8192, True),
    ),
    ModelRow(
        "HuggingFaceTB/SmolLM2-1.7B",
        _hf("HuggingFaceTB/SmolLM2-1.7B"),
        _cfg("llama", 24, 2048, 8192, 32, 32, 49152, 8192, True),
    ),
    # Current families (issue 13). Values from each repository's config.json; the Gemma 3 4B+ rows
    # are the text decoder of a vision-language checkpoint (text_config), without the ~0.4B SigLIP
    # vision tower, which text-only fine-tuning leaves frozen.
    ModelRow(
        "Qwen/Qwen3-0.6B",
        _hf("Qwen/Qwen3-0.6B"),
        _cfg("qwen3", 28, 1024, 3072, 16, 8, 151936, 40960, True, head_dim=128),
    ),
    ModelRow(
        "Qwen/Qwen3-1.7B",
        _hf("Qwen/Qwen3-1.7B"),
        _cfg("qwen3", 28, 2048, 6144, 16, 8, 151936, 40960, True, head_dim=128),
    ),
    ModelRow(
        "Qwen/Qwen3-4B",
        _hf("Qwen/Qwen3-4B"),
        _cfg("qwen3", 36, 2560, 9728, 32, 8, 151936, 40960, True, head_dim=128),
    ),
    ModelRow(
        "Qwen/Qwen3-8B",
        _hf("Qwen/Qwen3-8B"),
        _cfg("qwen3", 36, 4096, 12288, 32, 8, 151936, 40960, False, head_dim=128),
    ),
    ModelRow(
        "Qwen/Qwen3-14B",
        _hf("Qwen/Qwen3-14B"),
        _cfg("qwen3", 40, 5120, 17408, 40, 8, 151936, 40960, False, head_dim=128),
    ),
    ModelRow(
        "Qwen/Qwen3-32B",
        _hf("Qwen/Qwen3-32B"),
        _cfg("qwen3", 64, 5120, 25600, 64, 8, 151936, 40960, False, head_dim=128),
    ),
    ModelRow(
        "meta-llama/Llama-3.3-70B-Instruct",
        _hf("meta-llama/Llama-3.3-70B-Instruct"),
        _cfg("llama", 80, 8192, 28672, 64, 8, 128256, 131072, False),
    ),
    ModelRow(
        "google/gemma-3-1b-pt",
        _hf("google/gemma-3-1b-pt"),
        _cfg("gemma3", 26, 1152, 6912, 4, 1, 262144, 32768, True, head_dim=256),
    ),
    ModelRow(
        "google/gemma-3-4b-pt",
        f"{_hf('google/gemma-3-4b-pt')} text_config (text decoder only)",
        _cfg("gemma3", 34, 2560, 10240, 8, 4, 262208, 131072, True, head_dim=256),
    ),
    ModelRow(
        "google/gemma-3-12b-pt",
        f"{_hf('google/gemma-3-12b-pt')} text_config (text decoder only)",
        _cfg("gemma3", 48, 3840, 15360, 16, 8, 262208, 131072, True, head_dim=256),
    ),
    ModelRow(
        "google/gemma-3-27b-pt",
        f"{_hf('google/gemma-3-27b-pt')} text_config (text decoder only)",
        _cfg("gemma3", 62, 5376, 21504, 32, 16, 262208, 131072, True, head_dim=128),
    ),
    ModelRow(
        "microsoft/phi-4", _hf("microsoft/phi-4"), _cfg("phi3", 40, 5120, 17920, 40, 10, 100352, 16384, False)
    ),
    ModelRow(
        "mistralai/Mistral-Small-24B-Base-2501",
        _hf("mistralai/Mistral-Small-24B-Base-2501"),
        _cfg("mistral", 40, 5120, 32768, 32, 8, 131072, 32768, False, head_dim=128),
    ),
    # Mixture of experts: all experts resident, top-k active (`tuneplan models` shows both counts).
    ModelRow(
        "mistralai/Mixtral-8x7B-v0.1",
        _hf("mistralai/Mixtral-8x7B-v0.1"),
        {
            **_cfg("mixtral", 32, 4096, 14336, 32, 8, 32000, 32768, False),
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
        },
    ),
    ModelRow(
        "Qwen/Qwen3-30B-A3B",
        _hf("Qwen/Qwen3-30B-A3B"),
        {
            **_cfg("qwen3_moe", 48, 2048, 6144, 32, 4, 151936, 40960, False, head_dim=128),
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 768,
        },
    ),
    ModelRow(
        "Qwen/Qwen1.5-MoE-A2.7B",
        f"{_hf('Qwen/Qwen1.5-MoE-A2.7B')} (shared + routed experts, DeepSeekMoE-style)",
        {
            **_cfg("qwen2_moe", 24, 2048, 5632, 16, 16, 151936, 8192, False),
            "num_experts": 60,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632,
        },
    ),
    ModelRow("openai-community/gpt2", _hf("openai-community/gpt2"), _gpt2(12, 768, 12, 50257, 1024)),
    ModelRow("openai-community/gpt2-xl", _hf("openai-community/gpt2-xl"), _gpt2(48, 1600, 25, 50257, 1024)),
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
    import difflib  # only for a name not found: the suggestions

    close = difflib.get_close_matches(key, list(_MODELS_BY_KEY), n=10, cutoff=0.5)
    suggestions = list(dict.fromkeys(_MODELS_BY_KEY[k].name for k in close))[:5]
    fix = "run `tuneplan models` for the catalog, pass a local model directory, or use --params N"
    if suggestions:
        fix = f"did you mean {', '.join(suggestions)}? Otherwise {fix}"
    raise InputError.one("--model", f"unknown model {name!r}", fix)
