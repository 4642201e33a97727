"""`tuneplan export PLAN --to trl|axolotl|llamafactory|torchtune [-o FILE]`: the plan in the config
format of the trainer a user already has.

Each target is one function from the plan to (a YAML-ready dict, notes). Notes say what the target
cannot express as planned; they are written into the file as a comment block and printed on stderr,
never dropped silently. Keys follow each tool's documentation and config classes:

- TRL: the YAML `trl sft --config FILE` reads, i.e. the fields of trl's ScriptArguments, SFTConfig
  (transformers TrainingArguments), ModelConfig and DatasetMixtureConfig (trl/scripts/sft.py
  make_parser). tests/test_export.py parses the file with that very parser when trl is installed.
- Axolotl: docs.axolotl.ai/docs/config-reference.html (base_model, adapter, lora_*, datasets,
  sequence_len, micro_batch_size, bnb_config_kwargs, ...).
- LLaMA-Factory: the `llamafactory-cli train FILE` YAML (examples/train_lora/*.yaml and
  src/llamafactory/hparams: model_name_or_path, stage, finetuning_type, lora_rank, lora_target,
  quantization_bit, double_quantization, cutoff_len, ...).
- torchtune: a recipe config (`tune run RECIPE --config FILE`), with `_component_` builders as in
  recipes/configs/*/ (lora_attn_modules, apply_lora_to_mlp, checkpointer, dataset, optimizer, ...).

Stdlib + yaml only: no trainer is imported to write its file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

from tuneplan.base.errors import InputError

TARGETS = ("trl", "axolotl", "llamafactory", "torchtune")

# plan optimizer -> transformers TrainingArguments `optim` (Axolotl and LLaMA-Factory use the same names)
HF_OPTIM = {
    "adamw": "adamw_torch",
    "adamw-8bit": "adamw_bnb_8bit",
    "paged-adamw-8bit": "paged_adamw_8bit",
    "paged-adamw-32bit": "paged_adamw_32bit",
}
# plan attention -> transformers attn_implementation
HF_ATTN = {"eager": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}


class Exported:
    """One export: the config as a dict, what could not be expressed, and how to launch it."""

    def __init__(self, target: str, config: dict, notes: list[str], launch: str) -> None:
        self.target, self.config, self.notes, self.launch = target, config, notes, launch

    def render(self, plan_name: str) -> str:
        """YAML text: a header (launch command, unexpressible settings) then the config."""
        import yaml

        head = [
            f"# {self.target} config exported by `tuneplan export {plan_name} --to {self.target}`",
            f"# launch: {self.launch}",
        ]
        if self.notes:
            head.append("# NOT expressible in this format as planned (set by hand or accept the difference):")
            head += [f"#   - {n}" for n in self.notes]
        body = yaml.safe_dump(self.config, sort_keys=False, default_flow_style=False, width=100)
        return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------- shared helpers


def data_shape(plan, plan_dir: Optional[Path]) -> Optional[str]:
    """The row shape of the training file (text | prompt-completion | alpaca | messages), read from
    its first record the way the executor reads it; None when the file is absent or unreadable."""
    if plan.data is None or not plan.data.train_path:
        return None
    p = Path(plan.data.train_path).expanduser()
    if not p.exists() and plan_dir is not None and (plan_dir / p).exists():
        p = plan_dir / p
    if not p.is_file():
        return None
    from .data import _check_record, _raw_records

    try:
        for _, rec, err in _raw_records(p):
            if err:
                return None
            shape, _norm, problem = _check_record(rec)
            return None if problem else shape
    except Exception:  # noqa: BLE001 - a format hint only; unknown is reported as a note
        return None
    return None


def _file_format(path: str) -> str:
    """datasets' builder name for a data file (json covers JSONL)."""
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".parquet": "parquet"}.get(suffix, "json")


def _steps(t) -> tuple[Optional[float], Optional[int]]:
    """(epochs, max_steps): max_steps wins in the executor when both are set."""
    return (None, t.max_steps) if t.max_steps else (t.num_epochs, None)


def _warmup_steps(t) -> Optional[int]:
    """warmup_ratio as whole steps where the step count is known."""
    total = t.max_steps or t.planned_steps
    return math.ceil(t.warmup_ratio * total) if total else None


