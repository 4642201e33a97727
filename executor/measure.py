"""Measure the memory a run really used, by component, so it can be compared with the plan.

CUDA: torch.cuda.max_memory_allocated / max_memory_reserved after a reset at the start of
training; peak_bytes is max allocated (no CUDA context), so runtime_bytes is 0.

CPU has no allocator statistics, so the peak is measured on designated steps (the 2nd optimizer
step, or the 1st when the run has one, and any later step whose longest micro-batch is longer
than every step measured before), with every other step left unhooked:
    peak_bytes = runtime_bytes + max over measured steps of (live_at_start + window_peak)
  runtime_bytes  resident set size of the process before the model is loaded (Python, torch,
                 transformers, peft imported): the estimator's "Python + torch + ..." term.
  live_at_start  bytes of parameters and buffers (+ bitsandbytes quantisation state) + gradients
                 + optimizer states alive when the step starts (gradients are None after
                 zero_grad(set_to_none=True), so 0 without gradient accumulation leftovers).
  window_peak    the highest running sum of CPU tensor allocations minus frees from the start of
                 the step to the end of optimizer.step() (torch.profiler with profile_memory: the
                 CPU allocator reports each allocation with its running total). It includes
                 everything autograd saves for backward, the logits and their loss copies, backward
                 transients (gradient buffers, recomputation under checkpointing), the gradients
                 themselves and optimizer temporaries.
Not included: allocator fragmentation and caches, memory oneDNN/MKL take outside torch's
allocator, and anything the step frees that was allocated before it (the profiler cannot see
those frees, so the window peak errs high, never low). The components are kept alongside:
params, grads and optimizer bytes, and saved_tensors_peak_bytes, the unique storages autograd
saved in one micro-batch (saved_tensors_hooks; parameters excluded) plus the logits, plus under
gradient checkpointing each checkpointed block's input. If no step could be profiled (a run
interrupted in its first step, a profiler already running), peak_bytes falls back to
runtime_bytes + params + grads + optimizer + saved tensors. Process RSS (ru_maxrss) is reported
alongside; it also includes allocator caches and fragmentation. runtime_bytes is recorded next to
peak_bytes, so the like-for-like comparison (executor/memory_compare.py) takes it out again:
measured tensor bytes = peak_bytes - runtime_bytes.
"""

from __future__ import annotations

import atexit
import gc
import os
import resource
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from tuneplan.schemas import MeasuredMemory

from .runlog import c_stderr_to_log


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


def current_rss_bytes() -> int:
    """Resident set size of this process now (/proc/self/statm; ru_maxrss where that is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return rss_peak_bytes()


_PROCESS_RUNTIME: dict[str, int] = {}
"""This process's runtime, measured once: "first", the RSS before its first model; "imports", the
RSS that runtime imports added after that (:func:`runtime_imports`)."""


def runtime_baseline_bytes() -> int:
    """RSS of the process with torch, transformers and peft imported and no model loaded.

    Call before loading the model; it is the runtime part of a CPU run's peak_bytes. Measured
    before the first model this process loads: a later run in the same process (compare, sweep,
    tests) gets that figure plus what runtime imports added since (a QLoRA run's bitsandbytes
    after a LoRA run), not the freed heap its predecessors left resident (malloc keeps it), which
    made the same plan's runtime +7% (31 MB) in a second run. Never more than the RSS now.
    """
    import torch  # noqa: F401

    for name in ("transformers", "peft"):
        try:
            __import__(name)
        except ImportError:
            pass
    gc.collect()
    now = current_rss_bytes()
    if "first" not in _PROCESS_RUNTIME:
        _PROCESS_RUNTIME.update(first=now, imports=0)
        return now
    return min(now, _PROCESS_RUNTIME["first"] + _PROCESS_RUNTIME["imports"])


@contextmanager
def runtime_imports() -> Iterator[None]:
    """Around a run's runtime imports (executor/loading import_runtime): the RSS they add counts
    in later runs' runtime_baseline_bytes once the first baseline was measured."""
    before = current_rss_bytes()
    try:
        yield
    finally:
        if "first" in _PROCESS_RUNTIME:
            _PROCESS_RUNTIME["imports"] += max(0, current_rss_bytes() - before)


def _alloc_events(prof) -> list[tuple[int, int, Optional[int]]]:
    """(time_ns, bytes (+alloc/-free), allocator running total or None) of CPU allocations."""
    out: list[tuple[int, int, Optional[int]]] = []
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            ef = node.extra_fields
            if (
                type(ef).__name__.endswith("Allocation")
                and getattr(ef, "device", None) is not None
                and ef.device.type == "cpu"
            ):
                out.append((int(node.start_time_ns), int(ef.alloc_size), int(ef.total_allocated)))
            stack.extend(node.children)
    except Exception:  # private API moved: fall back to the public [memory] events (no running total)
        out = []
        for e in prof.events():
            if e.name == "[memory]" and e.cpu_memory_usage:
                out.append((int(e.time_range.start * 1000), int(e.cpu_memory_usage), None))
    out.sort(key=lambda x: (x[0], x[2] if x[2] is not None else 0))
    return out


