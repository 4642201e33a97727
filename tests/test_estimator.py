"""Tests for tuneplan.advisor.estimator: seed figures, pinned bytes, monotonicity, itemisation, and
real measurements of a tiny Llama on CPU (saved tensors and peak RSS) against the activation model.

The estimator itself needs no torch; only the measurement tests import torch/transformers/peft.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tuneplan.advisor.estimator import DEFAULT_HEADROOM, estimate
from tuneplan.advisor.catalog import get_model
from tuneplan.advisor.modelspec import build_spec
from tuneplan.schemas import GB, GiB, MemoryBreakdown, MemorySettings, ModelSpec

# ----------------------------------------------------------------------------- models


def model(name: str) -> ModelSpec:
    """The catalog model (each catalog row cites its config source)."""
    return get_model(name)


def S(**kw) -> MemorySettings:
    """Settings: single-device bf16-mixed AdamW, sdpa, micro-batch 1, seq 2048, unless overridden."""
    base = dict(
        method="full",
        precision="bf16-mixed",
        optimizer="adamw",
        gradient_checkpointing=False,
        attention="sdpa",
        micro_batch=1,
        seq_len=2048,
    )
    base.update(kw)
    return MemorySettings(**base)


def lora(**kw) -> MemorySettings:
    """16-bit LoRA r=16 all-linear with gradient checkpointing."""
    return S(
        **{
            **dict(method="lora", lora_rank=16, target_modules=["all-linear"], gradient_checkpointing=True),
            **kw,
        }
    )


def qlora(**kw) -> MemorySettings:
    """QLoRA r=16 all-linear, GC, paged AdamW 32-bit (the QLoRA recipe's optimizer)."""
    return S(
        **{
            **dict(
                method="qlora",
                lora_rank=16,
                target_modules=["all-linear"],
                gradient_checkpointing=True,
                optimizer="paged-adamw-32bit",
            ),
            **kw,
        }
    )


def est(m: ModelSpec, st: MemorySettings, cap: int = 80 * GiB, **kw):
    return estimate(m, st, capacity_bytes=cap, **kw)


L7 = model("meta-llama/Llama-2-7b-hf")

# ----------------------------------------------------------------------------- seed figures


def test_seed_7b_full_over_100gb():
    """Seed: full FT of a 7B 'wants 100GB+' (bf16-mixed, AdamW, no GC, seq 2048, batch 1)."""
    e = est(L7, S())
    assert e.per_device_bytes >= 100 * GB
    # model states as stored (accumulation 2: the gradients are resident at the peak) are exactly
    # 16 B/param before activations (ZeRO/HF accounting)
    b = est(L7, S(gradient_accumulation_steps=2)).breakdown
    assert b.weights + b.gradients + b.optimizer_states == 16 * L7.total_params


def test_seed_7b_lora_16_to_20gb():
    """Seed: 16-bit LoRA lands around 16-20 GB (r=16 all-linear, GC on, batch 1, seq 2048)."""
    assert 16 * GB <= est(L7, lora()).per_device_bytes <= 20 * GB


def test_seed_7b_qlora_6_to_12gb():
    """Seed: QLoRA fits in roughly 6-12 GB (r=16 all-linear, GC on, batch 1, seq 2048)."""
    assert 6 * GB <= est(L7, qlora()).per_device_bytes <= 12 * GB


def test_seed_full_over_qlora_ratio_10_to_20():
    """Seed: 'the 10-20x gap between full FT and QLoRA' (both with GC, same batch and sequence)."""
    ratio = est(L7, S(gradient_checkpointing=True)).per_device_bytes / est(L7, qlora()).per_device_bytes
    assert 10 <= ratio <= 20


def test_65b_qlora_fits_one_48gb_card():
    """QLoRA abstract: 65B on a single 48 GB GPU (r=16 all-linear, GC, batch 1, seq 512), with headroom."""
    e = est(model("huggyllama/llama-65b"), qlora(seq_len=512), cap=48 * GB)
    assert e.fits and e.per_device_bytes <= e.usable_bytes
    assert e.headroom_bytes >= DEFAULT_HEADROOM * 48 * GB


def test_gpt3_175b_lora_about_350gb():
    """LoRA §4.2: GPT-3 175B LoRA (r=4 on q,v = the fused c_attn) ≈ 350 GB; weights dominate."""
    e = est(
        model("gpt3-175b"),
        S(
            method="lora",
            precision="fp16-mixed",
            lora_rank=4,
            target_modules=["c_attn"],
            gradient_checkpointing=True,
        ),
        cap=2000 * GB,
    )
    assert abs(e.per_device_bytes - 350 * GB) <= 0.15 * 350 * GB
    assert e.breakdown.weights > 0.9 * e.per_device_bytes


def test_biderman_app_h_fp32_adam_model_states():
    """Biderman App. H: 7B fp32 Adam = 4Ψ+4Ψ+8Ψ = 112 GB with Ψ = 7B (Llama-2-7B has 6.74B)."""
    e = est(L7, S(precision="fp32", gradient_accumulation_steps=2), cap=200 * GB)
    b = e.breakdown
    states = b.weights + b.gradients + b.optimizer_states
    assert states == 16 * L7.total_params
    assert abs(states * 7e9 / L7.total_params - 112 * GB) < 1 * GB


# ----------------------------------------------------------------------------- pinned numbers

PINNED = {
    "llama2_7b_full": ("meta-llama/Llama-2-7b-hf", S(), "cuda", 112_107_450_777),
    "llama2_7b_full_accum4": (
        "meta-llama/Llama-2-7b-hf",
        S(gradient_accumulation_steps=4),
        "cuda",
        139_061_113_241,
    ),
    "llama2_7b_lora": ("meta-llama/Llama-2-7b-hf", lora(), "cuda", 16_186_569_932),
    "llama2_7b_qlora": ("meta-llama/Llama-2-7b-hf", qlora(), "cuda", 8_052_743_782),
    "llama31_8b_zero3_8gpu": (
        "meta-llama/Llama-3.1-8B",
        S(strategy="deepspeed-zero3", num_devices=8, gradient_checkpointing=True, micro_batch=2),
        "cuda",
        26_788_587_929,
    ),
    "qwen25_05b_cpu_fp32_eager": (
        "Qwen/Qwen2.5-0.5B",
        S(precision="fp32", seq_len=512, micro_batch=2, attention="eager"),
        "cpu",
        11_976_117_350,
    ),
}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_pinned_bytes(key):
    """Exact totals, so any change to the model shows up here (update deliberately)."""
    name, st, device, expected = PINNED[key]
    assert est(model(name), st, device=device).per_device_bytes == expected


def test_qlora_weight_bytes_exact():
    """NF4 4 bits/param + DQ constants (8/64 + 32/(64·256) bits/param) on the block linears; the rest
    fp32 after peft's prepare_model_for_kbit_training (executor), 16-bit without it."""
    e = est(L7, qlora())
    qw = L7.num_layers * sum(m.in_features * m.out_features for m in L7.linear_modules)
    rest = L7.total_params - qw
    assert e.breakdown.weights == qw // 2 + 4 * rest
    assert est(L7, qlora(), kbit_upcast=False).breakdown.weights == qw // 2 + 2 * rest
    blocks = -(-qw // 64)
    assert e.breakdown.quantization_constants == blocks + 4 * (-(-blocks // 256))
    assert abs(e.breakdown.quantization_constants * 8 / qw - 0.127) < 0.001


# ----------------------------------------------------------------------------- new settings


def _lora_term(e):
    return sum(t.bytes for t in e.terms if t.label.startswith("activations: LoRA"))


def test_dropout_zero_removes_exactly_the_dropped_copy():
    """lora_dropout=0: peft uses nn.Identity. Under autocast (CUDA) each target still saves its own cast
    input, so exactly the bool masks go; in fp32 without a cast the per-target dropped copies collapse to
    one saved input per shared tensor."""
    st = dict(method="lora", lora_rank=16, target_modules=["all-linear"], micro_batch=2, seq_len=512)
    b, s, Lyr = 2, 512, L7.num_layers
    on, off = est(L7, S(**st, lora_dropout=0.05)), est(L7, S(**st, lora_dropout=0.0))
    masks = b * s * Lyr * sum(1 * m.in_features for m in L7.linear_modules)  # 1 B bool mask per element
    assert _lora_term(on) - _lora_term(off) == masks
    assert est(L7, S(**st)).breakdown.activations == on.breakdown.activations  # None = assume dropout on
    # fp32 on CPU: mask (4 B) + dropped copy (4 B) per target; without dropout one 4 B input per distinct
    # tensor (attention input, MLP input, down-proj input; the sdpa output is already counted).
    on32 = est(L7, S(**st, precision="fp32", lora_dropout=0.1), device="cpu")
    off32 = est(L7, S(**st, precision="fp32", lora_dropout=0.0), device="cpu")
    h, f = L7.hidden_size, L7.intermediate_size
    dropped = b * s * Lyr * sum(8 * m.in_features for m in L7.linear_modules)
    shared = b * s * Lyr * 4 * (h + h + f)
    assert _lora_term(on32) - _lora_term(off32) == dropped - shared


def test_double_quant_off_is_half_a_bit_per_param():
    qw = L7.num_layers * sum(m.in_features * m.out_features for m in L7.linear_modules)
    dq = est(L7, qlora()).breakdown.quantization_constants
    plain = est(L7, qlora(double_quant=False)).breakdown.quantization_constants
    assert plain == 4 * (-(-qw // 64))
    assert abs(plain * 8 / qw - 0.5) < 1e-3 and plain > dq


def test_chunked_loss_monotone_in_chunk_size():
    """The executor's chunked loss (lm_head + CE per chunk, recomputed in backward) keeps the
    hidden-state copy plus one chunk's three fp32 c·V buffers; a chunk of the whole micro-batch
    saves nothing (it only adds the hidden-state copy)."""
    m8 = model("meta-llama/Llama-3.1-8B")
    base = dict(precision="bf16", micro_batch=2, seq_len=2048, gradient_checkpointing=True)
    unchunked = est(m8, S(**base)).breakdown.logits_and_loss
    seq = [est(m8, S(**base, loss_chunk_size=c)).breakdown.logits_and_loss for c in (64, 512, 2048, 4096)]
    assert seq == sorted(seq) and seq[-2] < unchunked and seq[0] < unchunked / 40
    V, n, h = m8.vocab_size, 2 * 2048, m8.hidden_size
    assert seq[0] == 2 * n * h + 12 * 64 * V  # bf16 hidden copy + one chunk's log-softmax and 2 gradients
    assert seq[-1] == unchunked + 2 * n * h
    compiled = est(m8, S(**base, loss_chunk_size=512), compiled_loss=True).breakdown.logits_and_loss
    assert compiled == 2 * n * V + 4 * n + 8 * 512 * V


def test_qlora_upcast_term_present():
    e = est(L7, qlora())
    labels = [t.label for t in e.terms]
    assert any("prepare_model_for_kbit_training" in x for x in labels)
    assert any("upcast) lm_head" in x for x in labels)
    off = est(L7, qlora(), kbit_upcast=False)
    assert not any("prepare_model_for_kbit_training" in t.label for t in off.terms)
    assert off.per_device_bytes < e.per_device_bytes


# ----------------------------------------------------------------------------- monotonicity


def test_gc_reduces_activations():
    for st in (S(), lora(gradient_checkpointing=False), qlora(gradient_checkpointing=False)):
        off = est(L7, st).breakdown.activations
        on = est(L7, st.model_copy(update={"gradient_checkpointing": True})).breakdown.activations
        assert on < off


def test_sdpa_not_above_eager():
    for st in (S(), lora(), qlora(), S(precision="fp32")):
        sdpa = est(L7, st).per_device_bytes
        eager = est(L7, st.model_copy(update={"attention": "eager"})).per_device_bytes
        flash = est(L7, st.model_copy(update={"attention": "flash"})).per_device_bytes
        assert sdpa <= eager and flash == sdpa


def test_sharding_order():
    """ZeRO-3 per device <= ZeRO-2 <= DDP (ZeRO paper stages), and FSDP == ZeRO-3 here."""
    m8 = model("meta-llama/Llama-3.1-8B")
    per = {
        s: est(m8, S(strategy=s, num_devices=8, gradient_checkpointing=True)).per_device_bytes
        for s in ("ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp")
    }
    assert per["deepspeed-zero3"] <= per["deepspeed-zero2"] <= per["ddp"]
    assert per["fsdp"] <= per["deepspeed-zero2"]


def test_cpu_offload_moves_states_to_host():
    m8 = model("meta-llama/Llama-3.1-8B")
    st = S(strategy="deepspeed-zero3", num_devices=4, gradient_checkpointing=True)
    on = est(m8, st.model_copy(update={"cpu_offload": True}))
    off = est(m8, st)
    assert on.breakdown.optimizer_states == 0 and off.breakdown.optimizer_states > 0
    assert on.per_device_bytes < off.per_device_bytes
    assert any("host" in t.label and t.bytes == 0 for t in on.terms)


def test_methods_order_7b():
    assert (
        est(L7, qlora()).per_device_bytes
        < est(L7, lora()).per_device_bytes
        < est(L7, S(gradient_checkpointing=True)).per_device_bytes
    )


def test_microbatch_doubles_activations():
    for st in (S(), lora(), S(gradient_checkpointing=False, precision="fp32")):
        a1 = est(L7, st).breakdown.activations
        a2 = est(L7, st.model_copy(update={"micro_batch": 2})).breakdown.activations
        # the autocast weight copies do not scale with batch; everything else does
        fixed = sum(t.bytes for t in est(L7, st).terms if "autocast copies" in t.label)
        assert a2 - fixed == pytest.approx(2 * (a1 - fixed), rel=0.02)


def test_optimizer_bytes():
    m = L7
    P = m.total_params
    assert est(m, S(precision="bf16")).breakdown.optimizer_states == 4 * P
    assert est(m, S(precision="bf16", optimizer="adamw-8bit")).breakdown.optimizer_states == 2 * P
    assert est(m, S(precision="bf16", optimizer="paged-adamw-32bit")).breakdown.optimizer_states == 8 * P
    assert est(m, S(precision="fp32")).breakdown.optimizer_states == 8 * P
    t = est(m, lora()).trainable_params
    assert t == m.lora_params(16, [x.name for x in m.linear_modules])
    assert est(m, lora(optimizer="paged-adamw-8bit")).breakdown.optimizer_states == 2 * t


# ----------------------------------------------------------------------------- terms, fits, calibration


@pytest.mark.parametrize(
    "st",
    [
        S(),
        lora(),
        qlora(),
        S(strategy="fsdp", num_devices=4, cpu_offload=True),
        S(strategy="ddp", num_devices=2, attention="eager"),
    ],
)
def test_terms_itemised_and_summed(st):
    e = est(L7, st)
    fields = set(MemoryBreakdown.model_fields)
    for t in e.terms:
        assert t.formula.strip() and t.source.strip() and t.label.strip()
        assert t.component in fields and t.bytes >= 0
    for f in fields:
        assert getattr(e.breakdown, f) == sum(t.bytes for t in e.terms if t.component == f)
    assert e.per_device_bytes == e.breakdown.total == sum(t.bytes for t in e.terms)


# ----------------------------------------------------------------------------- phases (gradients)


def _grad_terms(e):
    return [t for t in e.terms if t.component == "gradients"]


@pytest.mark.parametrize(
    "st",
    [
        S(),
        S(gradient_checkpointing=True),
        S(precision="fp32"),
        lora(),
        qlora(),
        S(seq_len=256),
        S(strategy="ddp", num_devices=2),
        S(strategy="fsdp", num_devices=4),
    ],
)
def test_peak_is_max_over_phases(st):
    """Accumulation 1: peak = other states + max(loss peak A, gradients G + backward working set W);
    accumulation > 1: the gradients persist, so they add to the loss peak (the old plain sum)."""
    one = est(L7, st)
    many = est(L7, st.model_copy(update={"gradient_accumulation_steps": 4}))
    b1, b4 = one.breakdown, many.breakdown
    # Activations and loss buffers (the loss-peak inventory) do not depend on the accumulation.
    assert (b1.activations, b1.logits_and_loss) == (b4.activations, b4.logits_and_loss)
    assert b1.gradients <= b4.gradients and one.per_device_bytes <= many.per_device_bytes
    assert many.per_device_bytes - one.per_device_bytes == b4.gradients - b1.gradients
    # The counted part is explained by the max in the formula text.
    for t in _grad_terms(one):
        if "counted where they exceed" in t.label:
            assert "peak = max(loss peak" in t.formula and "end of backward" in t.formula


def test_full_no_gc_gradients_fit_inside_freed_activations():
    """7B full, no GC, batch 1 x 2048: activations (29 GB) exceed the gradients (27 GB) + one block,
    so the gradients add nothing to the peak; with accumulation they add all 27 GB."""
    e = est(L7, S())
    assert e.breakdown.gradients == 0
    assert est(L7, S(gradient_accumulation_steps=2)).breakdown.gradients == 4 * L7.total_params


def test_full_gc_gradients_dominate_backward():
    """With checkpointing the activations are small: the end of backward (all gradients + one block
    recomputed) is the peak and the gradients count beyond the freed activations."""
    e = est(L7, S(gradient_checkpointing=True))
    b = e.breakdown
    G = 4 * L7.total_params
    assert 0 < b.gradients < G
    states = b.weights + b.optimizer_states
    assert (
        e.per_device_bytes - b.framework_overhead == states + b.activations + b.logits_and_loss + b.gradients
    )
    assert b.activations + b.logits_and_loss + b.gradients > G


def test_deepspeed_gradients_persist():
    st = S(strategy="deepspeed-zero2", num_devices=4)
    assert (
        est(L7, st).breakdown.gradients
        == est(L7, st.model_copy(update={"gradient_accumulation_steps": 2})).breakdown.gradients
    )


def test_calibration_recomputes_phase_max():
    """Scaling the activations down can move the peak to the end of backward: the counted gradients
    grow accordingly, and the total never drops below states + gradients."""
    base = est(L7, S())
    cal = est(L7, S(), calibration={"activations": 0.1, "logits_and_loss": 0.1})
    assert base.breakdown.gradients == 0 and cal.breakdown.gradients > 0
    b = cal.breakdown
    assert cal.per_device_bytes >= b.weights + b.optimizer_states + 4 * L7.total_params


def test_fit_arithmetic():
    e = est(L7, qlora(), cap=24 * GiB, headroom_fraction=0.2)
    assert e.usable_bytes == int(24 * GiB * 0.8)
    assert e.fits == (e.per_device_bytes <= e.usable_bytes)
    assert e.headroom_bytes == 24 * GiB - e.per_device_bytes
    small = est(L7, S(), cap=24 * GiB)
    assert not small.fits and small.headroom_bytes < 0


def test_calibration_applies_per_component():
    base = est(L7, lora())
    cal = est(L7, lora(), calibration={"activations": 0.5})
    assert cal.breakdown.activations == pytest.approx(base.breakdown.activations * 0.5, abs=len(cal.terms))
    assert cal.breakdown.weights == base.breakdown.weights
    assert cal.calibration_factor == pytest.approx(cal.per_device_bytes / base.per_device_bytes)
    assert all("calibration 0.5" in t.formula for t in cal.terms if t.component == "activations")
    assert base.calibration_factor is None
    with pytest.raises(ValueError):
        est(L7, lora(), calibration={"nonsense": 1.0})


def test_bad_settings_raise():
    with pytest.raises(ValueError):
        est(L7, S(method="lora"))  # no rank
    with pytest.raises(ValueError):
        est(L7, lora(target_modules=["c_attn"]))  # not a Llama module
    with pytest.raises(ValueError):
        est(L7, lora(), headroom_fraction=1.0)


def test_estimator_is_pure():
    """Layering: every module of the estimator package imports only stdlib, pydantic and tuneplan."""
    import ast
    from pathlib import Path

    import tuneplan.advisor.estimator as mod

    files = sorted(Path(mod.__file__).parent.glob("*.py"))
    assert len(files) >= 7, files
    roots = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "dataclasses", "typing", "tuneplan", "pydantic"}


# ----------------------------------------------------------------------------- real measurements (torch, CPU)

TINY = dict(
    num_hidden_layers=4,
    hidden_size=128,
    intermediate_size=344,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1000,
)
TINY_SPEC = build_spec(
    name="tiny-llama",
    family="llama",
    num_layers=4,
    hidden_size=128,
    intermediate_size=344,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1000,
)


def _tiny_settings(
    method: str, precision: str, attention: str, b: int, s: int, gc: bool = False
) -> MemorySettings:
    return MemorySettings(
        method=method,
        precision=precision,
        optimizer="adamw",
        gradient_checkpointing=gc,
        attention=attention,
        micro_batch=b,
        seq_len=s,
        lora_rank=8 if method == "lora" else None,
        target_modules=["all-linear"] if method == "lora" else None,
    )


@pytest.mark.parametrize(
    "method,precision,attention",
    [
        ("full", "fp32", "sdpa"),
        ("full", "fp32", "eager"),
        ("lora", "fp32", "sdpa"),
        ("full", "bf16-mixed", "sdpa"),
        ("lora", "bf16-mixed", "sdpa"),
    ],
)
def test_saved_tensors_match_activation_model(method, precision, attention):
    """Sum of unique saved-for-backward storages (params excluded) vs activations + saved log-softmax.

    Tiny Llama (4 layers, h=128, ffn 344, 4 heads, 2 kv, vocab 1000), batch 2, seq 48, on CPU.
    bf16-mixed: full = fp32 weights under CPU autocast; lora = bf16 base + fp32 peft adapters under
    autocast (as the executor runs them). LoRA r=8 all-linear, dropout 0.05.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import contextlib

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**TINY, attn_implementation=attention)
    m = transformers.LlamaForCausalLM(cfg)
    if method == "lora":
        peft = pytest.importorskip("peft")
        if precision != "fp32":
            m = m.to(torch.bfloat16)
        m = peft.get_peft_model(
            m, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear")
        )
    m.train()
    b, s = 2, 48
    ids = torch.randint(0, 1000, (b, s))
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params and st.data_ptr() not in seen:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ac = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ac:
        out = m(input_ids=ids, labels=ids)
    out.loss.backward()
    measured = sum(seen.values())

    e = estimate(
        TINY_SPEC, _tiny_settings(method, precision, attention, b, s), capacity_bytes=GiB, device="cpu"
    )
    saved_loss = sum(t.bytes for t in e.terms if "log-softmax saved" in t.label)
    predicted = e.breakdown.activations + saved_loss
    assert predicted == pytest.approx(measured, rel=0.05)


_RSS_SCRIPT = textwrap.dedent("""
    import gc, json, sys, torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0); torch.set_num_threads(1)
    def status(k):
        for line in open("/proc/self/status"):
            if line.startswith(k):
                return int(line.split()[1]) * 1024
    out = {}
    for method, attn, b, s, ckpt in json.loads(sys.argv[1]):
        m = LlamaForCausalLM(LlamaConfig(**json.loads(sys.argv[2]), attn_implementation=attn))
        if ckpt:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method == "lora":
            from peft import LoraConfig, get_peft_model
            for p in m.parameters():
                p.requires_grad_(False)
            if ckpt:
                m.enable_input_require_grads()
            m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear"))
        m.train()
        ids = torch.randint(0, 1000, (b, s))
        peaks = []
        for _ in range(3):
            m.zero_grad(set_to_none=True); gc.collect()
            open("/proc/self/clear_refs", "w").write("5")
            base = status("VmRSS")
            o = m(input_ids=ids, labels=ids); loss = o.loss; del o  # callers drop logits before backward
            loss.backward(); del loss
            peaks.append(status("VmHWM") - base)
        out[f"{method}-{attn}-{int(ckpt)}"] = min(peaks[1:])
    print(json.dumps(out))
""")


def test_peak_rss_matches_activations_and_loss():
    """Peak RSS growth over one fp32 step vs activations + logits_and_loss, with and without GC.

    glibc's mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_) so freed tensors leave RSS at once;
    VmHWM is reset through /proc/self/clear_refs. Batch 4 x seq 256. The loss-peak inventory
    (activations + logits_and_loss) is compared within 10%. The gradients (set to None before each
    step, as with accumulation 1) are allocated during backward, so the estimate's phase max
    (activations + loss buffers + the gradients it counts beyond them) is also compared: it may
    only over-predict (the end-of-backward working set, one block's inventory plus all its gradient
    transients, is an upper bound), by at most 15% on this tiny model where that phase wins with GC.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs")
    cases = [("full", "sdpa", 4, 256, False), ("full", "sdpa", 4, 256, True), ("lora", "sdpa", 4, 256, True)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, json.dumps(cases), json.dumps(TINY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    for method, attn, b, s, ckpt in cases:
        e = estimate(
            TINY_SPEC, _tiny_settings(method, "fp32", attn, b, s, ckpt), capacity_bytes=GiB, device="cpu"
        )
        predicted = e.breakdown.activations + e.breakdown.logits_and_loss
        got = measured[f"{method}-{attn}-{int(ckpt)}"]
        assert predicted == pytest.approx(got, rel=0.10), (method, attn, ckpt, predicted, got)
        phased = predicted + e.breakdown.gradients
        assert 0.95 * got <= phased <= 1.15 * got, (method, attn, ckpt, phased, got)


# ----------------------------------------------------------------------------- advisor consistency


@pytest.mark.parametrize(
    "case",
    [
        dict(model="Llama-3.2-1B", gpu="T4", batch_size=32, seq_len=2048),
        dict(model="Llama-3.1-8B", gpu="A100-80GB", batch_size=16, seq_len=4096),
        dict(model="Llama-3.1-70B", gpu="H100", gpus=8, nodes=2, batch_size=64, seq_len=4096),
    ],
)
def test_plan_estimate_uses_the_plans_accumulation(case):
    """The plan's estimate and every alternative are priced with the accumulation their micro-batch
    implies (TP047's arithmetic), so the gradients persist in the estimate exactly when they do in
    training."""
    from tuneplan.advisor.engine import advise
    from tuneplan.advisor.inputs import Answers, build_inputs

    a = Answers()
    for k in ("model", "gpu", "gpus", "nodes"):
        if k in case:
            setattr(a, k, case[k])
    a.task.update(
        domain_distance="far",
        forgetting_tolerance="high",
        batch_size=case["batch_size"],
        seq_len=case["seq_len"],
    )
    plan = advise(build_inputs(a))
    assert plan.memory.settings.gradient_accumulation_steps == plan.training.gradient_accumulation_steps
    devices = plan.distributed.num_processes
    for alt in plan.alternatives:
        st = alt.estimate.settings
        assert st.gradient_accumulation_steps == max(1, -(-case["batch_size"] // (st.micro_batch * devices)))


def test_untied_head_adds_one_head_weight_to_tied_models_only():
    m = model("HuggingFaceTB/SmolLM2-135M")
    assert m.tie_word_embeddings
    n = m.vocab_size * m.hidden_size
    base, untied = est(m, lora()), est(m, lora(untied_head=True))
    assert untied.breakdown.weights - base.breakdown.weights == 2 * n
    full = dict(precision="bf16-mixed", micro_batch=1, seq_len=512, gradient_accumulation_steps=2)
    fb, fu = est(m, S(**full)), est(m, S(**full, untied_head=True))
    assert fu.breakdown.weights - fb.breakdown.weights == pytest.approx(4 * n, rel=1e-6)
    assert fu.breakdown.optimizer_states - fb.breakdown.optimizer_states == pytest.approx(8 * n, rel=1e-6)
    assert (
        est(L7, lora(untied_head=True)).per_device_bytes == est(L7, lora()).per_device_bytes
    )  # untied already
