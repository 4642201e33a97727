"""benchmarks/vs_trl.py's matched settings: the SFTConfig it builds trains as each example plan
says (no training here; the benchmark itself compares the loss curves)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from tuneplan.base.planio import read_plan

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "benchmarks" / "vs_trl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _plan(method: str):
    return read_plan(ROOT / "examples" / "plans" / f"{method}.json").plan


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_matched_config_has_the_plans_settings(method, tmp_path):
    vs = _bench()
    plan = _plan(method)
    cfg = vs.matched_sft_config(plan, 8, str(tmp_path))
    assert vs.mismatches(cfg, plan, 8) == []
    t = plan.training
    assert cfg["learning_rate"] == t.learning_rate and cfg["lr_scheduler_type"] == t.lr_scheduler
    assert cfg["max_length"] == t.seq_len == 72
    assert cfg["max_steps"] == 8 and cfg["per_device_train_batch_size"] == 8
    assert cfg["bf16"] is False and cfg["fp16"] is False  # TRL's bf16 default off: the plan is fp32
    assert cfg["gradient_checkpointing"] is False  # TRL's default is on; the plans have it off
    assert cfg["completion_only_loss"] is True and cfg["train_sampling_strategy"] == "sequential"
    assert cfg["save_strategy"] == "no" and cfg["logging_steps"] == 1
    assert not any(k.startswith(("lora_", "load_in", "bnb_")) for k in cfg)  # model-side keys dropped


def test_mismatches_names_a_setting_that_differs(tmp_path):
    vs = _bench()
    plan = _plan("lora")
    cfg = vs.matched_sft_config(plan, 8, str(tmp_path))
    cfg["learning_rate"] *= 2
    cfg["warmup_steps"] = 3
    bad = vs.mismatches(cfg, plan, 8)
    assert len(bad) == 2
    assert bad[0].startswith("learning_rate: plan 0.00033") and bad[1].startswith("warmup_steps: plan 1")


def test_trl_reads_the_matched_config(tmp_path):
    pytest.importorskip("trl")
    from trl import SFTConfig

    vs = _bench()
    plan = _plan("full")
    args = SFTConfig(**vs.matched_sft_config(plan, 10, str(tmp_path)))
    assert args.get_warmup_steps(10) == math.ceil(plan.training.warmup_ratio * 10) == 1
    assert (args.bf16, args.gradient_checkpointing, args.optim) == (False, False, "adamw_torch")
    assert args.weight_decay == 0.01 and args.max_grad_norm == 1.0 and args.seed == 1234
