"""Executor models: resolution without downloads, loading per method, QLoRA gradients."""

from __future__ import annotations

import pytest
import torch

from exec_fixtures import make_plan, tiny_llama_dir
from tuneplan.base.errors import InputError
from tuneplan.executor import loading as L
from tuneplan.executor import models as M
from tuneplan.executor.loading.lora import lora_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("models"))


def test_resolve_local_dirs_and_model_path(tiny, tmp_path):
    assert M.resolve_model_dir(str(tiny)) == tiny
    assert M.resolve_model_dir("org/whatever", model_path=str(tiny)) == tiny
    with pytest.raises(InputError) as err:
        M.resolve_model_dir("org/whatever", model_path=str(tmp_path))
    assert err.value.problems[0].where == "--model-path"


@pytest.mark.parametrize("name", ["nobody-here/not-a-model-xyz", "guess-7B"])
def test_unknown_model_is_an_input_error_with_the_fix(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError) as err:
        M.resolve_model_dir(name)
    p = err.value.problems[0]
    assert p.where == "inputs.model.name" and name in p.message
    assert "--model-path" in p.fix and "download" in p.fix


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEPLAN_CACHE", str(tmp_path / "c"))
    assert M.embedded_cache_dir() == tmp_path / "c" / "models" / "SmolLM2-135M-Instruct"
    monkeypatch.delenv("TUNEPLAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert M.cache_root() == tmp_path / "x" / "tuneplan"
    assert M.embedded_gguf_path().is_file()


def test_cpu_substitutions_are_recorded(tiny):
    cpu = torch.device("cpu")
    prec = L.resolve_precision(make_plan("full", str(tiny), training={"precision": "bf16-mixed"}), cpu)
    assert prec.param_dtype == torch.float32 and prec.autocast_dtype is None
    assert prec.substitutions == [
        "training.precision: bf16-mixed -> fp32 (CPU: fp32 weights and compute, no autocast)"
    ]
    assert L.resolve_attention("flash", cpu) == (
        "sdpa",
        ["training.attention: flash -> sdpa (no CUDA device)"],
    )
    assert L.resolve_attention("eager", cpu) == ("eager", [])


def test_load_full_lora_qlora(tiny):
    full = L.load_model(make_plan("full", str(tiny)), tiny, torch.device("cpu"))
    assert all(p.requires_grad for p in full.model.parameters())
    lora = L.load_model(
        make_plan("lora", str(tiny), lora={"target_modules": ["q_proj", "v_proj"]}), tiny, torch.device("cpu")
    )
    names = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}
    q = L.load_model(
        make_plan(
            "qlora",
            str(tiny),
            quantization={"compute_dtype": "bfloat16"},
            training={"gradient_checkpointing": True},
        ),
        tiny,
        torch.device("cpu"),
    )
    import bitsandbytes as bnb

    layer = q.model.base_model.model.model.layers[0].mlp.up_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_state.quant_type == "nf4"
    # bf16 compute is kept on CPU (bitsandbytes' CPU kernels take it); peft's k-bit upcast is recorded.
    assert layer.compute_dtype == torch.bfloat16
    assert any(s.startswith("qlora: prepare_model_for_kbit_training upcast") for s in q.substitutions)
    assert q.tokenizer.pad_token is not None


def test_bad_lora_targets_are_input_errors(tiny):
    with pytest.raises(InputError) as err:
        L.load_model(
            make_plan("lora", str(tiny), lora={"target_modules": ["c_attn"]}), tiny, torch.device("cpu")
        )
    assert err.value.problems[0].where == "lora.target_modules"


def test_qlora_gradients_match_dequantised_reference(tiny):
    """LoRA A/B gradients on the NF4 base equal those on an fp32 copy of the dequantised weights."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    plan = make_plan("qlora", str(tiny))
    q = L.load_model(plan, tiny, torch.device("cpu")).model
    ref = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    qmods = dict(q.base_model.model.named_modules())
    replaced = 0
    for name, mod in ref.named_modules():
        if isinstance(qmods.get(name + ".base_layer", qmods.get(name)), bnb.nn.Linear4bit):
            w = qmods[name + ".base_layer"].weight
            mod.weight.data = F.dequantize_4bit(w.data, w.quant_state).float().reshape(mod.weight.shape)
            replaced += 1
    assert replaced == 14  # 7 linear layers x 2 blocks
    ref = get_peft_model(ref, lora_config(plan.lora))
    gen = torch.Generator().manual_seed(0)
    qparams = dict(q.named_parameters())
    for name, p in ref.named_parameters():
        if "lora_" in name:  # B is zero at init: give both models the same non-zero A and B
            val = torch.randn(p.shape, generator=gen) * 0.05
            p.data.copy_(val)
            qparams[name].data.copy_(val)
    ids = torch.randint(0, 300, (2, 24), generator=gen)
    q.eval()  # an eval pass first (as run_plan does) must not break the 4-bit backward
    with torch.no_grad():
        q(input_ids=ids)
    for model in (q, ref):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
    worst = 0.0
    for name, p in ref.named_parameters():
        if "lora_" in name:
            g_ref, g_q = p.grad, qparams[name].grad
            worst = max(worst, float((g_q - g_ref).norm() / g_ref.norm()))
    assert worst < 0.01, worst
