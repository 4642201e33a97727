"""Several processes: rank/world detection, accelerate/DeepSpeed config generation, and the
per-worker context the runner and the training loop use when `tuneplan run` launched them.

Two halves:

* Launcher side (no torch import): :func:`layout_for` turns a plan and the command line into a
  :class:`Layout`; :func:`accelerate_config` writes the ``accelerate launch --config_file`` YAML
  for it (MULTI_CPU / MULTI_GPU for DDP, FSDP with ``fsdp_config``, DEEPSPEED with
  ``deepspeed_config``); :func:`transformer_layer_classes` finds the decoder-layer class FSDP
  wraps, from the model's config alone (no weights are loaded).
* Worker side: :func:`init_worker` builds an :class:`accelerate.Accelerator` whose plugins come
  from the same dictionaries (so the worker trains as the config file says whichever launcher
  started it), and :func:`active` hands that :class:`DistContext` to the runner and train().
  Outside a launched worker, :func:`active` is None and nothing here is used.

The loss a multi-process step reports is the mean over ranks of each rank's token-mean loss (DDP
and FSDP average gradients over ranks the same way); tokens are summed over ranks; memory is the
maximum over ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "Layout", "DistContext", "layout_for", "accelerate_config", "deepspeed_section",
    "fsdp_section", "transformer_layer_classes", "env_rank", "env_world_size", "env_local_rank",
    "init_worker", "active", "shard",
]

STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
ENV_RUN_ID = "TUNEPLAN_RUN_ID"
ENV_RUN_DIR = "TUNEPLAN_RUN_DIR"
ENV_STRATEGY = "TUNEPLAN_STRATEGY"
ENV_OFFLOAD = "TUNEPLAN_CPU_OFFLOAD"
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
# Launcher side


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


def layout_for(plan, *, num_processes: Optional[int] = None, num_machines: Optional[int] = None,
               machine_rank: int = 0, main_process_ip: Optional[str] = None,
               main_process_port: Optional[int] = None, use_cpu: Optional[bool] = None) -> Layout:
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
        notes.append(f"distributed.num_processes: {d.num_processes} -> {n}; effective batch = "
                     f"micro-batch x accumulation x {n}")
    if machines < 1 or n < machines or n % machines:
        raise ValueError(f"{n} processes cannot be split evenly over {machines} machines")
    if not 0 <= machine_rank < machines:
        raise ValueError(f"machine rank {machine_rank} is not in 0..{machines - 1}")
    if machines > 1 and not main_process_ip:
        raise ValueError("several machines need --main-process-ip (the address of machine rank 0)")
    if use_cpu is None:
        use_cpu = not _cuda_available()
    return Layout(num_processes=n, strategy=strategy, cpu_offload=d.cpu_offload, use_cpu=use_cpu,
                  num_machines=machines, machine_rank=machine_rank,
                  main_process_ip=main_process_ip, main_process_port=main_process_port or 29500,
                  notes=notes)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def transformer_layer_classes(model_dir: Optional[Path], *, trust_remote_code: bool = False,
                              family: Optional[str] = None) -> list[str]:
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


# --------------------------------------------------------------------------------------------
# Worker side


def shard(items: list, rank: int, world: int) -> list:
    """This rank's share of `items`, interleaved (DistributedSampler without padding)."""
    return items[rank::world]


