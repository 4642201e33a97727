"""Executor training: full / LoRA / QLoRA runs on a tiny Llama, memory, optimizers, merge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.base.errors import InputError
from tuneplan.executor import train as T
from tuneplan.executor.merge import merge_run
from tuneplan.executor.runner import run_plan
from tuneplan.schemas import RunResult


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return write_jsonl(d / "train.jsonl", overfit_rows(8)), write_jsonl(d / "eval.jsonl", overfit_rows(8))


STEPS = 20
CASES = {
    "full": dict(training={"optimizer": "adamw-8bit"}),
    "lora": dict(
        training={
            "gradient_accumulation_steps": 2,
            "per_device_batch_size": 2,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.1,
            "weight_decay": 0.01,
        }
    ),
    "qlora": dict(training={"gradient_checkpointing": True, "optimizer": "paged-adamw-32bit"}),
}


@pytest.fixture(scope="module")
def runs(tiny, overfit, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    results = {}
    for method, kw in CASES.items():
        training = {"max_steps": STEPS, **kw["training"]}
        plan = make_plan(
            method, str(tiny), train_path=str(overfit[0]), eval_path=str(overfit[1]), training=training
        )
        results[method] = run_plan(plan, db=str(out / "runs.duckdb"), output_dir=str(out), progress=False)
    return results


@pytest.mark.parametrize("method", list(CASES))
def test_run_trains_and_records_everything(runs, method):
    r = runs[method]
    assert r.status == "succeeded" and r.error is None and r.steps == STEPS
    run_dir = Path(r.run_dir)
    assert RunResult.model_validate_json((run_dir / "result.json").read_text()) == r
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert set(metrics[0]) == {
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens",
        "trained_tokens",
        "positions",
        "elapsed_s",
    }
    losses = [m["loss"] for m in metrics]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses
    assert r.eval_loss_after < r.eval_loss_before
    assert r.forgetting_loss_before is not None and r.forgetting_loss_after is not None
    assert r.tokens == sum(m["tokens"] for m in metrics) > 0 and r.tokens_per_second > 0
    assert r.wall_seconds > 0 and r.finished_at and r.hardware.startswith("cpu")
    assert 0 < r.trainable_params <= r.total_params
    assert (method == "full") == (r.trainable_params == r.total_params)
    assert r.artifact_bytes > 0 and (run_dir / ("model" if method == "full" else "adapter")).is_dir()
    assert set(r.versions) >= {"torch", "transformers", "peft", "bitsandbytes", "tuneplan"}
    m = r.measured
    assert m.device_kind == "cpu" and m.peak_bytes > 0
    assert m.peak_bytes >= m.params_bytes + m.grads_bytes + m.optimizer_bytes  # + runtime + activations
    assert m.peak_bytes >= m.params_bytes + m.optimizer_bytes + m.saved_tensors_peak_bytes
    assert min(m.params_bytes, m.grads_bytes, m.optimizer_bytes, m.saved_tensors_peak_bytes) > 0
    assert m.rss_peak_bytes > m.params_bytes


def test_memory_components_reflect_the_method(runs):
    full, lora, qlora = runs["full"].measured, runs["lora"].measured, runs["qlora"].measured
    assert qlora.params_bytes < lora.params_bytes  # 4-bit base
    assert lora.grads_bytes < full.grads_bytes  # adapters only
    # full uses 8-bit AdamW: 2 uint8 moments per large tensor, so < 8 bytes/param
    assert full.optimizer_bytes < 8 * runs["full"].trainable_params
    # checkpointing (qlora) keeps far less for backward than the plain lora run
    assert qlora.saved_tensors_peak_bytes < lora.saved_tensors_peak_bytes


def test_cpu_substitutions_are_recorded(runs):
    assert (
        "training.optimizer: paged-adamw-32bit -> adamw (paged optimizers need CUDA)"
        in runs["qlora"].substitutions
    )
    assert not any("optimizer" in s for s in runs["full"].substitutions)  # bnb 8-bit AdamW runs on CPU


def test_merge_lora_run_matches_adapter(runs, tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r = runs["lora"]
    out = merge_run(r.run_dir, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny))
    peft_model = PeftModel.from_pretrained(base, r.artifact_path).eval()
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(ids).logits, atol=1e-4)


def test_merge_rejects_full_runs_and_missing_adapters(runs, tmp_path):
    with pytest.raises(InputError, match="full fine-tuning run"):
        merge_run(runs["full"].run_dir)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs["qlora"].run_dir, broken)
    shutil.rmtree(broken / "adapter")
    with pytest.raises(InputError, match="no LoRA adapter"):
        merge_run(broken)


def test_gradient_accumulation_equals_the_larger_batch(tiny, overfit, tmp_path):
    """Loss is the mean over trained tokens of the whole step, so 2 x 2 micro-batches == 1 x 4."""
    losses = []
    for bs, ga in ((4, 1), (2, 2)):
        plan = make_plan(
            "lora",
            str(tiny),
            train_path=str(overfit[0]),
            eval_path=str(overfit[1]),
            training={"max_steps": 3, "per_device_batch_size": bs, "gradient_accumulation_steps": ga},
        )
        r = run_plan(plan, db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path), progress=False)
        metrics = (tmp_path / r.run_id / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(line)["loss"] for line in metrics])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_total_steps_from_epochs_and_override(tiny):
    t = make_plan(
        "lora",
        str(tiny),
        training={
            "max_steps": None,
            "num_epochs": 2,
            "per_device_batch_size": 4,
            "gradient_accumulation_steps": 2,
        },
    ).training
    assert T.total_steps(t, n_train=30) == 8  # 2 epochs x 8 micro-batches / 2 per step
    assert T.total_steps(t, n_train=30, override=3) == 3


def test_schedulers_warm_up_and_decay(tiny):
    t = make_plan(
        "lora", str(tiny), training={"lr_scheduler": "linear", "warmup_ratio": 0.25, "learning_rate": 1e-3}
    ).training
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=t.learning_rate)
    sched = T.build_scheduler(opt, t, 8)
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0 and lrs[2] == pytest.approx(1e-3) and lrs[-1] < lrs[2]


def test_bnb_8bit_optimizer_on_cpu_steps(tiny):
    import bitsandbytes as bnb

    p = torch.nn.Parameter(torch.randn(128, 128))
    model = torch.nn.Module()
    model.register_parameter("w", p)
    t = make_plan("full", str(tiny), training={"optimizer": "adamw-8bit"}).training
    opt, subs = T.build_optimizer(model, t, torch.device("cpu"))
    assert isinstance(opt, bnb.optim.AdamW8bit) and subs == []
    before = p.detach().clone()
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["state1"].dtype == torch.uint8
    assert torch.all(p.detach() < before)
