"""Build an exact ModelSpec (linear modules, parameter counts) from a handful of config numbers.

Pure: stdlib + pydantic only. The catalog, local config.json files and --params guesses all go
through `build_spec`, so there is one place where architectures become parameter counts.
"""

from __future__ import annotations

from typing import Optional

from tuneplan.schemas import LinearModule, ModelSpec, ParamCounts

# Families whose blocks are Llama-shaped: q/k/v/o + gate/up/down, RMSNorm, no position table.
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "smollm"}
# Families with an RMSNorm over each head's queries and keys (q_norm, k_norm of head_dim each).
QK_NORM = {"qwen3", "gemma3"}
# Families with four norms per block (input, post-attention, pre- and post-feedforward).
FOUR_NORMS = {"gemma2", "gemma3"}
GPT2_LIKE = {"gpt2", "gpt3"}
PHI3_LIKE = {"phi3"}
# Mixture-of-experts families (transformers >= 5 layout: fused experts.gate_up_proj / experts.down_proj,
# a router `gate` that stays frozen, Qwen2-MoE's shared_expert + shared_expert_gate).
MOE_LIKE = {"mixtral", "qwen3_moe", "qwen2_moe"}
KNOWN_FAMILIES = LLAMA_LIKE | GPT2_LIKE | PHI3_LIKE | MOE_LIKE
QK_NORM = QK_NORM | {"qwen3_moe"}