class DistContext:
    """One worker's view of the job: an Accelerator plus the few collectives the runner needs."""

    def __init__(self, accelerator, strategy: str, cpu_offload: bool = False,
                 layer_classes: Optional[list[str]] = None):
        self.accelerator = accelerator
        self.strategy = strategy
        self.cpu_offload = cpu_offload
        self.layer_classes = list(layer_classes or [])

    @property
    def manual_fsdp(self) -> bool:
        """FSDP on CPU: accelerate only shards on accelerators (with cpu=True it silently wraps in
        DDP instead), so the worker applies torch's FSDP2 fully_shard itself over gloo."""
        return self.strategy == "fsdp" and self.device.type == "cpu"

    # identity ---------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def world_size(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self):
        return self.accelerator.device

    # training ---------------------------------------------------------------------------------
    def prepare(self, model, optimizer):
        """Wrap model and optimizer (DDP / FSDP2 / DeepSpeed engine)."""
        if self.manual_fsdp:
            return self._fully_shard(model, optimizer)
        return self.accelerator.prepare(model, optimizer)

    def _fully_shard(self, model, optimizer):
        """FSDP2 by hand: one unit per transformer layer, then the root; the optimizer is rebuilt
        over the sharded (DTensor) parameters with the same groups and hyper-parameters."""
        from torch.distributed.fsdp import fully_shard

        names = {id(p): n for n, p in model.named_parameters()}
        wrap = set(self.layer_classes)
        for module in list(model.modules()):
            if type(module).__name__ in wrap:
                fully_shard(module)
        fully_shard(model)
        new = dict(model.named_parameters())
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [new[names[id(p)]] for p in g["params"]]} for g in optimizer.param_groups]
        import inspect

        accepted = inspect.signature(type(optimizer).__init__).parameters
        defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
        return model, type(optimizer)(groups, **defaults)

    def backward(self, loss, accumulation_steps: int = 1) -> None:
        """loss.backward(), through the DeepSpeed engine when there is one. The engine divides
        each micro-batch's loss by its gradient_accumulation_steps; the training loop already
        normalised over the whole step, so that division is undone here."""
        if self.strategy.startswith("deepspeed") and accumulation_steps > 1:
            loss = loss * accumulation_steps
        self.accelerator.backward(loss)

    def clip_grad_norm_(self, model, max_norm: float) -> float:
        """Clip over all ranks' (sharded) gradients; returns the total norm (0.0 if unknown)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.manual_fsdp:
            import torch

            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(params, max_norm)
        if norm is None:
            return 0.0
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm)

    def reduce_step(self, loss: float, tokens: int) -> tuple[float, int]:
        """(mean of the ranks' losses, sum of the ranks' tokens)."""
        import torch

        t = torch.tensor([loss, float(tokens)], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.world_size, int(round(float(t[1])))

    def max_int(self, value: int) -> int:
        """Maximum of an integer over ranks."""
        import torch

        t = torch.tensor([int(value)], dtype=torch.int64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t[0])

    def _comm_device(self):
        import torch

        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def measured_max(self, measured, model=None):
        """MeasuredMemory with every byte count (peak_bytes, runtime_bytes, the components) the
        maximum over ranks of what each rank measured. peak_bytes is never rebuilt from the
        components: it keeps the meter's definition (CPU: runtime_bytes + live-tensor peak; CUDA:
        max allocated). Under FSDP on CPU the reported params, gradients and optimizer components
        are scaled to this rank's shard first (the meter sees logical, unsharded sizes)."""
        if measured is None:
            return None
        data = measured.model_dump()
        if model is not None and self.strategy == "fsdp" and data.get("device_kind") == "cpu":
            local = whole = 0
            for p in model.parameters():
                n = p.numel() * p.element_size()
                whole += n
                local += p.to_local().numel() * p.element_size() if hasattr(p, "to_local") else n
            if whole and local < whole:
                ratio = local / whole
                data["params_bytes"] = local
                data["grads_bytes"] = int(data["grads_bytes"] * ratio)
                data["optimizer_bytes"] = int(data["optimizer_bytes"] * ratio)
        for key, value in data.items():
            if isinstance(value, int) and not isinstance(value, bool):
                data[key] = self.max_int(value)
        return type(measured)(**data)

    def maybe_fail(self, step: int) -> None:
        """Tests only: raise on the rank TUNEPLAN_TEST_FAIL_RANK names, after step 1."""
        want = os.environ.get(ENV_FAIL_RANK)
        if want not in (None, "") and int(want) == self.rank and step >= 1:
            raise RuntimeError(f"forced failure on rank {self.rank} ({ENV_FAIL_RANK})")

    # saving -----------------------------------------------------------------------------------
    def save_pretrained(self, model, path: Path) -> None:
        """Collect the full state dict (a collective for FSDP/ZeRO-3: every rank calls this) and
        let rank 0 save it with save_pretrained."""
        acc = self.accelerator
        if self.manual_fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if self.is_main:
                model.save_pretrained(str(path), state_dict=state, safe_serialization=True)
            acc.wait_for_everyone()
            return
        state = acc.get_state_dict(model)
        if self.is_main:
            inner = acc.unwrap_model(model)
            if hasattr(inner, "peft_config"):
                inner.save_pretrained(str(path), safe_serialization=True)
            else:
                inner.save_pretrained(str(path), state_dict=state, safe_serialization=True)
        acc.wait_for_everyone()

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