def _precision_flags(t) -> tuple[str, dict[str, bool]]:
    """(weights dtype to load, Trainer mixed-precision flags) for the plan's precision."""
    return {
        "bf16-mixed": ("float32", {"bf16": True, "fp16": False}),
        "bf16": ("bfloat16", {"bf16": True, "fp16": False}),
        "fp16-mixed": ("float32", {"bf16": False, "fp16": True}),
        "fp32": ("float32", {"bf16": False, "fp16": False}),
    }[t.precision]


def _common_notes(plan) -> list[str]:
    notes = []
    if plan.data is not None and plan.data.probe_path:
        notes.append(
            f"data.probe_path={plan.data.probe_path}: the forgetting probe is tuneplan's own "
            "measurement (no trainer evaluates it); run `tuneplan run` to measure forgetting"
        )
    else:
        notes.append("forgetting probe (eval loss on general text before/after): tuneplan's own measurement")
    notes.append(
        "memory prediction and peak-memory check (memory.*): tuneplan's own; each trainer "
        "allocates differently (see docs/export.md)"
    )
    return notes


def _split_targets(lora) -> tuple[list[str], list[str]]:
    """(module targets, fused expert parameters): a mixture-of-experts plan's
    ``experts.gate_up_proj`` / ``experts.down_proj`` are 3-D nn.Parameters (transformers >= 5),
    which peft adapts through ``target_parameters``, not ``target_modules``."""
    targets = list(lora.target_modules)
    fused = [x for x in targets if x.startswith("experts.")]
    return [x for x in targets if x not in fused], fused


def _fused_notes(plan, tool: str, targets_taken: bool) -> list[str]:
    """What a trainer does differently with a mixture-of-experts plan's fused expert stacks."""
    if plan.lora is None:
        return []
    _, fused = _split_targets(plan.lora)
    if not fused:
        return []
    notes = []
    if not targets_taken:
        notes.append(
            f"lora.target_modules {fused}: fused expert parameters, adapted by peft's "
            f"target_parameters, which {tool}'s documented keys do not take; left out of the "
            "target list (it would match no nn.Linear)"
        )
    if plan.quantization is not None:
        notes.append(
            f"{fused}: transformers' bitsandbytes integration quantises nn.Linear layers only, so "
            f"under {tool} the fused expert stacks stay in the load dtype (tuneplan's executor "
            "stores them 4-bit): memory above the plan's estimate"
        )
    return notes


def _distributed_note(plan, how: str) -> list[str]:
    d = plan.distributed
    if d.num_processes <= 1:
        return []
    return [
        f"distributed: {d.num_processes} processes on {d.num_nodes} node(s), strategy {d.strategy}"
        f"{', cpu offload' if d.cpu_offload else ''}: {how}"
    ]


# --------------------------------------------------------------------------- TRL


