"""Shared helpers for the executor tests: a tiny Llama with a real in-process tokenizer, plans."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from tuneplan.advisor.estimator import estimate as memory_estimate
from tuneplan.advisor.modelspec import build_spec
from tuneplan.schemas import (
    CPUHardware,
    DataSpec,
    Inputs,
    LoraSettings,
    MemorySettings,
    Plan,
    Quantization,
    Task,
    Training,
)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "convert the date to iso format please",
    "January February March April May June July August September October November December",
    "0123456789 - : , . ? ! answer question user assistant system",
    "hello world this is a tiny tokenizer for tests of the executor",
]


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in-process (no downloads) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama_dir(root: Path) -> Path:
    """Save a 2-layer, h=64 Llama (tied embeddings) and the tiny tokenizer under root/tiny-llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(root) / "tiny-llama"
    if (out / "config.json").is_file():
        return out
    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (objects or raw strings) as JSONL."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def overfit_rows(n: int = 8) -> list[dict]:
    """A tiny, easily memorised prompt/completion set."""
    months = ["January", "February", "March", "April", "May", "June", "July", "August"]
    return [
        {"prompt": f"{m} 5, 2021 ->", "completion": f" 2021-{i + 1:02d}-05"} for i, m in enumerate(months[:n])
    ]


def make_plan(
    method: str,
    model: str,
    *,
    train_path: str | None = None,
    eval_path: str | None = None,
    training: dict | None = None,
    lora: dict | None = None,
    data: dict | None = None,
    quantization: dict | None = None,
) -> Plan:
    """A valid Plan for `method` on the model (name or directory), built directly with pydantic."""
    spec = build_spec(
        name=str(model),
        family="llama",
        num_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
        tie_word_embeddings=True,
        origin="config",
    )
    t = dict(
        learning_rate=1e-2 if method != "full" else 3e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=4,
        per_device_batch_size=4,
        precision="fp32",
        seq_len=64,
        seed=0,
    )
    t.update(training or {})
    lora_settings = None
    if method != "full":
        lora_settings = LoraSettings(
            **{"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["all-linear"], **(lora or {})}
        )
    quant = (
        Quantization(**{"compute_dtype": "float32", **(quantization or {})}) if method == "qlora" else None
    )
    tr = Training(**t)
    # The memory block is the estimator's own figure for these settings, as `tuneplan advise`
    # writes it: the pre-flight re-estimates it and refuses a contradictory one.
    settings = dict(
        method=method,
        precision=tr.precision,
        optimizer=tr.optimizer,
        gradient_checkpointing=tr.gradient_checkpointing,
        attention=tr.attention,
        micro_batch=tr.per_device_batch_size,
        seq_len=tr.seq_len,
        lora_rank=lora_settings.rank if lora_settings else None,
        target_modules=list(lora_settings.target_modules) if lora_settings else None,
    )
    try:
        estimate = memory_estimate(
            spec, MemorySettings(**settings), capacity_bytes=8 << 30, device="cpu", headroom_fraction=0.1
        )
    except ValueError:  # a plan with unknown targets on purpose (tests of the loader's own check)
        estimate = memory_estimate(
            spec,
            MemorySettings(**{**settings, "target_modules": None}),
            capacity_bytes=8 << 30,
            device="cpu",
            headroom_fraction=0.1,
        )
    return Plan(
        tuneplan_version="test",
        method=method,
        feasible=True,
        training=tr,
        lora=lora_settings,
        quantization=quant,
        memory=estimate,
        alternatives=[],
        decisions=[],
        inputs=Inputs(
            hardware=CPUHardware(memory_bytes=8 << 30),
            model=spec,
            task=Task(domain_distance="near", forgetting_tolerance="medium"),
        ),
        data=DataSpec(train_path=train_path, eval_path=eval_path, **(data or {})),
    )


@contextlib.contextmanager
def one_torch_thread():
    """Torch on one intra-op thread while a tiny model runs in this process: its matrices are far
    too small to gain from threads, and on a shared CPU the threads spin against other processes
    (a 4x64x64 linear measured 6.4 ms with 2 threads vs 0.31 ms with 1 under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
