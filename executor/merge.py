"""merge_run: fold a run's LoRA adapter into its base model and save plain safetensors weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError


def merge_run(
    run_dir: str | Path, out_dir: Optional[str | Path] = None, *, trust_remote_code: bool = False
) -> Path:
    """Merge the LoRA/QLoRA adapter of `run_dir` into its base (peft merge_and_unload).

    The base is loaded unquantised in float32 from the directory the adapter was trained on,
    else from the plan's model name. For QLoRA runs this is the usual merge into the original
    weights: it differs from the trained NF4 model by the 4-bit quantisation error. Saves safetensors + tokenizer to out_dir (default `<run_dir>/merged`).
    InputError for a full fine-tuning run, a missing adapter, or a missing base model.
    ``trust_remote_code`` is the command line's ``--trust-remote-code`` (the run's plan.json
    never turns it on: executor/remote_code.py).
    """
    import torch

    from .loading import load_tokenizer
    from .models import resolve_model_dir
    from .runner import load_plan

    run = Path(run_dir).expanduser()
    plan_file = run / "plan.json"
    if not plan_file.is_file():
        raise InputError.one(str(run), "not a run directory (no plan.json)", "pass a directory under runs/")
    plan, _, _ = load_plan(plan_file, trust_remote_code=trust_remote_code)
    if plan.method == "full":
        raise InputError.one(
            str(run),
            "this is a full fine-tuning run: its weights are already complete in model/",
            f"use {run / 'model'} directly; merging applies to lora and qlora runs",
        )
    adapter = run / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise InputError.one(
            str(adapter),
            "no LoRA adapter here (the run may have failed or been interrupted)",
            "merge a run whose status is succeeded (see `tuneplan runs`)",
        )
    base_name = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if base_name and (Path(base_name) / "config.json").is_file():
        base_dir = Path(base_name)
    else:
        base_dir = resolve_model_dir(plan.inputs.model.name)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trust = plan.trust_remote_code
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, trust_remote_code=trust)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out = Path(out_dir).expanduser() if out_dir is not None else run / "merged"
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_dir
    load_tokenizer(tok_src, trust).save_pretrained(str(out))
    return out
