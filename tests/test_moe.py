"""Mixture-of-experts (issue 13): total vs active parameters, every expert resident in memory,
activations on the active ones, LoRA on the fused expert projections with the router frozen, and a
real run of a tiny Mixtral through the executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exec_fixtures import overfit_rows, tiny_tokenizer, write_jsonl
from tuneplan.advisor import catalog
from tuneplan.cli.main import main
from tuneplan.advisor.estimator import estimate
from tuneplan.advisor.moe import active_ffn_width
from tuneplan.schemas import load_plan_dict

TINY = {
    "vocab_size": 320,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


def _save(root: Path, kind: str, **extra) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, CONFIG_MAPPING

    cfg = CONFIG_MAPPING[kind](**TINY, **extra)
    out = root / f"tiny-{kind}"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory) -> Path:
    return _save(
        tmp_path_factory.mktemp("moe"),
        "mixtral",
        intermediate_size=96,
        num_local_experts=4,
        num_experts_per_tok=2,
    )


@pytest.mark.parametrize(
    "name,total,active",
    [
        ("mistralai/Mixtral-8x7B-v0.1", 46.7e9, 12.9e9),  # Mixtral paper §2: 47B total, 13B active
        ("Qwen/Qwen3-30B-A3B", 30.5e9, 3.3e9),  # model card: 30.5B total, 3.3B activated
        ("Qwen/Qwen1.5-MoE-A2.7B", 14.3e9, 2.7e9),  # model card: 14.3B total, 2.7B activated
    ],
)
def test_catalog_moe_total_and_active_params(name, total, active) -> None:
    spec = catalog.get_model(name)
    assert spec.is_moe
    assert spec.total_params == pytest.approx(total, rel=0.01)
    assert spec.active_params == pytest.approx(active, rel=0.02)
    assert "gate" not in spec.module_names, "the router is never a LoRA target"


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("mixtral", {"intermediate_size": 96, "num_local_experts": 4, "num_experts_per_tok": 2}),
        (
            "qwen3_moe",
            {
                "moe_intermediate_size": 48,
                "intermediate_size": 128,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "head_dim": 16,
            },
        ),
        (
            "qwen2_moe",
            {
                "moe_intermediate_size": 48,
                "intermediate_size": 128,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "shared_expert_intermediate_size": 96,
            },
        ),
    ],
)
def test_moe_config_counts_match_transformers(tmp_path, kind, extra) -> None:
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    cfg = CONFIG_MAPPING[kind](**TINY, **extra)
    (tmp_path / "config.json").write_text(cfg.to_json_string())
    spec = catalog.model_from_config_dict(json.loads(cfg.to_json_string()), kind)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert spec.total_params == sum(p.numel() for p in model.parameters())
    assert spec.is_moe and spec.active_params < spec.total_params


def test_estimator_keeps_all_experts_resident_and_activations_on_the_active_ones() -> None:
    from tuneplan.schemas import MemorySettings

    base = {**TINY, "model_type": "mixtral", "intermediate_size": 96, "num_local_experts": 4}
    k1 = catalog.model_from_config_dict({**base, "num_experts_per_tok": 1}, "k1")
    k2 = catalog.model_from_config_dict({**base, "num_experts_per_tok": 2}, "k2")
    assert k1.total_params == k2.total_params and k1.active_params < k2.active_params
    assert (active_ffn_width(k1), active_ffn_width(k2)) == (96, 192)
    st = MemorySettings(
        method="full",
        precision="fp32",
        optimizer="adamw",
        seq_len=64,
        micro_batch=2,
        gradient_checkpointing=False,
        attention="sdpa",
    )
    e1, e2 = (estimate(m, st, capacity_bytes=8 << 30, device="cpu") for m in (k1, k2))
    assert e1.breakdown.weights == e2.breakdown.weights >= 4 * k1.total_params - 4 * k1.params.embedding
    assert e2.breakdown.optimizer_states == e1.breakdown.optimizer_states == 8 * k1.total_params
    assert e2.breakdown.activations > e1.breakdown.activations


def test_lora_on_a_tiny_mixtral_trains_expert_adapters_with_the_router_frozen(
    mixtral, tmp_path, capsys
) -> None:
    from safetensors import safe_open

    from tuneplan.executor.runner import run_plan

    rows = overfit_rows(8)
    write_jsonl(tmp_path / "train.jsonl", rows)
    plan_path = tmp_path / "plan.json"
    assert (
        main(
            [
                "advise",
                "--model",
                str(mixtral),
                "--cpu",
                "--cpu-name",
                "t",
                "--cpu-memory",
                "8",
                "--cpu-cores",
                "2",
                "--domain",
                "near",
                "--forgetting",
                "medium",
                "--method",
                "lora",
                "--seq-len",
                "32",
                "--batch-size",
                "4",
                "--max-steps",
                "2",
                "--data",
                str(tmp_path / "train.jsonl"),
                "--eval-data",
                str(tmp_path / "train.jsonl"),
                "-o",
                str(plan_path),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    plan = load_plan_dict(json.loads(plan_path.read_text()))
    spec = plan.inputs.model
    assert "counts match transformers" in spec.source
    assert {"experts.gate_up_proj", "experts.down_proj"} <= set(plan.lora.target_modules)
    result = run_plan(
        str(plan_path), db=str(tmp_path / "runs.duckdb"), output_dir=str(tmp_path / "runs"), max_steps=2
    )
    assert result.status == "succeeded", result.error
    assert result.trainable_params == spec.lora_params(plan.lora.rank, plan.lora.target_modules)
    assert result.total_params == spec.total_params + result.trainable_params
    art = Path(result.artifact_path)
    with safe_open(str(art / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("experts" in k for k in keys)
    assert not any(".mlp.gate." in k for k in keys), "the router must stay frozen"


@pytest.fixture(scope="module")
def qwen3_moe(tmp_path_factory) -> Path:
    return _save(
        tmp_path_factory.mktemp("moe"),
        "qwen3_moe",
        moe_intermediate_size=48,
        intermediate_size=128,
        num_experts=8,
        num_experts_per_tok=2,
        head_dim=16,
    )


def _advise(model_dir: Path, tmp_path: Path, method: str, steps: int, capsys) -> Path:
    write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    plan_path = tmp_path / "plan.json"
    argv = ["advise", "--model", str(model_dir), "--cpu", "--cpu-name", "t", "--cpu-memory", "8"]
    argv += ["--cpu-cores", "2", "--domain", "near", "--forgetting", "medium", "--method", method]
    argv += ["--seq-len", "32", "--batch-size", "4", "--max-steps", str(steps)]
    argv += ["--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "train.jsonl")]
    assert main([*argv, "-o", str(plan_path), "--json"]) == 0
    capsys.readouterr()
    return plan_path


@pytest.mark.parametrize("kind", ["mixtral", "qwen3_moe"])
def test_qlora_on_a_tiny_moe_quantizes_and_adapts_the_experts_with_the_router_frozen(
    kind, request, tmp_path, capsys
) -> None:
    """QLoRA on a Mixtral- and a Qwen3-MoE-style model through the real executor on CPU: the
    fused expert stacks the advisor targets are stored NF4 (transformers quantises nn.Linear only,
    executor/loading/qlora.py quantises them) and carry LoRA; the router stays full precision and
    frozen; the loss falls; the run lands in DuckDB."""
    import bitsandbytes as bnb
    import duckdb
    import torch
    from peft.tuners.lora.layer import ParamWrapper

    from tuneplan.executor.loading import load_model
    from tuneplan.executor.runner import run_plan

    model_dir = request.getfixturevalue(kind)
    plan_path = _advise(model_dir, tmp_path, "qlora", 8, capsys)
    plan = load_plan_dict(json.loads(plan_path.read_text()))
    assert plan.method == "qlora" and plan.quantization.quant_type == "nf4"
    assert {"experts.gate_up_proj", "experts.down_proj"} <= set(plan.lora.target_modules)
    assert not any(t == "gate" or t.endswith(".gate") for t in plan.lora.target_modules)

    loaded = load_model(plan, model_dir, torch.device("cpu"))
    model = loaded.model
    layers = model.base_model.model.model.layers
    for layer in layers:
        experts = layer.mlp.experts
        while isinstance(experts, ParamWrapper):
            experts = experts.get_base_layer()
        for name in ("gate_up_proj", "down_proj"):
            original = experts.parametrizations[name].original
            assert original.dtype == torch.uint8 and not original.requires_grad
            assert (
                original.quant_state.quant_type == "nf4"
                and original.quant_state.nested is plan.quantization.double_quant
            )
            assert original.numel() * 2 == getattr(experts, name).numel(), "two 4-bit weights a byte"
        router = layer.mlp.gate
        assert router.weight.dtype.is_floating_point and router.weight.dtype != torch.uint8
        assert not router.weight.requires_grad and not isinstance(router.weight, bnb.nn.Params4bit)
        assert not any("lora" in n for n, _ in router.named_parameters())
        assert isinstance(layer.self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    wrapped = {m.parameter_name for m in model.modules() if isinstance(m, ParamWrapper)}
    assert wrapped == {"gate_up_proj", "down_proj"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("experts" in n for n in trainable) and not any(".mlp.gate." in n for n in trainable)
    ids = torch.randint(0, 300, (2, 16))
    for _ in range(2):  # the LoRA proxy is removed after each forward, the 4-bit store stays
        model(input_ids=ids, labels=ids).loss.backward()
    experts = layers[0].mlp.experts
    while isinstance(experts, ParamWrapper):
        experts = experts.get_base_layer()
    assert len(experts.parametrizations["gate_up_proj"]) == 1
    nograd = [n for n, p in model.named_parameters() if p.requires_grad and "experts" in n and p.grad is None]
    assert not nograd, nograd
    del loaded, model

    db = tmp_path / "runs.duckdb"
    result = run_plan(str(plan_path), db=str(db), output_dir=str(tmp_path / "runs"), max_steps=8)
    assert result.status == "succeeded", result.error
    spec = plan.inputs.model
    assert result.trainable_params == spec.lora_params(plan.lora.rank, plan.lora.target_modules)
    assert result.total_params == spec.total_params + result.trainable_params  # 4-bit counted logically
    con = duckdb.connect(str(db), read_only=True)
    try:
        (row,) = con.execute("SELECT method, status, model FROM runs").fetchall()
        losses = [r[0] for r in con.execute("SELECT loss FROM metrics ORDER BY step").fetchall()]
    finally:
        con.close()
    assert row[:2] == ("qlora", "succeeded")
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    assert result.eval_loss_after < result.eval_loss_before


def test_an_unsupported_moe_config_is_refused_not_read_as_dense(tmp_path, capsys) -> None:
    """DeepSeek-V3's config.json (values from huggingface.co/deepseek-ai/DeepSeek-V3) has the
    Llama keys, so it used to be read as a 38.6B dense Llama: 671B parameters in 256 routed
    experts and MLA attention, wrong by 17x. Now exit 2 naming --model and the keys."""
    cfg = {
        "model_type": "deepseek_v3",
        "num_hidden_layers": 61,
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "vocab_size": 129280,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "kv_lora_rank": 512,
        "q_lora_rank": 1536,
        "max_position_embeddings": 163840,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    argv = [
        "advise",
        "--model",
        str(tmp_path),
        "--gpu",
        "H100-80GB",
        "--domain",
        "near",
        "--forgetting",
        "low",
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("  - ") <= 1, err  # the one problem is the model
    assert "--model" in err and "n_routed_experts" in err and "kv_lora_rank" in err and "--params" in err
    dense = {k: v for k, v in cfg.items() if k in ("model_type", *TINY, "intermediate_size")}
    dense.update(TINY, model_type="some_llama_like")
    spec = catalog.model_from_config_dict(dense, "llama-like")
    assert "read as Llama-shaped" in spec.source and not spec.is_moe  # a dense unknown type still reads


def test_fsdp_qlora_stores_the_expert_stacks_in_the_compute_dtype(mixtral) -> None:
    """FSDP / ZeRO-3 QLoRA shards one dtype: the packed expert stacks are stored in the compute
    dtype then (as quantization_config asks of Linear4bit); dequantised they keep their shape and
    the logical parameter count."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM

    from tuneplan.executor.loading.qlora import quantize_fused_experts
    from tuneplan.executor.measure import count_params

    model = AutoModelForCausalLM.from_pretrained(mixtral, dtype=torch.float32)
    _, total = count_params(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if "experts" in n}
    plan = SimpleNamespace(quantization=SimpleNamespace(quant_type="nf4", double_quant=True))
    names = quantize_fused_experts(model, plan, torch.bfloat16, SimpleNamespace(strategy="fsdp"))
    assert sorted(names) == sorted(shapes)
    experts = model.model.layers[0].mlp.experts
    assert experts.parametrizations["gate_up_proj"].original.dtype == torch.bfloat16
    assert experts.gate_up_proj.dtype == torch.bfloat16
    assert tuple(experts.gate_up_proj.shape) == shapes["model.layers.0.mlp.experts.gate_up_proj"]
    assert count_params(model)[1] == total
