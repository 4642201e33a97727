"""Measure the domain-distance signals of a dataset on a base model (imports torch).

fit          the base model's per-token loss on the training targets (assistant turns,
             completions, or every token of text rows: the executor's own row rendering and loss
             masks, executor/data.py) next to its loss on the general-text probe the executor
             ships; the share of target tokens above HIGH_LOSS_NATS.
update rank  the full-parameter gradient of the mean target loss, accumulated over a few
             micro-batches at the base weights, for every linear layer in a few transformer
             blocks spread over depth (attention and MLP). Each layer's gradient is collected
             from its own input and output gradient (dL/dW = sum_t g_t x_t^T over positions t), so
             no parameter needs requires_grad and a 4-bit base works the same way; its singular
             values (torch.linalg.svdvals) give the rank holding 90% of the gradient energy and
             the share a LoRA rank captures (spectrum.py).
Where: the CPU in fp32; a CUDA device in bf16 when the weights fit in 80% of its free memory,
else a 4-bit NF4 load (bitsandbytes, imported only then).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError

from ..data import IGNORE_INDEX, Row, collate, encode_rows, probe_examples, probe_text
from . import spectrum

HIGH_LOSS_NATS = 2.3
"""A target token is "high loss" when the base model gave it under ~10% probability (-ln 0.1 =
2.30 nats)."""
DEFAULT_TOKENS_PER_BATCH = 128
DEFAULT_MICRO_BATCHES = 4
DEFAULT_DEPTHS = 4
DEFAULT_SEQ_LEN = 256
PROBE_MAX_TOKENS = 1024
"""Probe tokens scored (the first windows of the probe text)."""


@dataclass
class LayerSpectrum:
    """One sampled linear layer's accumulated gradient spectrum."""

    name: str
    kind: str
    """attention | mlp | other (from the module's name)."""
    block: int
    """Index of the transformer block it sits in."""
    out_features: int
    in_features: int
    singular_values: list[float]

    @property
    def max_rank(self) -> int:
        return min(self.out_features, self.in_features)

    @property
    def rank_90(self) -> int:
        return spectrum.rank_for_energy(self.singular_values)

    @property
    def rank_90_share(self) -> float:
        return self.rank_90 / self.max_rank

    def energy_at(self, rank: int) -> float:
        return spectrum.energy_at_rank(self.singular_values, rank)


@dataclass
class Measurement:
    """Everything one measurement found, in plain Python (no tensors)."""

    model: str
    """The model measured on (a proxy's name when a proxy was used)."""
    model_dir: str
    device: str
    load: str
    """fp32 | bf16 | 4bit: how the weights were loaded."""
    rows: int
    """Rows measured (sampled from the data)."""
    target_tokens: int
    """Loss-bearing tokens the fit was read on."""
    micro_batches: int
    """Micro-batches the gradient was accumulated over."""
    tokens_per_batch: int
    """Target tokens each micro-batch was filled to."""
    seq_len: int
    target_loss: float
    """Mean loss per target token, nats."""
    probe_loss: float
    """Mean loss per token on the general-text probe, nats."""
    high_loss_share: float
    """Share of target tokens with loss above HIGH_LOSS_NATS."""
    layers: list[LayerSpectrum]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def loss_ratio(self) -> float:
        return self.target_loss / self.probe_loss if self.probe_loss > 0 else float("inf")

    @property
    def mean_rank_90_share(self) -> float:
        """Mean over the sampled layers of rank_90 / min(out, in): the verdict's rank signal."""
        return statistics.fmean(layer.rank_90_share for layer in self.layers)

    def mean_energy_at(self, rank: int) -> float:
        """Mean over the sampled layers of the energy share the best rank-`rank` approximation keeps."""
        return statistics.fmean(layer.energy_at(rank) for layer in self.layers)

    @property
    def median_rank_90(self) -> float:
        return statistics.median(layer.rank_90 for layer in self.layers)


# ------------------------------------------------------------------------------------ loading


def choose_load(device, weight_bytes_fp16: int) -> str:
    """fp32 on CPU; on CUDA bf16 when the 16-bit weights fit in 80% of free memory, else 4bit."""
    if device.type != "cuda":
        return "fp32"
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return "bf16" if weight_bytes_fp16 <= 0.8 * free else "4bit"


