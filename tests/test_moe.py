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
