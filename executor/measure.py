"""Measure the memory a run really used, by component, so it can be compared with the plan.

CUDA: torch.cuda.max_memory_allocated / max_memory_reserved after a reset at the start of
training; peak_bytes is max allocated. CPU has no allocator statistics, so the peak is counted:
    peak_bytes = parameters (+ bitsandbytes quantisation state) + gradients + optimizer states
                 + peak bytes of tensors alive for backward in one micro-batch.
The last term is the sum, at the end of a forward pass, of the unique storages autograd saved
(saved_tensors_hooks; parameters excluded since they are counted already), plus the logits, plus,
under gradient checkpointing, each checkpointed block's input (the recomputation inside backward,
about one block's activations at a time, is not counted). Everything is live at that moment, so
this is the peak of the step. Process RSS (ru_maxrss) is reported alongside: it also includes the
Python runtime, libraries and allocator caches.
"""

from __future__ import annotations

import resource
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

from tuneplan.schemas import MeasuredMemory


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements (not its whole storage)."""
    return t.numel() * t.element_size()


def _quant_state_bytes(param) -> int:
    """Bytes of a bitsandbytes 4-bit parameter's quantisation state (absmax, code, nested)."""
    qs = getattr(param, "quant_state", None)
    if qs is None:
        return 0
    total = 0
    for obj in (qs, getattr(qs, "state2", None)):
        if obj is None:
            continue
        for name in ("absmax", "code", "offset"):
            val = getattr(obj, name, None)
            if isinstance(val, torch.Tensor):
                total += tensor_bytes(val)
    return total


def params_bytes(model) -> int:
    """Bytes of all parameters and buffers as loaded (tied weights once), plus 4-bit quant state."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        ptr = t.data_ptr()
        if ptr in seen and ptr != 0:
            continue
        seen.add(ptr)
        total += tensor_bytes(t) + _quant_state_bytes(t)
    return total


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        qs = getattr(p, "quant_state", None)
        if qs is not None and getattr(qs, "shape", None) is not None:
            n = int(torch.Size(qs.shape).numel())
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def grads_bytes(model) -> int:
    """Bytes of gradients currently held by the model's parameters."""
    return sum(tensor_bytes(p.grad) for p in model.parameters() if p.grad is not None)


def optimizer_bytes(optimizer) -> int:
    """Bytes of all tensors in the optimizer's state (moments, 8-bit maps and scales)."""
    seen: set[int] = set()
    total = 0
    for state in optimizer.state.values():
        for val in state.values():
            if isinstance(val, torch.Tensor) and val.data_ptr() not in seen:
                seen.add(val.data_ptr())
                total += tensor_bytes(val)
    return total


def rss_peak_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class MemoryMeter:
    """Tracks the components of peak memory during training; see the module docstring."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device
        self.params_bytes = params_bytes(model)
        self.grads_bytes = 0
        self.optimizer_bytes = 0
        self.saved_peak_bytes = 0
        self._param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._live: dict[int, int] = {}
        self._recording = False
        self._handles = [
            m.register_forward_pre_hook(self._checkpoint_input_hook, with_kwargs=True)
            for m in model.modules()
            if getattr(m, "gradient_checkpointing", False) is True and hasattr(m, "_gradient_checkpointing_func")
        ]

    def start(self) -> None:
        """Reset allocator peaks (CUDA) at the start of training."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def add(self, t: torch.Tensor) -> None:
        """Count a tensor's storage as live in the current micro-batch (once per storage)."""
        if not self._recording or t.is_sparse or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._param_ptrs or ptr in self._live:
            return
        self._live[ptr] = storage.nbytes()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.add(t)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def _checkpoint_input_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            self.add(hidden)

    @contextmanager
    def forward(self) -> Iterator[None]:
        """Wrap one micro-batch's forward pass (and loss); counts what it leaves for backward."""
        self._live = {}
        self._recording = True
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield
        finally:
            self._recording = False

    def end_forward(self, *extra: torch.Tensor) -> None:
        """Close a micro-batch's count (adding e.g. the logits) and update the peak."""
        self._recording = True
        for t in extra:
            self.add(t)
        self._recording = False
        self.saved_peak_bytes = max(self.saved_peak_bytes, sum(self._live.values()))
        self._live = {}

    def after_backward(self) -> None:
        """Record gradient bytes (call after the last backward of a step, before zero_grad)."""
        self.grads_bytes = max(self.grads_bytes, grads_bytes(self.model))

    def after_step(self, optimizer) -> None:
        """Record optimizer state bytes (call after optimizer.step())."""
        self.optimizer_bytes = max(self.optimizer_bytes, optimizer_bytes(optimizer))

    def close(self) -> None:
        """Remove module hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def result(self) -> MeasuredMemory:
        """The measurement so far as a MeasuredMemory."""
        counted = self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.saved_peak_bytes
        common = dict(
            params_bytes=self.params_bytes,
            grads_bytes=self.grads_bytes,
            optimizer_bytes=self.optimizer_bytes,
            saved_tensors_peak_bytes=self.saved_peak_bytes,
            rss_peak_bytes=rss_peak_bytes(),
        )
        if self.device.type == "cuda":
            allocated = int(torch.cuda.max_memory_allocated(self.device))
            return MeasuredMemory(
                device_kind="cuda",
                peak_bytes=allocated,
                cuda_max_allocated_bytes=allocated,
                cuda_max_reserved_bytes=int(torch.cuda.max_memory_reserved(self.device)),
                **common,
            )
        kind = "cpu" if self.device.type == "cpu" else "other"
        return MeasuredMemory(device_kind=kind, peak_bytes=counted, **common)


def describe_device(device: torch.device) -> str:
    """Human description of the training device, e.g. "cpu (2 cores)" or "cuda: NVIDIA H200"."""
    import os

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{device.type} ({cores} cores)"