def _weight_bytes(model_dir: Path) -> int:
    """16-bit size of the weights from the safetensors/bin files on disk (fp32 files halved)."""
    files = list(model_dir.glob("*.safetensors")) or list(model_dir.glob("*.bin"))
    size = sum(f.stat().st_size for f in files)
    try:
        import json

        dtype = json.loads((model_dir / "config.json").read_text()).get("torch_dtype") or json.loads(
            (model_dir / "config.json").read_text()
        ).get("dtype")
    except (OSError, ValueError):
        dtype = None
    return size // 2 if dtype in ("float32", None) else size


def load_base(model_dir: Path, device, load: str, trust_remote_code: bool = False):
    """The frozen base model for measuring (eval mode, no parameter requires grad)."""
    import torch
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if load == "4bit":
        if device.type != "cuda":
            raise InputError.one("--device", "a 4-bit load needs a CUDA device", "measure on the CPU in fp32")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = {"": device.index or 0}
    else:
        kwargs["dtype"] = torch.bfloat16 if load == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if load != "4bit":
        model.to(device)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


# ------------------------------------------------------------------------------------ signals


def _blocks(model):
    """The transformer blocks: the longest nn.ModuleList in the model."""
    import torch.nn as nn

    best = None
    for _name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (_name, module)
    if best is None or not len(best[1]):
        raise RuntimeError("no transformer blocks (nn.ModuleList) found in the model")
    return best


def _kind(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv")):
        return "attention"
    if any(k in low for k in ("mlp", "ffn", "feed_forward", "gate_proj", "up_proj", "down_proj", "fc")):
        return "mlp"
    return "other"


def sample_linears(model, depths: int = DEFAULT_DEPTHS) -> list[tuple[str, int, object]]:
    """(name, block index, module) for every linear layer of `depths` blocks spread evenly over
    depth (first and last included)."""
    import torch.nn as nn

    prefix, blocks = _blocks(model)
    n = len(blocks)
    picks = (
        sorted({round(i * (n - 1) / max(1, depths - 1)) for i in range(depths)}) if depths > 1 else [n // 2]
    )
    out = []
    for b in picks:
        for name, module in blocks[b].named_modules():
            if isinstance(module, nn.Linear):
                out.append((f"{prefix}.{b}.{name}", b, module))
    if not out:
        raise RuntimeError("the sampled blocks hold no linear layers")
    return out


def target_batches(
    examples, *, tokens_per_batch: int, micro_batches: int, seed: int, max_rows: int = 64
) -> list[list]:
    """Seeded micro-batches of rows, each filled until it holds at least `tokens_per_batch`
    target tokens (or `max_rows` rows): every task is measured on about the same number of
    loss-bearing tokens, whatever its row lengths."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    batches: list[list] = []
    current: list = []
    count = 0
    for ex in order:
        current.append(ex)
        count += sum(label != IGNORE_INDEX for label in ex.labels[1:])
        if count >= tokens_per_batch or len(current) >= max_rows:
            batches.append(current)
            current, count = [], 0
            if len(batches) == micro_batches:
                return batches
    if current and len(batches) < micro_batches:
        batches.append(current)
    return batches


def _target_logits(model, batch: dict, device):
    """(logits at the labelled positions, their labels): the head runs on those positions only."""
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    labels = batch["labels"][:, 1:].to(device)
    keep = labels != IGNORE_INDEX
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings()
    if decoder is not None and head is not None:
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        return head(hidden[keep]).float(), labels[keep]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return logits[keep].float(), labels[keep]


def probe_loss(model, examples, *, batch_size: int, pad_id: int, device) -> float:
    """Mean next-token loss over the probe windows (no grad), nats."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(examples), batch_size):
            logits, labels = _target_logits(model, collate(examples[b : b + batch_size], pad_id), device)
            total += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += int(labels.numel())
    return total / max(1, count)


def accumulate_gradients(model, batches, layers, *, pad_id: int, device) -> tuple[dict, list[float]]:
    """Sum over the micro-batches of dL/dW (L: the micro-batch's mean target-token loss) for
    each (name, block, module) in `layers`, as fp32 (out, in) tensors built from the layer's
    forward input and output gradient, and every target token's loss (nats) on the way."""
    import torch
    import torch.nn.functional as F

    grads = {
        name: torch.zeros(m.out_features, m.in_features, dtype=torch.float32, device=device)
        for name, _b, m in layers
    }
    handles = []

    def hook(name):
        def forward_hook(module, inputs, output):
            x = inputs[0].detach()

            def backward_hook(g):
                g2 = g.detach().reshape(-1, g.shape[-1]).float()
                grads[name].add_(g2.T @ x.reshape(-1, x.shape[-1]).float())

            if output.requires_grad:
                output.register_hook(backward_hook)

        return forward_hook

    for name, _b, module in layers:
        handles.append(module.register_forward_hook(hook(name)))
    embed = model.get_input_embeddings()
    handles.append(embed.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True)))
    losses: list[float] = []
    try:
        for chunk in batches:
            with torch.enable_grad():
                logits, labels = _target_logits(model, collate(chunk, pad_id), device)
                per_token = F.cross_entropy(logits, labels, reduction="none")
                per_token.mean().backward()
            losses += per_token.detach().cpu().tolist()
    finally:
        for h in handles:
            h.remove()
    return grads, losses