def device_side(events, host_events) -> list:
    """Allocation events with the bytes an activation-offload host store held at each moment taken
    out of the running total (executor/memsave.py ActivationOffload on a CPU device, where host and
    device share one allocator). host_events: (time_ns, +/-bytes), recorded before a host copy is
    made and after it is freed, so the result can only dip below the true device side, never
    above it."""
    if not host_events or not events or events[0][2] is None:
        return events
    hs = sorted(host_events)
    out, held, j = [], 0, 0
    for t, nbytes, total in events:
        while j < len(hs) and hs[j][0] <= t:
            held += hs[j][1]
            j += 1
        out.append((t, nbytes, total - held))
    return out


def window_peaks(events, marks: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Peak of the running allocation sum over a profiled window, overall and per phase.

    events: from _alloc_events. marks: phase name -> time_ns when the phase ENDS (e.g. forward,
    backward, optimizer), in order. Returns (peak, {phase: peak within it}); the sum starts at 0.
    """
    if not events:
        return 0, {}
    running_totals = events[0][2] is not None
    base = events[0][2] - events[0][1] if running_totals else 0
    phases = sorted(marks.items(), key=lambda kv: kv[1])
    per: dict[str, int] = {name: 0 for name, _ in phases}
    peak = cur = 0
    i = 0
    for t, nbytes, total in events:
        cur = (total - base) if running_totals else cur + nbytes
        while i < len(phases) and t > phases[i][1]:
            i += 1
        if i < len(phases):
            per[phases[i][0]] = max(per[phases[i][0]], cur)
        peak = max(peak, cur)
    return peak, per


_RUNNING: set = set()
"""Profilers a MemoryMeter has started and not stopped; stopped at exit (see _abort_step)."""


@atexit.register
def _stop_running_profilers() -> None:
    for prof in list(_RUNNING):
        try:
            prof.stop()
        except Exception:
            pass
    _RUNNING.clear()


class MemoryMeter:
    """Tracks the components of peak memory during training; see the module docstring.

    The training loop calls begin_step(step, batches, steps) / end_step() around each optimizer
    step (before zero_grad), forward() / end_forward() around each micro-batch's forward and loss,
    and after_backward() / after_step(). Only designated steps are hooked and profiled (see
    measure_step); the rest run as plain torch.
    """

    def __init__(self, model, device: torch.device, runtime_bytes: Optional[int] = None):
        self.model = model
        self.device = device
        self.runtime_bytes = int(runtime_bytes) if runtime_bytes is not None else 0
        self.params_bytes = params_bytes(model)
        self.grads_bytes = 0
        self.optimizer_bytes = 0
        self.saved_peak_bytes = 0
        self.live_peak_bytes = 0
        """max over measured steps of live_at_start + window_peak (0 until a step is measured)."""
        self.measured_steps: list[int] = []
        self.measured_len = 0
        """Longest micro-batch (tokens per sequence, padded) among the measured steps."""
        self.last: dict = {}
        """The last measured step: step, seq_len, live_at_start, window_peak, phase peaks."""
        self._param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._live: dict[int, int] = {}
        self._recording = False
        self._measuring = False
        self._prof = None
        self._marks: dict[str, int] = {}
        self._live_at_start = 0
        self.host_events: list = []
        """(time_ns, +/-bytes) of an activation-offload host store in the current step."""
        self._handles = [
            m.register_forward_pre_hook(self._checkpoint_input_hook, with_kwargs=True)
            for m in model.modules()
            if getattr(m, "gradient_checkpointing", False) is True
            and hasattr(m, "_gradient_checkpointing_func")
        ]

    def start(self) -> None:
        """Reset allocator peaks (CUDA) at the start of training."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    # -- designated steps -------------------------------------------------------------------
    def measure_step(self, step: int, seq_len: int, steps: int) -> bool:
        """Whether to hook and profile this step: the 2nd (1st of a 1-step run), and any later step
        whose longest micro-batch is longer than every measured one. Never on CUDA."""
        if self.device.type == "cuda":
            return False
        if step == min(2, steps):
            return True
        return step > 2 and bool(self.measured_steps) and seq_len > self.measured_len

    def begin_step(self, step: int, batches: list, steps: int) -> None:
        """Start of an optimizer step (before the first forward); `batches` are its micro-batches."""
        seq_len = max((int(b["input_ids"].shape[-1]) for b in batches), default=0)
        self.host_events = []
        self._measuring = self.measure_step(step, seq_len, steps)
        if not self._measuring:
            return
        self.measured_steps.append(step)
        self.measured_len = max(self.measured_len, seq_len)
        self.last = {"step": step, "seq_len": seq_len}
        self._marks = {}
        if self.device.type != "cpu":
            return
        self._live_at_start = self.params_bytes + grads_bytes(self.model) + self._opt_bytes_now
        try:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            with c_stderr_to_log():  # libkineto's "USDT: ... profiler_start" line, printed on fd 2
                self._prof.start()
            _RUNNING.add(self._prof)
        except Exception:  # e.g. a profiler is already running: components only for this step
            self._prof = None

    def end_step(self) -> None:
        """End of the optimizer step (after optimizer.step, before zero_grad)."""
        if not self._measuring:
            return
        self._measuring = False
        prof, self._prof = self._prof, None
        if prof is None:
            return
        self._marks.setdefault("optimizer", time.time_ns())
        _RUNNING.discard(prof)
        with c_stderr_to_log():  # "USDT: ... profiler_stop"
            prof.stop()
        peak, phases = window_peaks(device_side(_alloc_events(prof), self.host_events), self._marks)
        live = self._live_at_start + peak
        self.last.update(live_at_start=self._live_at_start, window_peak=peak, phases=phases, live_peak=live)
        self.live_peak_bytes = max(self.live_peak_bytes, live)

    _opt_bytes_now = 0

    # -- micro-batches ----------------------------------------------------------------------
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
        if not self._recording:
            return
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            self.add(hidden)

    @contextmanager
    def forward(self) -> Iterator[None]:
        """Wrap one micro-batch's forward pass (and loss); counts what it leaves for backward."""
        if not self._measuring:
            yield
            return
        self._live = {}
        self._recording = True
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield
        finally:
            self._recording = False

    def end_forward(self, *extra: torch.Tensor) -> None:
        """Close a micro-batch's count (adding e.g. the logits) and update the peak."""
        if not self._measuring:
            return
        self._marks.setdefault("forward", time.time_ns())
        self._recording = True
        for t in extra:
            self.add(t)
        self._recording = False
        self.saved_peak_bytes = max(self.saved_peak_bytes, sum(self._live.values()))
        self._live = {}

    def after_backward(self) -> None:
        """Record gradient bytes (call after the last backward of a step, before zero_grad)."""
        if self._measuring:
            self._marks.setdefault("backward", time.time_ns())
        if self._measuring or not self.grads_bytes:
            self.grads_bytes = max(self.grads_bytes, grads_bytes(self.model))

    def after_step(self, optimizer) -> None:
        """Record optimizer state bytes (call after optimizer.step())."""
        if self._measuring or not self.optimizer_bytes:
            self._opt_bytes_now = optimizer_bytes(optimizer)
            self.optimizer_bytes = max(self.optimizer_bytes, self._opt_bytes_now)
        if self._measuring:
            self._marks.setdefault("optimizer", time.time_ns())

    def _abort_step(self) -> None:
        """Stop a profiler left running by an interrupted step, discarding it: a process that exits
        with a torch profiler still active crashes (SIGSEGV) instead of reporting the interrupt."""
        prof, self._prof = self._prof, None
        self._measuring = self._recording = False
        if prof is not None:
            _RUNNING.discard(prof)
            try:
                with c_stderr_to_log():
                    prof.stop()
            except Exception:
                pass

    def close(self) -> None:
        """Remove module hooks (and stop a profiler left running by an interrupted step)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._abort_step()

    def counted_bytes(self) -> int:
        """params + grads + optimizer + saved-tensor peak: the components, without transients."""
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.saved_peak_bytes

    def notes(self) -> list[str]:
        """How a CPU peak was measured, for the run's substitutions (empty on CUDA)."""
        if self.device.type == "cuda" or not self.measured_steps:
            return []
        mib = 2**20
        how = (
            f"live-tensor peak {self.live_peak_bytes / mib:,.0f} MiB (torch.profiler)"
            if self.live_peak_bytes
            else f"counted components {self.counted_bytes() / mib:,.0f} MiB (no profile)"
        )
        return [
            f"memory: CPU peak measured on step(s) {', '.join(map(str, self.measured_steps))} only "
            f"(longest micro-batch {self.measured_len} tokens per sequence): peak_bytes = runtime "
            f"{self.runtime_bytes / mib:,.0f} MiB (RSS before the model loaded) + {how}"
        ]

    def result(self) -> MeasuredMemory:
        """The measurement so far as a MeasuredMemory (an interrupted step's profile is dropped)."""
        if self._prof is not None:
            self._abort_step()
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
        live = max(self.live_peak_bytes, self.counted_bytes() if not self.live_peak_bytes else 0)
        return MeasuredMemory(
            device_kind=kind, peak_bytes=self.runtime_bytes + live, runtime_bytes=self.runtime_bytes, **common
        )


def describe_device(device: torch.device) -> str:
    """Human description of the training device, e.g. "cpu (2 cores)" or "cuda: NVIDIA H200"."""
    import os

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{device.type} ({cores} cores)"
