"""Several processes: launch dry runs (command + accelerate config) for every strategy and for
several machines, real 2-process DDP and FSDP runs on CPU (gloo) recorded once, a failure on rank 1
recorded as failed, and what the advisor plans on 8 x H100.

The real runs use the tiny local Llama from exec_fixtures (2 steps, a few seconds of training
each; most of their time is process start-up and imports), so they are not marked slow.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import duckdb
import pytest
import yaml

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.advisor import advise
from tuneplan.advisor.estimator import estimate
from tuneplan.advisor.inputs import Answers, build_inputs
from tuneplan.executor import distributed as D
from tuneplan.schemas import Distributed, GPUHardware
from helpers import cli

GIB = 1024**3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture
def train_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))


def _plan_file(
    tmp_path: Path,
    tiny: Path,
    train_file: Path,
    method: str = "lora",
    *,
    strategy: str = "none",
    n: int = 1,
    nodes: int = 1,
    offload: bool = False,
    gpu: bool = False,
    name: str = "plan.json",
) -> Path:
    plan = make_plan(
        method,
        str(tiny),
        train_path=str(train_file),
        training={"per_device_batch_size": 2, "max_steps": 2, "gradient_accumulation_steps": 2},
    )
    plan.distributed = Distributed(num_processes=n, strategy=strategy, num_nodes=nodes, cpu_offload=offload)
    if gpu:
        plan.inputs.hardware = GPUHardware(
            name="NVIDIA H100 80GB", memory_bytes=80 * GIB, count=n // nodes, nodes=nodes
        )
        # The memory block must be the estimate for the device it now names (the pre-flight re-checks it).
        plan.memory = estimate(
            plan.inputs.model,
            plan.memory.settings,
            capacity_bytes=80 * GIB,
            device="cuda",
            headroom_fraction=plan.memory.headroom_fraction,
        )
    path = tmp_path / name
    path.write_text(plan.model_dump_json(indent=2))
    return path


def _dry(capsys, *argv: str) -> tuple[list[str], dict, str]:
    """Run a dry run; return (the command's argv without the env prefix, the config, all output)."""
    assert cli("run", *argv, "--dry-run") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = lines.index("# command")
    argv_line = shlex.split(lines[i + 1])
    command = [a for a in argv_line if not (("=" in a) and a.split("=")[0].isupper())]
    config = yaml.safe_load("\n".join(lines[i + 3 :]))
    return command, config, out


# --------------------------------------------------------------------------------------------
# Dry runs


def test_dry_run_ddp_on_cpu(tmp_path, tiny, train_file, capsys):
    plan = _plan_file(tmp_path, tiny, train_file)
    command, cfg, out = _dry(capsys, str(plan), "--num-processes", "2", "--output", str(tmp_path / "runs"))
    assert command[1:4] == ["-m", "torch.distributed.run", "--nnodes"]
    assert command[command.index("--nproc_per_node") + 1] == "2"
    assert command[command.index("-m", 3) + 1] == "tuneplan.executor.distributed.worker"
    assert cfg["distributed_type"] == "MULTI_CPU" and cfg["use_cpu"] is True and cfg["num_processes"] == 2
    assert "effective batch = 2 x 2 x 2 = 8" in out
    assert "TUNEPLAN_STRATEGY=ddp" in out
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"


def test_dry_run_fsdp_gpu_plan(tmp_path, tiny, train_file, capsys):
    plan = _plan_file(tmp_path, tiny, train_file, "full", strategy="fsdp", n=8, offload=True, gpu=True)
    command, cfg, out = _dry(capsys, str(plan), "--model-path", str(tiny))
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "8"
    cfg_path = command[command.index("--config_file") + 1]
    assert cfg_path.endswith("accelerate_config.yaml")
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 8 and cfg["use_cpu"] is False
    fsdp = cfg["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True  # full shard
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"  # from the model
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_offload_params"] is True


@pytest.mark.parametrize("strategy,stage", [("deepspeed-zero2", 2), ("deepspeed-zero3", 3)])
def test_dry_run_deepspeed(tmp_path, tiny, train_file, capsys, strategy, stage):
    plan = _plan_file(
        tmp_path, tiny, train_file, "full", strategy=strategy, n=8, offload=stage == 3, gpu=True
    )
    command, cfg, _ = _dry(capsys, str(plan))
    assert cfg["distributed_type"] == "DEEPSPEED"
    ds = cfg["deepspeed_config"]
    assert ds["zero_stage"] == stage
    assert ds["gradient_accumulation_steps"] == 2 and ds["gradient_clipping"] == 1.0
    assert ds["offload_optimizer_device"] == ("cpu" if stage == 3 else "none")
    assert ds["offload_param_device"] == ("cpu" if stage == 3 else "none")
    assert ("zero3_save_16bit_model" in ds) == (stage == 3)


def test_dry_run_multi_node(tmp_path, tiny, train_file, capsys):
    plan = _plan_file(tmp_path, tiny, train_file, "full", strategy="fsdp", n=16, nodes=2, gpu=True)
    command, cfg, out = _dry(
        capsys,
        str(plan),
        "--machine-rank",
        "1",
        "--main-process-ip",
        "10.0.0.1",
        "--main-process-port",
        "29555",
    )
    assert cfg["num_machines"] == 2 and cfg["machine_rank"] == 1 and cfg["num_processes"] == 16
    assert cfg["main_process_ip"] == "10.0.0.1" and cfg["main_process_port"] == 29555
    for flag, value in [
        ("--num_machines", "2"),
        ("--machine_rank", "1"),
        ("--main_process_ip", "10.0.0.1"),
        ("--main_process_port", "29555"),
    ]:
        assert command[command.index(flag) + 1] == value
    assert "--machine-rank 0..1" in out


def test_dry_run_multi_node_on_cpu_uses_torchrun_rendezvous(tmp_path, tiny, train_file, capsys):
    plan = _plan_file(tmp_path, tiny, train_file)
    command, _, _ = _dry(
        capsys,
        str(plan),
        "--num-processes",
        "4",
        "--num-machines",
        "2",
        "--machine-rank",
        "1",
        "--main-process-ip",
        "10.0.0.1",
    )
    for flag, value in [
        ("--nnodes", "2"),
        ("--nproc_per_node", "2"),
        ("--node_rank", "1"),
        ("--master_addr", "10.0.0.1"),
        ("--master_port", "29500"),
    ]:
        assert command[command.index(flag) + 1] == value


def test_multi_node_without_main_address_is_bad_input(tmp_path, tiny, train_file, capsys):
    plan = _plan_file(tmp_path, tiny, train_file)
    assert cli("run", str(plan), "--num-processes", "4", "--num-machines", "2", "--dry-run") == 2
    assert "--main-process-ip" in capsys.readouterr().err


def test_deepspeed_on_cpu_is_bad_input(tmp_path, tiny, train_file, capsys):
    plan = _plan_file(tmp_path, tiny, train_file, "full", strategy="deepspeed-zero2", n=2)
    assert cli("run", str(plan), "--num-processes", "2", "--output", str(tmp_path / "runs")) == 2
    assert "needs CUDA GPUs" in capsys.readouterr().err


def test_generated_configs_load_in_accelerate(tmp_path):
    """accelerate's own loader accepts what we write, for every strategy."""
    from accelerate.commands.config.config_args import load_config_from_file

    from exec_fixtures import make_plan as mk

    plan = mk("full", "tiny")
    for strategy, want in [
        ("ddp", "MULTI_GPU"),
        ("fsdp", "FSDP"),
        ("deepspeed-zero2", "DEEPSPEED"),
        ("deepspeed-zero3", "DEEPSPEED"),
    ]:
        lay = D.Layout(
            num_processes=8, strategy=strategy, use_cpu=False, num_machines=2, main_process_ip="10.0.0.1"
        )
        path = tmp_path / f"{strategy}.yaml"
        path.write_text(D.dump_yaml(D.accelerate_config(plan, lay, ["LlamaDecoderLayer"])))
        cfg = load_config_from_file(str(path))
        assert str(cfg.distributed_type).endswith(want), strategy
        assert cfg.num_processes == 8 and cfg.num_machines == 2


def test_layer_classes_from_config(tiny):
    assert D.transformer_layer_classes(tiny) == ["LlamaDecoderLayer"]
    assert D.transformer_layer_classes(None, family="qwen2") == ["Qwen2DecoderLayer"]


def test_rank_detection(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (D.env_rank(), D.env_world_size(), D.env_local_rank()) == (3, 8, 1)
    assert D.shard(list(range(7)), 1, 2) == [1, 3, 5]


# --------------------------------------------------------------------------------------------
# Real runs on CPU (gloo)


def _rows(db: Path) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute("SELECT run_id, status, num_processes, strategy, steps, error, run_dir FROM runs")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def _run(tmp_path, plan: Path, *extra: str) -> int:
    return cli(
        "run",
        str(plan),
        "--num-processes",
        "2",
        "--output",
        str(tmp_path / "runs"),
        "--db",
        str(tmp_path / "runs.duckdb"),
        "--max-steps",
        "2",
        *extra,
    )


def test_ddp_two_processes_recorded_once(tmp_path, tiny, train_file, monkeypatch):
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    plan = _plan_file(tmp_path, tiny, train_file)
    assert _run(tmp_path, plan) == 0
    rows = _rows(tmp_path / "runs.duckdb")
    assert len(rows) == 1
    row = rows[0]
    assert (row["status"], row["num_processes"], row["strategy"], row["steps"]) == ("succeeded", 2, "ddp", 2)
    run_dir = Path(row["run_dir"])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["num_processes"] == 2 and result["measured"]["peak_bytes"] > 0
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2], "rank 0 alone writes metrics"
    # tokens are summed over both ranks: 2 ranks x accumulation 2 x micro-batch 2 sequences
    assert all(m["tokens"] > 0 for m in metrics)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert yaml.safe_load((run_dir / "accelerate_config.yaml").read_text())["distributed_type"] == "MULTI_CPU"
    assert not list(run_dir.glob("error-rank*.txt"))


def test_fsdp_two_processes_on_cpu(tmp_path, tiny, train_file, monkeypatch):
    """FSDP2 (fully_shard) runs on CPU with gloo in torch 2.13 / accelerate 1.15."""
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    plan = _plan_file(tmp_path, tiny, train_file, "full", strategy="fsdp", n=2)
    assert _run(tmp_path, plan) == 0
    (row,) = _rows(tmp_path / "runs.duckdb")
    assert (row["status"], row["num_processes"], row["strategy"]) == ("succeeded", 2, "fsdp")
    run_dir = Path(row["run_dir"])
    result = json.loads((run_dir / "result.json").read_text())
    m = result["measured"]
    # parameters are counted as this rank's shard: about half the model
    assert m["params_bytes"] < 0.75 * result["total_params"] * 4
    # peak_bytes is the meter's figure (runtime + live-tensor peak, max over ranks), not rebuilt
    # from the components: the runtime stays in it and is recorded beside it
    assert m["runtime_bytes"] >= 100 << 20 and m["peak_bytes"] > m["runtime_bytes"]
    assert m["peak_bytes"] - m["runtime_bytes"] >= m["params_bytes"]
    con = duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT runtime_bytes FROM runs").fetchone()[0] == m["runtime_bytes"]
    finally:
        con.close()
    from safetensors import safe_open

    with safe_open(str(run_dir / "model" / "model.safetensors"), "pt") as f:  # full weights saved
        assert sum(f.get_slice(k).get_shape()[0] > 0 for k in f.keys()) == len(list(f.keys()))


def test_measured_max_keeps_the_meters_figures():
    """measured_max takes the max over ranks of peak_bytes, runtime_bytes and the components as
    measured; under FSDP on CPU it scales only the components to the shard, never peak_bytes."""
    import types

    import torch

    from tuneplan.schemas.run import MeasuredMemory

    class Shard(torch.nn.Parameter):
        def to_local(self):  # this rank holds half of it
            return self.data[: self.shape[0] // 2]

    model = torch.nn.Module()
    model.w = Shard(torch.zeros(8, 4))
    measured = MeasuredMemory(
        device_kind="cpu",
        peak_bytes=10_000,
        runtime_bytes=4_000,
        params_bytes=128,
        grads_bytes=128,
        optimizer_bytes=256,
        saved_tensors_peak_bytes=64,
        rss_peak_bytes=20_000,
    )
    other_rank = {10_000: 12_000, 4_000: 4_500}  # the other rank's peak and runtime were higher
    fsdp = types.SimpleNamespace(strategy="fsdp", max_int=lambda v: max(v, other_rank.get(v, 0)))
    out = D.DistContext.measured_max(fsdp, measured, model)
    assert (out.peak_bytes, out.runtime_bytes) == (12_000, 4_500)  # not params+grads+opt+saved
    assert (out.params_bytes, out.grads_bytes, out.optimizer_bytes) == (64, 64, 128)
    assert (out.saved_tensors_peak_bytes, out.rss_peak_bytes) == (64, 20_000)
    ddp = types.SimpleNamespace(strategy="ddp", max_int=fsdp.max_int)
    assert D.DistContext.measured_max(ddp, measured, model).params_bytes == 128


def test_failure_on_rank_1_is_recorded_failed(tmp_path, tiny, train_file, monkeypatch, capsys):
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    monkeypatch.setenv(D.ENV_FAIL_RANK, "1")
    plan = _plan_file(tmp_path, tiny, train_file)
    assert _run(tmp_path, plan) == 1
    (row,) = _rows(tmp_path / "runs.duckdb")
    assert row["status"] == "failed" and row["num_processes"] == 2
    assert row["error"].startswith("rank 1: RuntimeError: forced failure on rank 1"), row["error"]
    err = capsys.readouterr().err
    assert "rank 1: RuntimeError: forced failure" in err
    # torchrun's own summary of the failure (ChildFailedError, its traceback) is in run.log only
    assert "ChildFailedError" not in err and "Traceback" not in err, err
    assert "ChildFailedError" in (Path(row["run_dir"]) / "run.log").read_text()


def test_launcher_routes_the_jobs_stderr_to_run_log_and_never_hides_a_crash(
    tmp_path, tiny, train_file, capsys
):
    """The launcher's two channels, with a stand-in for torchrun (no training): the job's stdout
    (the workers' own lines) reaches the user; its stderr (torchrun's agent, C++ warnings) goes
    to run.log; a crash that left no error file is quoted in the failure the user sees."""
    import argparse
    import sys

    from tuneplan.executor.distributed.launch import Launch, run_launch
    from tuneplan.executor.runlog import RUN_LOG

    plan = _plan_file(tmp_path, tiny, train_file)
    args = argparse.Namespace(num_processes=2, output=str(tmp_path / "runs"), db=str(tmp_path / "r.duckdb"))
    L = Launch(str(plan), args)
    job = (
        "import os, sys\n"
        "assert os.environ['TUNEPLAN_CONSOLE_ON_STDOUT'] == '1'\n"
        "print('step 1/2  loss 1.0000', flush=True)\n"
        "sys.stderr.write('W1202 10:15:40.385000 1 torch/distributed/elastic/agent/server/api.py:753] notice\\n')\n"
        "sys.stderr.write('[rank1]:[W1202 CPUAllocator.cpp:245] Memory block of unknown size\\n')\n"
        "sys.stderr.write('Fatal Python error: Segmentation fault\\n')\n"
        "sys.exit(1)\n"
    )
    L.command = [sys.executable, "-c", job]
    code, result = run_launch(L)
    err = capsys.readouterr().err
    assert code == 1 and result.status == "failed"
    assert "step 1/2  loss 1.0000" in err and "torch/distributed" not in err and "CPUAllocator" not in err, (
        err
    )
    log = (L.run_dir / RUN_LOG).read_text()
    assert "agent/server/api.py:753] notice" in log and "CPUAllocator.cpp" in log, log
    # no rank left an error file: the failure quotes the end of the job's stderr
    assert result.error.startswith("worker job exited with code 1: ") and "Segmentation fault" in result.error
    (row,) = _rows(tmp_path / "r.duckdb")
    assert row["status"] == "failed" and "Segmentation fault" in row["error"]


# --------------------------------------------------------------------------------------------
# Advisor: what 8 x H100 gets


def _advise(model: str, method: str, gpus: int = 8, nodes: int = 1):
    a = Answers(model=model, gpu="H100", gpus=gpus, nodes=nodes)
    a.task.update(domain_distance="far", forgetting_tolerance="high", seq_len=2048, batch_size=8 * nodes)
    a.pins["method"] = method
    return advise(build_inputs(a))


def test_advisor_ddp_when_replicas_fit():
    p = _advise("Llama-3.2-1B", "full")
    assert (p.distributed.strategy, p.distributed.cpu_offload, p.distributed.num_processes) == (
        "ddp",
        False,
        8,
    )


def test_advisor_zero2_when_enough():
    p = _advise("Llama-3.1-8B", "full")
    assert (p.distributed.strategy, p.distributed.cpu_offload) == ("deepspeed-zero2", False)
    assert p.feasible


def test_advisor_fsdp_for_70b_lora_and_for_full_ft_where_it_fits():
    lora = _advise("Llama-3.1-70B", "lora")
    assert (lora.distributed.strategy, lora.distributed.cpu_offload) == ("fsdp", False) and lora.feasible
    full = _advise("Llama-3.1-70B", "full", nodes=4)  # 32 H100s: 16 B/param / 32 fits in 80 GB
    assert (full.distributed.strategy, full.distributed.cpu_offload) == ("fsdp", False) and full.feasible
    assert full.distributed.num_nodes == 4 and full.distributed.num_processes == 32


def test_checkpoint_bytes_are_the_whole_model_states_when_sharded_or_offloaded():
    """A checkpoint holds every rank's share (FSDP's full state dict; DeepSpeed's per-rank files
    add up), so the plan's checkpoint_bytes is not the per-device shard, nor 0 when offloaded."""
    full = _advise("Llama-3.1-70B", "full", nodes=4)  # FSDP over 32 ranks, bf16-mixed AdamW
    # fp32 master weights (4 B) + AdamW m and v (8 B) for each of the 70.55e9 parameters; one
    # rank's share is 1/32 of that (8.8 GB + 17.6 GB) plus the all-gathered block it computes
    assert full.training.checkpoint_bytes == 12 * full.inputs.model.total_params
    assert full.memory.breakdown.optimizer_states * 32 == 8 * full.inputs.model.total_params
    offloaded = _advise("Llama-3.1-70B", "full")  # FSDP over 8 with the optimizer offloaded
    assert offloaded.distributed.cpu_offload and offloaded.memory.breakdown.optimizer_states == 0
    assert offloaded.training.checkpoint_bytes == full.training.checkpoint_bytes
    replicated = _advise("Llama-3.1-8B", "lora")  # DDP or one device: the estimate's own terms
    b = replicated.memory.breakdown
    assert replicated.training.checkpoint_bytes == b.adapter_weights + b.optimizer_states


def test_advisor_cpu_offload_only_when_needed():
    p = _advise("Llama-3.1-70B", "full")  # 70B x 16 B/param / 8 = 140 GB per H100 without offload
    assert (p.distributed.strategy, p.distributed.cpu_offload) == ("fsdp", True) and p.feasible
    assert any("host RAM" in w for w in p.warnings)
    assert any("CPU offload" in d.message for d in p.decisions if d.rule == "TP030")
    for model, method in [("Llama-3.2-1B", "full"), ("Llama-3.1-8B", "full"), ("Llama-3.1-70B", "lora")]:
        assert _advise(model, method).distributed.cpu_offload is False