def build_spec(
    *,
    name: str,
    family: str,
    num_layers: int,
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_key_value_heads: Optional[int] = None,
    vocab_size: int,
    head_dim: Optional[int] = None,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 2048,
    attention_bias: Optional[bool] = None,
    origin: str = "catalog",
    source: str = "",
    num_experts: int = 1,
    experts_per_token: int = 1,
    shared_intermediate_size: int = 0,
) -> ModelSpec:
    """Return the ModelSpec of a decoder-only transformer with exact parameter counts."""
    if family not in KNOWN_FAMILIES:
        raise ValueError(f"unknown architecture family {family!r}; known: {sorted(KNOWN_FAMILIES)}")
    kv = num_key_value_heads or num_attention_heads
    hd = head_dim or hidden_size // num_attention_heads
    h, f, a = hidden_size, intermediate_size, num_attention_heads
    q_out, kv_out = a * hd, kv * hd

    router = 0
    if family in MOE_LIKE:
        # intermediate_size is ONE expert's width here (Mixtral's intermediate_size, Qwen's
        # moe_intermediate_size).
        bias = (family == "qwen2_moe") if attention_bias is None else attention_bias
        E, k = num_experts, experts_per_token
        modules = [
            LinearModule(name="q_proj", in_features=h, out_features=q_out, kind="attention", bias=bias),
            LinearModule(name="k_proj", in_features=h, out_features=kv_out, kind="attention", bias=bias),
            LinearModule(name="v_proj", in_features=h, out_features=kv_out, kind="attention", bias=bias),
            LinearModule(name="o_proj", in_features=q_out, out_features=h, kind="attention"),
            LinearModule(
                name="experts.gate_up_proj",
                in_features=h,
                out_features=2 * f,
                kind="mlp",
                experts=E,
                active_experts=k,
            ),
            LinearModule(
                name="experts.down_proj",
                in_features=f,
                out_features=h,
                kind="mlp",
                experts=E,
                active_experts=k,
            ),
        ]
        router = E * h  # mlp.gate: h -> E logits, frozen (never a LoRA target)
        if shared_intermediate_size:
            sf = shared_intermediate_size
            modules += [
                LinearModule(name="shared_expert.gate_proj", in_features=h, out_features=sf, kind="mlp"),
                LinearModule(name="shared_expert.up_proj", in_features=h, out_features=sf, kind="mlp"),
                LinearModule(name="shared_expert.down_proj", in_features=sf, out_features=h, kind="mlp"),
            ]
            router += h  # shared_expert_gate: h -> 1
        norm = num_layers * (2 * h + (2 * hd if family in QK_NORM else 0)) + h
        embedding = vocab_size * h
        gated = True
    elif family in LLAMA_LIKE:
        bias = (family == "qwen2") if attention_bias is None else attention_bias
        modules = [
            LinearModule(name="q_proj", in_features=h, out_features=q_out, kind="attention", bias=bias),
            LinearModule(name="k_proj", in_features=h, out_features=kv_out, kind="attention", bias=bias),
            LinearModule(name="v_proj", in_features=h, out_features=kv_out, kind="attention", bias=bias),
            LinearModule(name="o_proj", in_features=q_out, out_features=h, kind="attention"),
            LinearModule(name="gate_proj", in_features=h, out_features=f, kind="mlp"),
            LinearModule(name="up_proj", in_features=h, out_features=f, kind="mlp"),
            LinearModule(name="down_proj", in_features=f, out_features=h, kind="mlp"),
        ]
        norms_per_layer = (4 * h if family in FOUR_NORMS else 2 * h) + (2 * hd if family in QK_NORM else 0)
        norm = num_layers * norms_per_layer + h
        embedding = vocab_size * h
        gated = True
    elif family in PHI3_LIKE:
        modules = [
            LinearModule(name="qkv_proj", in_features=h, out_features=q_out + 2 * kv_out, kind="attention"),
            LinearModule(name="o_proj", in_features=q_out, out_features=h, kind="attention"),
            LinearModule(name="gate_up_proj", in_features=h, out_features=2 * f, kind="mlp"),
            LinearModule(name="down_proj", in_features=f, out_features=h, kind="mlp"),
        ]
        norm = num_layers * 2 * h + h
        embedding = vocab_size * h
        gated = True
    else:  # GPT-2 / GPT-3: fused c_attn, LayerNorm with bias, learned positions, biases everywhere
        modules = [
            LinearModule(name="c_attn", in_features=h, out_features=3 * h, kind="attention", bias=True),
            LinearModule(name="c_proj", in_features=h, out_features=h, kind="attention", bias=True),
            LinearModule(name="c_fc", in_features=h, out_features=f, kind="mlp", bias=True),
            LinearModule(name="c_proj", in_features=f, out_features=h, kind="mlp", bias=True),
        ]
        norm = num_layers * 4 * h + 2 * h
        embedding = vocab_size * h + max_position_embeddings * h
        gated = False

    def _count(kind: str) -> int:
        per_block = sum(
            m.weight_params + (m.out_features * m.experts if m.bias else 0) for m in modules if m.kind == kind
        )
        return (per_block + (router if kind == "mlp" else 0)) * num_layers

    params = ParamCounts(
        embedding=embedding,
        attention=_count("attention"),
        mlp=_count("mlp"),
        norm=norm,
        lm_head=0 if tie_word_embeddings else vocab_size * h,
    )
    return ModelSpec(
        name=name,
        family=family,
        origin=origin,  # type: ignore[arg-type]
        source=source,
        num_layers=num_layers,
        hidden_size=h,
        intermediate_size=f,
        num_attention_heads=a,
        num_key_value_heads=kv,
        head_dim=hd,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        gated_mlp=gated,
        linear_modules=modules,
        params=params,
    )


def resolve_targets(model: ModelSpec, targets: list[str]) -> list[str]:
    """Expand "all-linear" (and the aliases "all", "attention", "mlp") to module names.

    Unknown names raise ValueError listing the model's own names.
    """
    names = model.module_names
    out: list[str] = []
    for t in targets:
        key = t.strip()
        if key in ("all-linear", "all"):
            expanded = names
        elif key in ("attention", "attn"):
            expanded = [m.name for m in model.linear_modules if m.kind == "attention"]
        elif key == "mlp":
            expanded = [m.name for m in model.linear_modules if m.kind == "mlp"]
        elif key in names:
            expanded = [key]
        else:
            raise ValueError(
                f"target module {key!r} is not a linear layer of {model.name}; "
                f"use one of {', '.join(names)} or all-linear"
            )
        for n in expanded:
            if n not in out:
                out.append(n)
    return out
