"""The launcher side of a multi-process run (no torch import): rank and world from the
environment, the :class:`Layout` of one launch (:func:`layout_for`: the plan's `distributed` block,
the command line overriding it), and the ``accelerate launch --config_file`` YAML for it
(:func:`accelerate_config`: MULTI_CPU / MULTI_GPU for DDP, FSDP with ``fsdp_config``, DEEPSPEED
with ``deepspeed_config``). :func:`transformer_layer_classes` finds the decoder-layer class FSDP
wraps from the model's config alone (no weights are loaded). The worker side (the
:class:`~.context.DistContext` each rank trains with) is built from the same sections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "Layout",
    "layout_for",
    "accelerate_config",
    "deepspeed_section",
    "fsdp_section",
    "transformer_layer_classes",
    "env_rank",
    "env_world_size",
    "env_local_rank",
    "dump_yaml",
]

STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
ENV_RUN_ID = "TUNEPLAN_RUN_ID"
ENV_RUN_DIR = "TUNEPLAN_RUN_DIR"
ENV_STRATEGY = "TUNEPLAN_STRATEGY"
ENV_OFFLOAD = "TUNEPLAN_CPU_OFFLOAD"
ENV_CONSOLE = "TUNEPLAN_CONSOLE_ON_STDOUT"
"""Set by the launcher: a worker's own lines go out on its stdout (the launcher prints them), its
stderr carries only what torchrun and the libraries write (the launcher appends it to run.log)."""
ENV_FAIL_RANK = "TUNEPLAN_TEST_FAIL_RANK"
"""Tests only: the rank named here raises after its first optimizer step."""


# --------------------------------------------------------------------------------------------
# Rank and world, from the environment torchrun / accelerate launch / mpirun set


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                pass
    return default


def env_rank() -> int:
    """Global rank of this process (0 when not launched)."""
    return _env_int(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"), 0)


def env_world_size() -> int:
    """Processes in the job (1 when not launched)."""
    return _env_int(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"), 1)


def env_local_rank() -> int:
    """Rank on this machine (selects the GPU)."""
    return _env_int(("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"), 0)


# --------------------------------------------------------------------------------------------
# The layout and its accelerate config


@dataclass
class Layout:
    """Where and how the processes of one run are laid out."""

    num_processes: int
    """Total processes over all machines (accelerate's --num_processes)."""
    strategy: str
    """ddp | fsdp | deepspeed-zero2 | deepspeed-zero3."""
    cpu_offload: bool = False
    use_cpu: bool = True
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: Optional[str] = None
    main_process_port: int = 29500
    notes: list[str] = field(default_factory=list)
    """Departures from the plan's `distributed` block, recorded as substitutions."""

    @property
    def per_machine(self) -> int:
        return max(1, self.num_processes // self.num_machines)


def layout_for(
    plan,
    *,
    num_processes: Optional[int] = None,
    num_machines: Optional[int] = None,
    machine_rank: int = 0,
    main_process_ip: Optional[str] = None,
    main_process_port: Optional[int] = None,
    use_cpu: Optional[bool] = None,
) -> Layout:
    """The layout to launch: the plan's `distributed` block, overridden by the command line.

    A plan planned for one process but launched on several runs DDP (the only strategy that
    needs no sharding decision); the CPU runs every strategy's processes on gloo.
    Raises ValueError for layouts that cannot be launched (the CLI turns it into exit 2)."""
    d = plan.distributed
    notes: list[str] = []
    n = num_processes if num_processes is not None else d.num_processes
    machines = num_machines if num_machines is not None else d.num_nodes
    strategy = d.strategy
    if strategy == "none":
        strategy = "ddp"
        if n > 1:
            notes.append(f"distributed.strategy: none -> ddp ({n} processes)")
    if n != d.num_processes and d.num_processes > 1:
        notes.append(
            f"distributed.num_processes: {d.num_processes} -> {n}; effective batch = "
            f"micro-batch x accumulation x {n}"
        )
    if machines < 1 or n < machines or n % machines:
        raise ValueError(f"{n} processes cannot be split evenly over {machines} machines")
    if not 0 <= machine_rank < machines:
        raise ValueError(f"machine rank {machine_rank} is not in 0..{machines - 1}")
    if machines > 1 and not main_process_ip:
        raise ValueError("several machines need --main-process-ip (the address of machine rank 0)")
    if use_cpu is None:
        use_cpu = not _cuda_available()
    return Layout(
        num_processes=n,
        strategy=strategy,
        cpu_offload=d.cpu_offload,
        use_cpu=use_cpu,
        num_machines=machines,
        machine_rank=machine_rank,
        main_process_ip=main_process_ip,
        main_process_port=main_process_port or 29500,
        notes=notes,
    )


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def transformer_layer_classes(
    model_dir: Optional[Path], *, trust_remote_code: bool = False, family: Optional[str] = None
) -> list[str]:
    """Class names FSDP auto-wraps one unit each: the model class's `_no_split_modules` (e.g.
    LlamaDecoderLayer), found from config.json alone. Falls back to `<Arch>DecoderLayer` from the
    config's architecture, then from the family name."""
    arch = None
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        try:
            from transformers import AutoConfig, AutoModelForCausalLM

            cfg = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
            arch = (getattr(cfg, "architectures", None) or [None])[0]
            cls = AutoModelForCausalLM._model_mapping.get(type(cfg))
            names = list(getattr(cls, "_no_split_modules", None) or [])
            if names:
                return names
        except Exception:  # noqa: BLE001 - fall back to the naming convention below
            pass
    if arch and arch.endswith("ForCausalLM"):
        return [arch[: -len("ForCausalLM")] + "DecoderLayer"]
    base = (family or "llama").replace("-", " ").title().replace(" ", "")
    return [f"{base}DecoderLayer"]


def _mixed_precision(plan, strategy: str) -> str:
    """accelerate's mixed_precision: "no" for DDP/FSDP (the training loop autocasts itself, as on
    one device); DeepSpeed owns precision, so it gets the plan's."""
    if not strategy.startswith("deepspeed"):
        return "no"
    p = plan.training.precision
    return "bf16" if p.startswith("bf16") else "fp16" if p.startswith("fp16") else "no"


def fsdp_section(plan, layout: Layout, layer_classes: list[str]) -> dict[str, Any]:
    """accelerate's fsdp_config: FSDP2, full shard (reshard after forward), auto wrap by
    transformer layer class, full state dict on save, parameters offloaded when planned."""
    return {
        "fsdp_version": 2,
        "fsdp_reshard_after_forward": True,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": ",".join(layer_classes),
        "fsdp_state_dict_type": "FULL_STATE_DICT",
        "fsdp_offload_params": bool(layout.cpu_offload),
        "fsdp_cpu_ram_efficient_loading": False,
        "fsdp_activation_checkpointing": False,
    }


def deepspeed_section(plan, layout: Layout) -> dict[str, Any]:
    """accelerate's deepspeed_config: ZeRO stage 2 or 3, accumulation and clipping from the plan,
    optimizer (and, for stage 3, parameter) offload to CPU when planned."""
    stage = 3 if layout.strategy == "deepspeed-zero3" else 2
    t = plan.training
    section: dict[str, Any] = {
        "zero_stage": stage,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "gradient_clipping": t.max_grad_norm,
        "offload_optimizer_device": "cpu" if layout.cpu_offload else "none",
        "offload_param_device": "cpu" if layout.cpu_offload and stage == 3 else "none",
    }
    if stage == 3:
        section["zero3_init_flag"] = False
        section["zero3_save_16bit_model"] = True
    if layout.num_machines > 1:
        section["deepspeed_multinode_launcher"] = "standard"
    return section


def accelerate_config(plan, layout: Layout, layer_classes: Optional[list[str]] = None) -> dict[str, Any]:
    """The `accelerate launch --config_file` contents for this plan and layout."""
    s = layout.strategy
    if s not in STRATEGIES:
        raise ValueError(f"unknown strategy {s!r}")
    if s == "ddp":
        dtype = "MULTI_CPU" if layout.use_cpu else "MULTI_GPU"
    elif s == "fsdp":
        dtype = "FSDP"
    else:
        dtype = "DEEPSPEED"
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": dtype,
        "downcast_bf16": "no",
        "machine_rank": layout.machine_rank,
        "main_training_function": "main",
        "mixed_precision": _mixed_precision(plan, s),
        "num_machines": layout.num_machines,
        "num_processes": layout.num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": bool(layout.use_cpu),
    }
    if not layout.use_cpu:
        cfg["gpu_ids"] = "all"
    if layout.num_machines > 1:
        cfg["main_process_ip"] = layout.main_process_ip
        cfg["main_process_port"] = layout.main_process_port
    if s == "fsdp":
        cfg["fsdp_config"] = fsdp_section(plan, layout, layer_classes or ["LlamaDecoderLayer"])
    elif s.startswith("deepspeed"):
        cfg["deepspeed_config"] = deepspeed_section(plan, layout)
    return cfg


def dump_yaml(cfg: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(cfg, sort_keys=True, default_flow_style=False)