def to_trl(plan, plan_dir: Optional[Path]) -> Exported:
    """`trl sft --config FILE`: ScriptArguments + SFTConfig + ModelConfig + DatasetMixtureConfig."""
    t, lora, q, d = plan.training, plan.lora, plan.quantization, plan.distributed
    notes = _common_notes(plan)
    dtype, mixed = _precision_flags(t)
    epochs, max_steps = _steps(t)
    cfg: dict[str, Any] = {"model_name_or_path": plan.inputs.model.name}
    if q is not None:
        # trl's get_quantization_config uses `dtype` as bnb_4bit_compute_dtype, so the two are one key.
        dtype = q.compute_dtype
        cfg.update(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, use_bnb_nested_quant=q.double_quant)
        if t.precision == "bf16-mixed":
            notes.append(
                "QLoRA with fp32 non-quantised weights and bf16 compute: TRL's CLI has one `dtype` "
                f"for both (trl get_quantization_config); exported dtype={dtype}"
            )
    cfg["dtype"] = dtype
    cfg["attn_implementation"] = HF_ATTN[t.attention]
    if lora is not None:
        cfg.update(
            use_peft=True,
            lora_r=lora.rank,
            lora_alpha=_num(lora.alpha),
            lora_dropout=lora.dropout,
            use_rslora=lora.use_rslora,
            lora_task_type="CAUSAL_LM",
        )
        modules, fused = _split_targets(lora)
        cfg["lora_target_modules"] = modules
        if fused:
            cfg["lora_target_parameters"] = fused
        notes += _fused_notes(plan, "TRL", targets_taken=True)
    if plan.data is not None and plan.data.train_path:
        sets = [
            {"path": _file_format(plan.data.train_path), "data_files": plan.data.train_path, "split": "train"}
        ]
        cfg["datasets"] = sets
        if plan.data.eval_path:
            notes.append(
                f"data.eval_path={plan.data.eval_path}: the `datasets` mixture concatenates its "
                "entries into one training set; pass the eval file through a Python script "
                "(SFTTrainer(eval_dataset=...)) or a dataset repo with a test split"
            )
        else:
            cfg["test_split_size"] = plan.data.eval_fraction
            cfg["eval_strategy"] = "epoch"
    else:
        notes.append("data.train_path is not set: add `datasets:` (path/data_files) or `dataset_name`")
    shape = data_shape(plan, plan_dir)
    cfg.update(
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers >= 5: a float in [0, 1) is a ratio of total steps
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_grad_norm=t.max_grad_norm,
        weight_decay=t.weight_decay,
        optim=HF_OPTIM[t.optimizer],
        **mixed,
        gradient_checkpointing=t.gradient_checkpointing,
        max_length=t.seq_len,
        seed=t.seed,
        trust_remote_code=plan.trust_remote_code,
    )
    if epochs is not None:
        cfg["num_train_epochs"] = epochs
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    if shape in ("prompt-completion",):
        cfg["completion_only_loss"] = True
    elif shape == "messages":
        cfg["assistant_only_loss"] = True
        notes.append(
            "messages rows: assistant_only_loss needs a chat template with {% generation %} "
            "markers; tuneplan masks assistant turns with any template"
        )
    elif shape == "alpaca":
        notes.append(
            "instruction/input/output rows: TRL has no Alpaca formatter; convert rows to "
            "prompt/completion (tuneplan's Alpaca prompt) first"
        )
    elif shape is None and plan.data is not None and plan.data.train_path:
        notes.append(
            "the training file could not be read here, so the loss masking "
            "(completion_only_loss / assistant_only_loss) is left at TRL's defaults"
        )
    notes += _distributed_note(
        plan,
        f"`accelerate launch --num_processes {d.num_processes} -m trl.cli sft "
        "--config FILE`"
        + (f" with an accelerate config for {d.strategy}" if d.strategy not in ("none", "ddp") else ""),
    )
    if d.strategy == "fsdp":
        cfg["fsdp"] = "full_shard auto_wrap" + (" offload" if d.cpu_offload else "")
    elif d.strategy.startswith("deepspeed"):
        stage = 3 if d.strategy.endswith("3") else 2
        cfg["deepspeed"] = {
            "zero_optimization": {
                "stage": stage,
                **({"offload_optimizer": {"device": "cpu"}} if d.cpu_offload else {}),
            },
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
        }
    launch = (
        "trl sft --config FILE"
        if d.num_processes <= 1
        else f"accelerate launch --num_processes {d.num_processes} $(which trl) sft --config FILE"
    )
    return Exported("trl", cfg, notes, launch)


# --------------------------------------------------------------------------- Axolotl

_AXOLOTL_SCHED = {
    "cosine": "cosine",
    "linear": "linear",
    "constant": "constant",
    "constant_with_warmup": "constant_with_warmup",
}