def measure_loaded(
    model,
    tokenizer,
    rows: list[Row],
    *,
    model_name: str,
    model_dir: str,
    load: str,
    device,
    tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
    micro_batches: int = DEFAULT_MICRO_BATCHES,
    depths: int = DEFAULT_DEPTHS,
    seq_len: int = DEFAULT_SEQ_LEN,
    probe_path: Optional[str] = None,
    probe_tokens: int = PROBE_MAX_TOKENS,
    known_probe_loss: Optional[float] = None,
    seed: int = 0,
) -> Measurement:
    """Measure fit and update rank of `rows` on an already loaded frozen base model.
    known_probe_loss: the model's probe loss when already measured (several tasks, one model)."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(seed)
    notes: list[str] = []
    examples, enc_notes = encode_rows(list(rows), tokenizer, seq_len)
    notes += enc_notes
    if not examples:
        raise InputError.one(
            "--data",
            "no row has a trained token within the measured seq_len",
            f"raise --seq-len (now {seq_len}) or check the rows' completions",
        )
    batches = target_batches(
        examples, tokens_per_batch=tokens_per_batch, micro_batches=micro_batches, seed=seed
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    p_loss = known_probe_loss
    if p_loss is None:
        probe = probe_examples(tokenizer, min(seq_len, probe_tokens), probe_text(probe_path))
        probe = probe[: max(1, probe_tokens // min(seq_len, probe_tokens))]
        p_loss = probe_loss(model, probe, batch_size=4, pad_id=pad, device=device)
    layers = sample_linears(model, depths)
    grads, target = accumulate_gradients(model, batches, layers, pad_id=pad, device=device)
    spectra = [
        LayerSpectrum(
            name, _kind(name), block, m.out_features, m.in_features, spectrum.singular_values(grads[name])
        )
        for name, block, m in layers
    ]
    if len(batches) < micro_batches or len(target) < tokens_per_batch * micro_batches:
        notes.append(
            f"{len(target)} target tokens in {len(batches)} micro-batch(es), fewer than the "
            f"{micro_batches} x {tokens_per_batch} asked: the data has {len(examples)} usable rows"
        )
    return Measurement(
        model=model_name,
        model_dir=str(model_dir),
        device=str(device),
        load=load,
        rows=sum(len(b) for b in batches),
        target_tokens=len(target),
        micro_batches=len(batches),
        tokens_per_batch=tokens_per_batch,
        seq_len=seq_len,
        target_loss=sum(target) / len(target),
        probe_loss=p_loss,
        high_loss_share=sum(x > HIGH_LOSS_NATS for x in target) / len(target),
        layers=spectra,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def measure(
    rows: list[Row],
    model_dir: Path,
    *,
    model_name: str,
    device=None,
    load: Optional[str] = None,
    trust_remote_code: bool = False,
    **options,
) -> Measurement:
    """Load the model (see choose_load) and measure `rows` on it (options: measure_loaded's)."""
    from ..loading import load_tokenizer
    from ..models import pick_device

    started = time.perf_counter()
    device = device or pick_device()
    load = load or choose_load(device, _weight_bytes(model_dir))
    tokenizer = load_tokenizer(model_dir, trust_remote_code)
    model = load_base(model_dir, device, load, trust_remote_code)
    m = measure_loaded(
        model,
        tokenizer,
        rows,
        model_name=model_name,
        model_dir=str(model_dir),
        load=load,
        device=device,
        **options,
    )
    m.seconds = time.perf_counter() - started
    return m
