"""`tuneplan export` (issue 13): each target's file is read back by the tool's own parser or config
classes where they install here (TRL's `trl sft` parser, peft's LoraConfig, transformers'
BitsAndBytesConfig), else checked against the tool's documented keys; every planned setting either
round-trips or is listed in the file's "NOT expressible" header."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneplan.cli.main import main
from tuneplan.schemas import Plan, load_plan_dict

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Documented top-level keys (the subset tuneplan writes must be inside it).
# Axolotl: docs.axolotl.ai/docs/config-reference.html
AXOLOTL_KEYS = {
    "base_model",
    "trust_remote_code",
    "adapter",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "peft_use_rslora",
    "load_in_4bit",
    "bnb_config_kwargs",
    "datasets",
    "test_datasets",
    "val_set_size",
    "sequence_len",
    "sample_packing",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler",
    "warmup_ratio",
    "optimizer",
    "weight_decay",
    "max_grad_norm",
    "gradient_checkpointing",
    "seed",
    "num_epochs",
    "max_steps",
    "bf16",
    "fp16",
    "tf32",
    "flash_attention",
    "sdp_attention",
    "fsdp",
    "fsdp_config",
    "deepspeed",
    "output_dir",
}
# LLaMA-Factory: src/llamafactory/hparams/{model,data,finetuning}_args.py + transformers TrainingArguments
LLAMAFACTORY_KEYS = {
    "model_name_or_path",
    "trust_remote_code",
    "stage",
    "do_train",
    "finetuning_type",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "use_rslora",
    "quantization_bit",
    "quantization_method",
    "quantization_type",
    "double_quantization",
    "dataset",
    "dataset_dir",
    "eval_dataset",
    "val_size",
    "template",
    "cutoff_len",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "optim",
    "weight_decay",
    "max_grad_norm",
    "disable_gradient_checkpointing",
    "seed",
    "flash_attn",
    "num_train_epochs",
    "max_steps",
    "bf16",
    "pure_bf16",
    "fp16",
    "deepspeed",
    "output_dir",
}
# torchtune: recipes/configs/llama3_1/8B_lora_single_device.yaml and friends
TORCHTUNE_KEYS = {
    "output_dir",
    "model",
    "tokenizer",
    "checkpointer",
    "dataset",
    "seed",
    "shuffle",
    "batch_size",
    "epochs",
    "max_steps_per_epoch",
    "optimizer",
    "lr_scheduler",
    "loss",
    "gradient_accumulation_steps",
    "clip_grad_norm",
    "compile",
    "device",
    "dtype",
    "enable_activation_checkpointing",
    "optimizer_in_bwd",
    "fsdp_cpu_offload",
}


def _export(tmp_path, plan: Path, target: str, capsys) -> tuple[dict, str, str]:
    out = tmp_path / f"{plan.stem}.{target}.yaml"
    capsys.readouterr()
    assert main(["export", str(plan), "--to", target, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    text = out.read_text()
    return yaml.safe_load(text), text, err


def _plan(name: str) -> Plan:
    return load_plan_dict(json.loads((EXAMPLES / "plans" / f"{name}.json").read_text()))


def _notes(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("#"))


@pytest.mark.parametrize("name", ["full", "lora", "qlora"])
def test_trl_export_is_read_by_trls_own_sft_parser(tmp_path, capsys, name) -> None:
    # trl is in the `test` extra (pyproject.toml), so `make test` runs this, never skips it
    from trl import get_peft_config, get_quantization_config
    from trl.scripts.sft import make_parser

    plan = _plan(name)
    cfg, text, _ = _export(tmp_path, EXAMPLES / "plans" / f"{name}.json", "trl", capsys)
    # the very parser `trl sft --config FILE` uses; unknown keys fail
    script, sft, model, data = make_parser().parse_args_and_config(
        ["--config", str(tmp_path / f"{name}.trl.yaml"), "--output_dir", str(tmp_path / "out")],
        fail_with_unknown_args=True,
    )
    t = plan.training
    assert sft.learning_rate == t.learning_rate and sft.lr_scheduler_type.value == t.lr_scheduler
    assert sft.warmup_steps == t.warmup_ratio
    assert sft.per_device_train_batch_size == t.per_device_batch_size
    assert sft.gradient_accumulation_steps == t.gradient_accumulation_steps
    assert sft.max_length == t.seq_len and sft.seed == t.seed and sft.max_grad_norm == t.max_grad_norm
    assert sft.gradient_checkpointing == t.gradient_checkpointing and sft.optim.value == "adamw_torch"
    assert sft.num_train_epochs == t.num_epochs
    assert model.model_name_or_path == plan.inputs.model.name and model.attn_implementation == "sdpa"
    assert data.datasets[0].data_files == plan.data.train_path
    peft_cfg = get_peft_config(model)
    if plan.lora is None:
        assert peft_cfg is None and not model.use_peft
    else:
        assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (
            plan.lora.rank,
            plan.lora.alpha,
            plan.lora.dropout,
        )
        assert set(peft_cfg.target_modules) == set(plan.lora.target_modules)
    bnb = get_quantization_config(model)
    if plan.quantization is None:
        assert bnb is None
    else:
        assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
        assert str(bnb.bnb_4bit_compute_dtype).endswith(plan.quantization.compute_dtype)
    # what TRL cannot take is listed, not dropped
    assert "forgetting probe" in _notes(text) and "eval_path" in _notes(text)


def test_axolotl_export_uses_documented_keys_and_builds_peft_and_bnb_configs(tmp_path, capsys) -> None:
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    plan = _plan("qlora")
    cfg, text, err = _export(tmp_path, EXAMPLES / "plans" / "qlora.json", "axolotl", capsys)
    assert set(cfg) <= AXOLOTL_KEYS, set(cfg) - AXOLOTL_KEYS
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
    bnb = BitsAndBytesConfig(load_in_4bit=True, **cfg["bnb_config_kwargs"])
    assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant is True
    lc = LoraConfig(
        r=cfg["lora_r"],
        lora_alpha=cfg["lora_alpha"],
        lora_dropout=cfg["lora_dropout"],
        target_modules=cfg["lora_target_modules"],
        use_rslora=cfg["peft_use_rslora"],
    )
    assert (lc.r, lc.lora_alpha, set(lc.target_modules)) == (16, 32, set(plan.lora.target_modules))
    t = plan.training
    assert (
        cfg["learning_rate"],
        cfg["lr_scheduler"],
        cfg["warmup_ratio"],
        cfg["micro_batch_size"],
        cfg["gradient_accumulation_steps"],
        cfg["sequence_len"],
        cfg["num_epochs"],
        cfg["max_grad_norm"],
    ) == (
        t.learning_rate,
        t.lr_scheduler,
        t.warmup_ratio,
        t.per_device_batch_size,
        t.gradient_accumulation_steps,
        t.seq_len,
        t.num_epochs,
        t.max_grad_norm,
    )
    # the example data are chat rows: Axolotl's chat_template loader, loss on assistant turns
    assert cfg["datasets"][0]["type"] == "chat_template" and cfg["datasets"][0]["roles_to_train"] == [
        "assistant"
    ]
    assert cfg["test_datasets"][0]["path"] == plan.data.eval_path
    assert "forgetting probe" in err and "forgetting probe" in _notes(text)


def test_llamafactory_export_uses_documented_keys(tmp_path, capsys) -> None:
    from peft import LoraConfig

    plan = _plan("qlora")
    cfg, text, _ = _export(tmp_path, EXAMPLES / "plans" / "qlora.json", "llamafactory", capsys)
    assert set(cfg) <= LLAMAFACTORY_KEYS, set(cfg) - LLAMAFACTORY_KEYS
    assert (
        cfg["finetuning_type"],
        cfg["quantization_bit"],
        cfg["quantization_type"],
        cfg["double_quantization"],
    ) == ("lora", 4, "nf4", True)
    assert cfg["lora_target"].split(",") == plan.lora.target_modules
    LoraConfig(r=cfg["lora_rank"], lora_alpha=cfg["lora_alpha"], target_modules=cfg["lora_target"].split(","))
    assert cfg["cutoff_len"] == plan.training.seq_len
    assert cfg["disable_gradient_checkpointing"] is (not plan.training.gradient_checkpointing)
    # the dataset must be registered by name: the entry to add is in the header, as JSON
    line = next(x for x in _notes(text).splitlines() if "dataset_info.json" in x)
    entry = json.loads(line.split("add: ", 1)[1])
    assert entry["tuneplan_train"]["file_name"] == plan.data.train_path
    assert entry["tuneplan_train"]["formatting"] == "sharegpt"


def test_torchtune_export_maps_modules_to_torchtune_names(tmp_path, capsys) -> None:
    plan_path = tmp_path / "llama.json"
    capsys.readouterr()
    assert (
        main(
            [
                "advise",
                "--model",
                "meta-llama/Llama-3.1-8B",
                "--gpu",
                "A100-80GB",
                "--domain",
                "near",
                "--forgetting",
                "medium",
                "--method",
                "qlora",
                "--max-steps",
                "200",
                "-o",
                str(plan_path),
            ]
        )
        == 0
    )
    cfg, text, _ = _export(tmp_path, plan_path, "torchtune", capsys)
    assert set(cfg) <= TORCHTUNE_KEYS, set(cfg) - TORCHTUNE_KEYS
    m = cfg["model"]
    assert m["_component_"] == "torchtune.models.llama3_1.qlora_llama3_1_8b"
    assert m["lora_attn_modules"] == ["q_proj", "k_proj", "v_proj", "output_proj"] and m["apply_lora_to_mlp"]
    assert cfg["checkpointer"]["model_type"] == "LLAMA3"
    assert cfg["max_steps_per_epoch"] == 200
    assert cfg["lr_scheduler"]["num_warmup_steps"] == 6  # ceil(0.03 * 200)
    assert "double quantization always on" in _notes(text)


def test_distributed_settings_are_exported_or_listed(tmp_path, capsys) -> None:
    plan_path = tmp_path / "fsdp.json"
    capsys.readouterr()
    assert (
        main(
            [
                "advise",
                "--model",
                "meta-llama/Llama-3.1-70B",
                "--gpu",
                "H100",
                "--gpus",
                "8",
                "--domain",
                "far",
                "--forgetting",
                "high",
                "--method",
                "full",
                "-o",
                str(plan_path),
            ]
        )
        == 0
    )
    plan = load_plan_dict(json.loads(plan_path.read_text()))
    assert plan.distributed.num_processes == 8
    cfg, text, _ = _export(tmp_path, plan_path, "trl", capsys)
    assert f"--num_processes {plan.distributed.num_processes}" in text
    if plan.distributed.strategy == "fsdp":
        assert cfg["fsdp"].startswith("full_shard")
    elif plan.distributed.strategy.startswith("deepspeed"):
        assert cfg["deepspeed"]["zero_optimization"]["stage"] in (2, 3)


def test_export_to_stdout_and_bad_target(tmp_path, capsys) -> None:
    capsys.readouterr()
    assert main(["export", str(EXAMPLES / "plans" / "lora.json"), "--to", "axolotl"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["adapter"] == "lora"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(EXAMPLES / "plans" / "lora.json"), "--to", "unsloth"])
    assert exc.value.code == 2
    assert main(["export", str(tmp_path / "missing.json"), "--to", "trl"]) == 2


def test_moe_plan_exports_expert_targets_as_peft_target_parameters(tmp_path, capsys) -> None:
    """A QLoRA plan for a (tiny) Mixtral: TRL takes the fused expert projections as
    lora_target_parameters (peft's target_parameters; read back by TRL's own parser and
    get_peft_config); Axolotl and LLaMA-Factory, whose documented keys have no such list, leave
    them out of the module targets and say so; every target notes that transformers' 4-bit load
    leaves the fused experts unquantised."""
    from transformers import CONFIG_MAPPING
    from trl import get_peft_config
    from trl.scripts.sft import make_parser

    cfg = CONFIG_MAPPING["mixtral"](
        vocab_size=320,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    model_dir = tmp_path / "tiny-mixtral"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(cfg.to_json_string())
    plan_path = tmp_path / "moe.json"
    argv = ["advise", "--model", str(model_dir), "--cpu", "--cpu-name", "t", "--cpu-memory", "8"]
    argv += ["--cpu-cores", "2", "--domain", "near", "--forgetting", "low"]
    assert main([*argv, "--method", "qlora", "-o", str(plan_path)]) == 0
    plan = load_plan_dict(json.loads(plan_path.read_text()))
    fused = [t for t in plan.lora.target_modules if t.startswith("experts.")]
    assert sorted(fused) == ["experts.down_proj", "experts.gate_up_proj"]
    modules = [t for t in plan.lora.target_modules if t not in fused]

    trl_cfg, text, _ = _export(tmp_path, plan_path, "trl", capsys)
    assert trl_cfg["lora_target_parameters"] == fused and trl_cfg["lora_target_modules"] == modules
    _, _, model, _ = make_parser().parse_args_and_config(
        ["--config", str(tmp_path / "moe.trl.yaml"), "--output_dir", str(tmp_path / "out")],
        fail_with_unknown_args=True,
    )
    peft_cfg = get_peft_config(model)
    assert set(peft_cfg.target_parameters) == set(fused) and set(peft_cfg.target_modules) == set(modules)
    assert "quantises nn.Linear layers only" in _notes(text)
    for target, key in (("axolotl", "lora_target_modules"), ("llamafactory", "lora_target")):
        out, text, _ = _export(tmp_path, plan_path, target, capsys)
        got = out[key] if isinstance(out[key], list) else out[key].split(",")
        assert got == modules and "target_parameters" in _notes(text), target
        assert "quantises nn.Linear layers only" in _notes(text)
    _, text, _ = _export(tmp_path, plan_path, "torchtune", capsys)
    assert "experts.gate_up_proj" in _notes(text) and "quantises nn.Linear layers only" in _notes(text)