def to_axolotl(plan, plan_dir: Optional[Path]) -> Exported:
    """`axolotl train FILE` (docs.axolotl.ai config reference)."""
    t, lora, q, d = plan.training, plan.lora, plan.quantization, plan.distributed
    notes = _common_notes(plan)
    epochs, max_steps = _steps(t)
    cfg: dict[str, Any] = {"base_model": plan.inputs.model.name, "trust_remote_code": plan.trust_remote_code}
    if lora is not None:
        cfg["adapter"] = "qlora" if q is not None else "lora"
        cfg.update(
            lora_r=lora.rank,
            lora_alpha=_num(lora.alpha),
            lora_dropout=lora.dropout,
            lora_target_modules=_split_targets(lora)[0],
            peft_use_rslora=lora.use_rslora,
        )
        notes += _fused_notes(plan, "Axolotl", targets_taken=False)
    if q is not None:
        cfg["load_in_4bit"] = True
        cfg["bnb_config_kwargs"] = {
            "bnb_4bit_quant_type": q.quant_type,
            "bnb_4bit_use_double_quant": q.double_quant,
        }
        if (
            q.compute_dtype
            != {"bf16-mixed": "bfloat16", "bf16": "bfloat16", "fp16-mixed": "float16", "fp32": "float32"}[
                t.precision
            ]
        ):
            notes.append(
                f"quantization.compute_dtype={q.compute_dtype}: Axolotl derives the 4-bit compute "
                "dtype from bf16/fp16"
            )
    shape = data_shape(plan, plan_dir)
    if plan.data is not None and plan.data.train_path:
        ds: dict[str, Any] = {"path": plan.data.train_path, "ds_type": _file_format(plan.data.train_path)}
        if shape == "alpaca":
            ds["type"] = "alpaca"
        elif shape == "messages":
            ds.update(type="chat_template", field_messages="messages", roles_to_train=["assistant"])
        elif shape == "text":
            ds.update(type="completion", field="text")
        elif shape == "prompt-completion":
            ds["type"] = {
                "field_instruction": "prompt",
                "field_output": "completion",
                "format": "{instruction}",
                "no_input_format": "{instruction}",
            }
        else:
            notes.append("the training file could not be read here: set datasets[0].type by hand")
        cfg["datasets"] = [ds]
        if plan.data.eval_path:
            cfg["test_datasets"] = [{**ds, "path": plan.data.eval_path, "split": "train"}]
        else:
            cfg["val_set_size"] = plan.data.eval_fraction
    else:
        notes.append("data.train_path is not set: add `datasets:`")
    cfg.update(
        sequence_len=t.seq_len,
        sample_packing=False,
        micro_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler=_AXOLOTL_SCHED[t.lr_scheduler],
        warmup_ratio=t.warmup_ratio,
        optimizer=HF_OPTIM[t.optimizer],
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        gradient_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
    )
    if epochs is not None:
        cfg["num_epochs"] = epochs
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    if t.precision in ("bf16-mixed", "bf16"):
        cfg["bf16"] = True
        if t.precision == "bf16-mixed" and q is None:
            notes.append(
                "precision bf16-mixed (fp32 master weights): Axolotl loads the model in bf16 when "
                "bf16 is on; fp32 masters are not a setting"
            )
    elif t.precision == "fp16-mixed":
        cfg["fp16"] = True
    else:
        cfg.update(bf16=False, fp16=False, tf32=False)
    if t.attention == "flash":
        cfg["flash_attention"] = True
    elif t.attention == "sdpa":
        cfg["sdp_attention"] = True
    if d.strategy == "fsdp":
        cfg["fsdp"] = ["full_shard", "auto_wrap"] + (["offload"] if d.cpu_offload else [])
        cfg["fsdp_config"] = {"fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}
    elif d.strategy.startswith("deepspeed"):
        stage = 3 if d.strategy.endswith("3") else 2
        cfg["deepspeed"] = f"deepspeed_configs/zero{stage}{'_offload' if d.cpu_offload else ''}.json"
        notes.append(
            f"deepspeed: Axolotl takes a JSON file path; {cfg['deepspeed']} is the one Axolotl ships"
        )
    notes += _distributed_note(
        plan, f"`accelerate launch --num_processes {d.num_processes} -m axolotl.cli.train FILE`"
    )
    cfg["output_dir"] = "./outputs/tuneplan-export"
    return Exported("axolotl", cfg, notes, "axolotl train FILE")


# --------------------------------------------------------------------------- LLaMA-Factory


def to_llamafactory(plan, plan_dir: Optional[Path]) -> Exported:
    """`llamafactory-cli train FILE` (examples/train_lora/*.yaml; hparams/finetuning_args.py)."""
    t, lora, q, d = plan.training, plan.lora, plan.quantization, plan.distributed
    notes = _common_notes(plan)
    epochs, max_steps = _steps(t)
    shape = data_shape(plan, plan_dir)
    cfg: dict[str, Any] = {
        "model_name_or_path": plan.inputs.model.name,
        "trust_remote_code": plan.trust_remote_code,
        "stage": "pt" if shape == "text" else "sft",
        "do_train": True,
        "finetuning_type": "full" if lora is None else "lora",
    }
    if lora is not None:
        cfg.update(
            lora_rank=lora.rank,
            lora_alpha=_num(lora.alpha),
            lora_dropout=lora.dropout,
            lora_target=",".join(_split_targets(lora)[0]),
            use_rslora=lora.use_rslora,
        )
        notes += _fused_notes(plan, "LLaMA-Factory", targets_taken=False)
    if q is not None:
        cfg.update(
            quantization_bit=4,
            quantization_method="bnb",
            quantization_type=q.quant_type,
            double_quantization=q.double_quant,
        )
        if q.compute_dtype != (
            "bfloat16"
            if t.precision.startswith("bf16")
            else "float16"
            if t.precision.startswith("fp16")
            else "float32"
        ):
            notes.append(
                f"quantization.compute_dtype={q.compute_dtype}: LLaMA-Factory uses the compute "
                "dtype it infers from bf16/fp16"
            )
    if plan.data is not None and plan.data.train_path:
        cfg["dataset"] = "tuneplan_train"
        cfg["dataset_dir"] = "data"
        info = _llamafactory_dataset_info(plan.data.train_path, shape)
        notes.append(
            "LLaMA-Factory reads datasets by name from dataset_dir/dataset_info.json; add: "
            + json.dumps({"tuneplan_train": info})
        )
        if plan.data.eval_path:
            cfg["eval_dataset"] = "tuneplan_eval"
            notes.append(
                "and the eval file: "
                + json.dumps({"tuneplan_eval": {**info, "file_name": plan.data.eval_path}})
            )
        else:
            cfg["val_size"] = plan.data.eval_fraction
    else:
        notes.append("data.train_path is not set: add `dataset:` (a name in dataset_info.json)")
    cfg["template"] = "empty" if shape in ("text", "prompt-completion") else "default"
    if shape in ("messages", "alpaca", None):
        notes.append(
            "template: LLaMA-Factory needs its own name for the model's chat template "
            "(e.g. llama3, qwen3, gemma3); `default` is a placeholder"
        )
    cfg.update(
        cutoff_len=t.seq_len,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_ratio=t.warmup_ratio,
        optim=HF_OPTIM[t.optimizer],
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        disable_gradient_checkpointing=not t.gradient_checkpointing,
        seed=t.seed,
        flash_attn={"eager": "disabled", "sdpa": "sdpa", "flash": "fa2"}[t.attention],
    )
    if epochs is not None:
        cfg["num_train_epochs"] = epochs
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    if t.precision in ("bf16-mixed", "bf16"):
        cfg["bf16"] = True
        if t.precision == "bf16":
            cfg["pure_bf16"] = True
    elif t.precision == "fp16-mixed":
        cfg["fp16"] = True
    if d.strategy.startswith("deepspeed"):
        stage = 3 if d.strategy.endswith("3") else 2
        cfg["deepspeed"] = f"examples/deepspeed/ds_z{stage}{'_offload' if d.cpu_offload else ''}_config.json"
    elif d.strategy == "fsdp":
        notes.append(
            "fsdp: LLaMA-Factory takes FSDP through an accelerate config "
            "(examples/accelerate/fsdp_config.yaml), not this file"
        )
    notes += _distributed_note(plan, f"`FORCE_TORCHRUN=1 NNODES={d.num_nodes} llamafactory-cli train FILE`")
    cfg["output_dir"] = "saves/tuneplan-export"
    return Exported("llamafactory", cfg, notes, "llamafactory-cli train FILE")


def _llamafactory_dataset_info(path: str, shape: Optional[str]) -> dict:
    """The dataset_info.json entry for the training file (LLaMA-Factory data/README.md)."""
    info: dict[str, Any] = {"file_name": path}
    if shape == "messages":
        info.update(
            formatting="sharegpt",
            columns={"messages": "messages"},
            tags={
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        )
    elif shape == "prompt-completion":
        info["columns"] = {"prompt": "prompt", "response": "completion"}
    elif shape == "text":
        info["columns"] = {"prompt": "text"}
    else:  # alpaca is the default formatting
        info["columns"] = {"prompt": "instruction", "query": "input", "response": "output"}
    return info


# --------------------------------------------------------------------------- torchtune

# (family, rounded size in B) -> torchtune builder module and name stem (torchtune/models/*/_model_builders.py)
_TT_BUILDERS = {
    ("llama", 1): ("llama3_2", "llama3_2_1b"),
    ("llama", 3): ("llama3_2", "llama3_2_3b"),
    ("llama", 8): ("llama3_1", "llama3_1_8b"),
    ("llama", 71): ("llama3_1", "llama3_1_70b"),
    ("llama", 406): ("llama3_1", "llama3_1_405b"),
    ("llama", 7): ("llama2", "llama2_7b"),
    ("llama", 13): ("llama2", "llama2_13b"),
    ("llama", 69): ("llama2", "llama2_70b"),
    ("mistral", 7): ("mistral", "mistral_7b"),
    ("gemma2", 3): ("gemma2", "gemma2_2b"),
    ("gemma2", 9): ("gemma2", "gemma2_9b"),
    ("gemma2", 27): ("gemma2", "gemma2_27b"),
    ("qwen2", 0): ("qwen2_5", "qwen2_5_0_5b"),
    ("qwen2", 2): ("qwen2_5", "qwen2_5_1_5b"),
    ("qwen2", 3): ("qwen2_5", "qwen2_5_3b"),
    ("qwen2", 8): ("qwen2_5", "qwen2_5_7b"),
    ("qwen2", 15): ("qwen2_5", "qwen2_5_14b"),
    ("qwen2", 33): ("qwen2_5", "qwen2_5_32b"),
    ("qwen2", 73): ("qwen2_5", "qwen2_5_72b"),
    ("qwen3", 1): ("qwen3", "qwen3_0_6b"),
    ("qwen3", 2): ("qwen3", "qwen3_1_7b"),
    ("qwen3", 4): ("qwen3", "qwen3_4b"),
    ("qwen3", 8): ("qwen3", "qwen3_8b"),
    ("qwen3", 15): ("qwen3", "qwen3_14b"),
    ("qwen3", 33): ("qwen3", "qwen3_32b"),
    ("phi3", 4): ("phi3", "phi3_mini"),
    ("phi3", 15): ("phi4", "phi4_14b"),
}
# tuneplan/HF module names -> torchtune's (attention) and whether they are MLP projections
_TT_ATTN = {
    "q_proj": "q_proj",
    "k_proj": "k_proj",
    "v_proj": "v_proj",
    "o_proj": "output_proj",
    "qkv_proj": "q_proj",
    "c_attn": "q_proj",
    "c_proj": "output_proj",
}
_TT_MLP = {"gate_proj", "up_proj", "down_proj", "gate_up_proj", "c_fc"}
# torchtune builder module -> (tokenizer builder, tokenizer file(s) in the HF download, checkpointer model_type)
_TT_TOKENIZER = {
    "llama3_1": ("torchtune.models.llama3.llama3_tokenizer", {"path": "original/tokenizer.model"}, "LLAMA3"),
    "llama3_2": (
        "torchtune.models.llama3.llama3_tokenizer",
        {"path": "original/tokenizer.model"},
        "LLAMA3_2",
    ),
    "llama2": ("torchtune.models.llama2.llama2_tokenizer", {"path": "tokenizer.model"}, "LLAMA2"),
    "mistral": ("torchtune.models.mistral.mistral_tokenizer", {"path": "tokenizer.model"}, "MISTRAL"),
    "gemma2": ("torchtune.models.gemma.gemma_tokenizer", {"path": "tokenizer.model"}, "GEMMA2"),
    "qwen2_5": (
        "torchtune.models.qwen2_5.qwen2_5_tokenizer",
        {"path": "vocab.json", "merges_file": "merges.txt"},
        "QWEN2",
    ),
    "qwen3": (
        "torchtune.models.qwen3.qwen3_tokenizer",
        {"path": "vocab.json", "merges_file": "merges.txt"},
        "QWEN3",
    ),
    "phi3": ("torchtune.models.phi3.phi3_mini_tokenizer", {"path": "tokenizer.model"}, "PHI3_MINI"),
    "phi4": (
        "torchtune.models.phi4.phi4_tokenizer",
        {"path": "vocab.json", "merges_file": "merges.txt"},
        "PHI4",
    ),
}
_TT_SCHED = {"cosine": "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup"}


def to_torchtune(plan, plan_dir: Optional[Path]) -> Exported:
    """A torchtune recipe config (recipes/configs/<family>/<size>_lora.yaml layout)."""
    t, lora, q, d = plan.training, plan.lora, plan.quantization, plan.distributed
    notes = _common_notes(plan)
    m = plan.inputs.model
    key = (m.family, round(m.total_params / 1e9))
    module, stem = _TT_BUILDERS.get(key, (None, None))
    if stem is None:
        module, stem = m.family, f"{m.family}_CUSTOM"
        notes.append(
            f"model: torchtune has no builder known to tuneplan for {m.name} "
            f"({m.family}, {m.total_params / 1e9:.1f}B); replace {stem} with one from "
            "torchtune.models"
        )
    prefix = "" if lora is None else ("qlora_" if q is not None else "lora_")
    model: dict[str, Any] = {"_component_": f"torchtune.models.{module}.{prefix}{stem}"}
    if lora is not None:
        attn = [_TT_ATTN[x] for x in lora.target_modules if x in _TT_ATTN]
        mlp = [x for x in lora.target_modules if x in _TT_MLP]
        other = [x for x in lora.target_modules if x not in _TT_ATTN and x not in _TT_MLP]
        model.update(
            lora_attn_modules=list(dict.fromkeys(attn)),
            apply_lora_to_mlp=bool(mlp),
            apply_lora_to_output=False,
            lora_rank=lora.rank,
            lora_alpha=_num(lora.alpha),
            lora_dropout=lora.dropout,
        )
        if mlp and set(mlp) != {x for x in _TT_MLP if x in m.module_names}:
            notes.append(
                f"lora.target_modules MLP subset {mlp}: torchtune's apply_lora_to_mlp wraps all "
                "MLP projections (w1, w2, w3) or none"
            )
        if m.family in ("phi3",) or "qkv_proj" in lora.target_modules:
            notes.append(
                "fused qkv_proj: torchtune's Phi builders split q/k/v; lora_attn_modules lists q_proj"
            )
        if other:
            notes.append(f"lora.target_modules {other}: no torchtune equivalent")
        notes += _fused_notes(plan, "torchtune", targets_taken=True)
        if lora.use_rslora:
            notes.append("lora.use_rslora: torchtune's LoRA builders have no rsLoRA scaling")
    if q is not None:
        notes.append(
            f"quantization: torchtune's qlora_* builders use torchao NF4 with double "
            f"quantization always on; quant_type={q.quant_type}, double_quant={q.double_quant} "
            "and compute_dtype are not settings"
        )
    epochs, max_steps = _steps(t)
    shape = data_shape(plan, plan_dir)
    cfg: dict[str, Any] = {"output_dir": "./outputs/tuneplan-export", "model": model}
    hf_dir = f"/tmp/{m.name.rsplit('/', 1)[-1]}"
    tok_component, tok_files, model_type = _TT_TOKENIZER.get(
        module, (f"torchtune.models.{module}.{module}_tokenizer", {"path": "tokenizer.model"}, module.upper())
    )
    cfg["tokenizer"] = {
        "_component_": tok_component,
        **{k: f"{hf_dir}/{v}" for k, v in tok_files.items()},
        "max_seq_len": t.seq_len,
    }
    cfg["checkpointer"] = {
        "_component_": "torchtune.training.FullModelHFCheckpointer",
        "checkpoint_dir": hf_dir,
        "checkpoint_files": {"filename_format": "model-{}-of-{}.safetensors", "max_filename": "AUTO"},
        "output_dir": "${output_dir}",
        "model_type": model_type,
    }
    notes.append(
        f"checkpointer/tokenizer paths: `tune download {m.name} --output-dir {hf_dir}` first; "
        "the shard count and tokenizer file name vary by model"
    )
    if plan.data is not None and plan.data.train_path:
        fmt = _file_format(plan.data.train_path)
        if shape == "text":
            ds = {
                "_component_": "torchtune.datasets.text_completion_dataset",
                "source": fmt,
                "data_files": plan.data.train_path,
                "column": "text",
                "split": "train",
            }
        elif shape == "messages":
            ds = {
                "_component_": "torchtune.datasets.chat_dataset",
                "source": fmt,
                "data_files": plan.data.train_path,
                "conversation_column": "messages",
                "conversation_style": "openai",
                "split": "train",
                "train_on_input": False,
            }
        elif shape == "prompt-completion":
            ds = {
                "_component_": "torchtune.datasets.instruct_dataset",
                "source": fmt,
                "data_files": plan.data.train_path,
                "column_map": {"input": "prompt", "output": "completion"},
                "split": "train",
                "train_on_input": False,
            }
        else:
            ds = {
                "_component_": "torchtune.datasets.alpaca_dataset",
                "source": fmt,
                "data_files": plan.data.train_path,
                "split": "train",
                "train_on_input": False,
            }
        ds["packed"] = False
        cfg["dataset"] = ds
        notes.append(
            "in-domain eval before/after (data.eval_path / eval_fraction): torchtune recipes "
            "train only; validation is not part of the LoRA/full recipes' configs"
        )
    cfg["seed"] = t.seed
    cfg["shuffle"] = True
    cfg["batch_size"] = t.per_device_batch_size
    cfg["epochs"] = math.ceil(epochs) if epochs is not None else 1
    if epochs is not None and epochs != math.ceil(epochs):
        notes.append(f"training.num_epochs={epochs}: torchtune counts whole epochs; use max_steps_per_epoch")
    if max_steps is not None:
        cfg["max_steps_per_epoch"] = max_steps
    optim = {
        "adamw": "torch.optim.AdamW",
        "adamw-8bit": "bitsandbytes.optim.AdamW8bit",
        "paged-adamw-8bit": "bitsandbytes.optim.PagedAdamW8bit",
        "paged-adamw-32bit": "bitsandbytes.optim.PagedAdamW",
    }[t.optimizer]
    cfg["optimizer"] = {"_component_": optim, "lr": t.learning_rate, "weight_decay": t.weight_decay}
    warm = _warmup_steps(t)
    sched = _TT_SCHED.get(t.lr_scheduler)
    if sched is None:
        sched = "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup"
        notes.append(
            f"training.lr_scheduler={t.lr_scheduler}: torchtune ships the cosine-with-warmup "
            "schedule only; exported cosine"
        )
    cfg["lr_scheduler"] = {"_component_": sched, "num_warmup_steps": warm if warm is not None else 100}
    if warm is None:
        notes.append(
            f"training.warmup_ratio={t.warmup_ratio}: torchtune takes warmup in steps and the "
            "step count is unknown here (num_epochs); 100 is a placeholder"
        )
    cfg["loss"] = {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"}
    cfg["gradient_accumulation_steps"] = t.gradient_accumulation_steps
    cfg["clip_grad_norm"] = t.max_grad_norm
    cfg["compile"] = False
    cfg["device"] = "cpu" if plan.inputs.hardware.kind == "cpu" else "cuda"
    cfg["dtype"] = {"bf16-mixed": "bf16", "bf16": "bf16", "fp16-mixed": "fp32", "fp32": "fp32"}[t.precision]
    if t.precision == "bf16-mixed":
        notes.append("precision bf16-mixed: torchtune trains in one dtype (bf16 weights, no fp32 masters)")
    if t.precision == "fp16-mixed":
        notes.append("precision fp16-mixed: torchtune has no fp16 training; exported fp32")
    cfg["enable_activation_checkpointing"] = t.gradient_checkpointing
    if t.attention == "eager":
        notes.append("attention eager: torchtune always uses SDPA / flex attention")
    if t.optimizer != "adamw":
        cfg["optimizer_in_bwd"] = False
    recipe = (
        ("lora" if lora is not None else "full")
        + "_finetune_"
        + ("single_device" if d.num_processes <= 1 else "distributed")
    )
    if d.strategy.startswith("deepspeed"):
        notes.append(f"strategy {d.strategy}: torchtune shards with FSDP2 in the *_distributed recipes")
    if d.cpu_offload:
        cfg["fsdp_cpu_offload"] = True
    launch = (
        f"tune run {recipe} --config FILE"
        if d.num_processes <= 1
        else f"tune run --nnodes {d.num_nodes} --nproc_per_node {d.num_processes // d.num_nodes} "
        f"{recipe} --config FILE"
    )
    return Exported("torchtune", cfg, notes, launch)


def _num(x: float) -> Any:
    """16.0 -> 16 (trainers type alpha as int or float; whole values read the same)."""
    return int(x) if float(x).is_integer() else x


EXPORTERS: dict[str, Callable] = {
    "trl": to_trl,
    "axolotl": to_axolotl,
    "llamafactory": to_llamafactory,
    "torchtune": to_torchtune,
}


def export_plan(plan_path: str, target: str) -> Exported:
    """Load a plan file and export it; InputError for a bad plan or target."""
    from .runner import load_plan

    if target not in EXPORTERS:
        raise InputError.one("--to", f"unknown target {target!r}", f"use one of {', '.join(TARGETS)}")
    plan, plan_file, _ = load_plan(plan_path)
    if not plan.feasible:
        raise InputError.one(
            str(plan_path),
            "the plan is infeasible (nothing fits)",
            "re-advise with one of the plan's ways_out, then export",
        )
    return EXPORTERS[target](plan, plan_file.parent if plan_file else None)
