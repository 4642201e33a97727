"""--params guesses: a Llama-shaped architecture for a bare parameter count (origin "guess")."""

from __future__ import annotations

import math
import re
from typing import Union


from tuneplan.schemas import ModelSpec

from tuneplan.base.errors import InputError
from ..modelspec import build_spec


# (total params, hidden size) of real Llama-shaped models: SmolLM2-135M/360M, Llama-3.2-1B/3B,
# Llama-2-7B/13B, LLaMA-30B, Llama-3.1-70B/405B. The guess interpolates hidden size in log-log.
_HIDDEN_ANCHORS = (
    (134.5e6, 576),
    (361.8e6, 960),
    (1.236e9, 2048),
    (3.213e9, 3072),
    (6.738e9, 4096),
    (13.02e9, 5120),
    (32.53e9, 6656),
    (70.55e9, 8192),
    (405.9e9, 16384),
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
        raise InputError.one(
            "--params", f"{params!r} is outside the supported range", "use a count between 10M and 2T"
        )
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
    return float(h0 * (n / p0) ** slope)


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
        name=f"guess-{label}",
        family="llama",
        num_layers=layers,
        hidden_size=h,
        intermediate_size=ffn,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        head_dim=head_dim,
        tie_word_embeddings=tie,
        max_position_embeddings=ctx,
        origin="guess",
        source=f"guess from --params {label}: a Llama-shaped architecture, not a real model's "
        f"config; layer count chosen so the total is about {_format_count(n)}",
    )
