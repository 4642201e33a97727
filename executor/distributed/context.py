"""The distributed context a run's stages are given: :class:`SingleProcess` for an ordinary run,
:class:`DistContext` for one rank of a `tuneplan run --num-processes N` job (built by
:func:`init_worker` from the same accelerate plugin sections the launcher's config file holds).

Both answer what the stages ask (rank, world size, main rank, device, this rank's share of the
data, the measurement over ranks, saving); ``collectives`` is what the training loop and the
loaders get: None on one process (the single-device path), the DistContext otherwise. Nothing here
is a module global: the worker passes its context to run_plan, which passes it down.

The loss a multi-process step reports is the mean over ranks of each rank's token-mean loss (DDP
and FSDP average gradients over ranks the same way); tokens are summed over ranks; memory is the
maximum over ranks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .layout import (
    ENV_FAIL_RANK,
    Layout,
    _cuda_available,
    _mixed_precision,
    deepspeed_section,
    env_world_size,
    fsdp_section,
    transformer_layer_classes,
)

__all__ = ["SingleProcess", "DistContext", "init_worker", "shard", "write_error", "read_errors"]


def shard(items: list, rank: int, world: int) -> list:
    """This rank's share of `items`, interleaved (DistributedSampler without padding)."""
    return items[rank::world]


class SingleProcess:
    """An ordinary one-process run: rank 0 of 1 on ``device`` (the first CUDA device, else the CPU)."""

    distributed = False
    strategy: Optional[str] = None
    rank = 0
    world_size = 1
    is_main = True

    def __init__(self, device=None):
        self._device = device

    @property
    def device(self):
        """The given device, else (chosen on first use, so bad input fails before torch loads)
        the first CUDA device, else the CPU."""
        if self._device is None:
            from tuneplan.executor.models import pick_device

            self._device = pick_device()
        return self._device

    @property
    def collectives(self) -> None:
        """None: the training loop and the loaders take their single-device path."""
        return None

    def shard(self, items: list) -> list:
        """All of it."""
        return items

    def measured_max(self, measured, model=None):
        """What this process measured."""
        return measured

    def save_pretrained(self, model, path: Path) -> None:
        model.save_pretrained(str(path), safe_serialization=True)


class DistContext:
    """One worker's view of the job: an Accelerator plus the few collectives the stages need."""

    distributed = True

    def __init__(
        self, accelerator, strategy: str, cpu_offload: bool = False, layer_classes: Optional[list[str]] = None
    ):
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

    @property
    def collectives(self) -> "DistContext":
        """Itself: the training loop wraps, reduces and clips through it."""
        return self

    def shard(self, items: list) -> list:
        """This rank's interleaved share of ``items``."""
        return shard(items, self.rank, self.world_size)

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
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [new[names[id(p)]] for p in g["params"]],
            }
            for g in optimizer.param_groups
        ]
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

            state = get_model_state_dict(
                model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
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

    kwargs = {
        k: section[k]
        for k in (
            "zero_stage",
            "gradient_accumulation_steps",
            "gradient_clipping",
            "offload_optimizer_device",
            "offload_param_device",
        )
    }
    if section["zero_stage"] == 3:
        kwargs["zero3_init_flag"] = section["zero3_init_flag"]
        kwargs["zero3_save_16bit_model"] = section["zero3_save_16bit_model"]
    plugin = DeepSpeedPlugin(**kwargs)
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = plan.training.per_device_batch_size
    return plugin


def init_worker(
    plan, *, strategy: str, cpu_offload: bool = False, model_dir: Optional[Path] = None
) -> DistContext:
    """Start this worker's process group through accelerate; the context is passed to run_plan.

    CPU: gloo; CUDA: nccl, one GPU per local rank. The plugins are built from the same sections
    as the launcher's config file."""
    from accelerate import Accelerator

    use_cpu = not _cuda_available()
    layout = Layout(
        num_processes=env_world_size(), strategy=strategy, cpu_offload=cpu_offload, use_cpu=use_cpu
    )
    kwargs: dict[str, Any] = {"cpu": use_cpu}
    layers: list[str] = []
    if strategy == "fsdp":
        layers = transformer_layer_classes(
            model_dir, trust_remote_code=plan.trust_remote_code, family=plan.inputs.model.family
        )
        if not use_cpu:  # on CPU the DistContext shards with torch's fully_shard itself
            kwargs["fsdp_plugin"] = _fsdp_plugin(fsdp_section(plan, layout, layers))
    elif strategy.startswith("deepspeed"):
        kwargs["deepspeed_plugin"] = _deepspeed_plugin(deepspeed_section(plan, layout), plan)
        kwargs["mixed_precision"] = _mixed_precision(plan, strategy)
    accelerator = Accelerator(**kwargs)
    return DistContext(accelerator, strategy, cpu_offload, layers)


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
            out[int(f.stem[len("error-rank") :])] = f.read_text(encoding="utf-8").strip()
        except (ValueError, OSError):
            continue
    return out