_ACTIVE: Optional[DistContext] = None


def active() -> Optional[DistContext]:
    """The worker's DistContext, or None outside a launched multi-process worker."""
    return _ACTIVE


def _fsdp_plugin(section: dict[str, Any]):
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(
        fsdp_version=section["fsdp_version"],
        reshard_after_forward=section["fsdp_reshard_after_forward"],
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=section["fsdp_transformer_layer_cls_to_wrap"].split(","),
        state_dict_type=section["fsdp_state_dict_type"],
        cpu_offload=section["fsdp_offload_params"],
    )


def _deepspeed_plugin(section: dict[str, Any], plan):
    from accelerate.utils import DeepSpeedPlugin

    kwargs = {k: section[k] for k in ("zero_stage", "gradient_accumulation_steps", "gradient_clipping",
                                      "offload_optimizer_device", "offload_param_device")}
    if section["zero_stage"] == 3:
        kwargs["zero3_init_flag"] = section["zero3_init_flag"]
        kwargs["zero3_save_16bit_model"] = section["zero3_save_16bit_model"]
    plugin = DeepSpeedPlugin(**kwargs)
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = plan.training.per_device_batch_size
    return plugin


def init_worker(plan, *, strategy: str, cpu_offload: bool = False,
                model_dir: Optional[Path] = None) -> DistContext:
    """Start this worker's process group through accelerate and make it :func:`active`.

    CPU: gloo; CUDA: nccl, one GPU per local rank. The plugins are built from the same sections
    as the launcher's config file."""
    global _ACTIVE
    from accelerate import Accelerator

    use_cpu = not _cuda_available()
    layout = Layout(num_processes=env_world_size(), strategy=strategy, cpu_offload=cpu_offload,
                    use_cpu=use_cpu)
    kwargs: dict[str, Any] = {"cpu": use_cpu}
    layers: list[str] = []
    if strategy == "fsdp":
        layers = transformer_layer_classes(model_dir, trust_remote_code=plan.trust_remote_code,
                                           family=plan.inputs.model.family)
        if not use_cpu:  # on CPU the DistContext shards with torch's fully_shard itself
            kwargs["fsdp_plugin"] = _fsdp_plugin(fsdp_section(plan, layout, layers))
    elif strategy.startswith("deepspeed"):
        kwargs["deepspeed_plugin"] = _deepspeed_plugin(deepspeed_section(plan, layout), plan)
        kwargs["mixed_precision"] = _mixed_precision(plan, strategy)
    accelerator = Accelerator(**kwargs)
    _ACTIVE = DistContext(accelerator, strategy, cpu_offload, layers)
    return _ACTIVE


def write_error(run_dir: Path, rank: int, text: str) -> None:
    """Leave this rank's error where the launcher looks (error-rank<R>.txt in the run dir)."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / f"error-rank{rank}.txt").write_text(text, encoding="utf-8")
    except OSError:
        pass


def read_errors(run_dir: Path) -> dict[int, str]:
    """Errors the ranks left, by rank."""
    out: dict[int, str] = {}
    for f in sorted(Path(run_dir).glob("error-rank*.txt")):
        try:
            out[int(f.stem[len("error-rank"):])] = f.read_text(encoding="utf-8").strip()
        except (ValueError, OSError):
            continue
    return out

