"""Price a method on the draft's hardware and find the cheapest settings that make it fit.

The fitting ladder, in order of cost to the user (each step only when the previous did not fit):
  1. shard state over the given devices (DDP -> ZeRO-2 -> FSDP), simplest first;
  2. the activation savers, least time first (SLOWDOWN, measured on the embedded model by
     benchmarks/memory_rungs.py): chunked cross-entropy (lm_head + loss per chunk, recomputed in
     backward), activation offload to host RAM (CUDA only; saved tensors copied out in forward and
     back in backward), gradient checkpointing (recompute each block; offload then moves nothing,
     so it is dropped on that rung); no change in results;
  3. 8-bit AdamW for full fine-tuning on CUDA (6 bytes/param less; HF anatomy, torchtune M5);
  4. halve the micro-batch, keeping the effective batch with accumulation (slower, same results;
     each rung is priced with the accumulation its micro-batch implies, TP047's arithmetic: above 1
     the gradients persist across micro-batches and count at the loss peak);
  5. GPUs only, when nothing above fits: FSDP with CPU offload (parameters, gradients and optimizer
     states in host RAM, ZeRO-Offload/ZeRO-3-offload style; much slower over PCIe, and the host
     needs their bytes: see host_offload_bytes).
Shorter sequences change what is learned, so they are a rule of their own, not a ladder step.
A user's pin removes that step from the ladder.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Literal, Optional

from tuneplan.schemas import MemoryEstimate, MemorySettings, ModelSpec
from tuneplan.schemas.common import Method, Optimizer, Strategy

from .draft import Draft, Fit
from .estimator import estimate

__all__ = [
    "Fit",
    "best_fit",
    "default_optimizer",
    "estimate_for",
    "fits",
    "host_offload_bytes",
    "ladder",
    "lowest",
]


def default_optimizer(d: Draft, method: Method) -> Optimizer:
    """The optimizer a method starts from: paged 32-bit AdamW for QLoRA on NVIDIA (QLoRA repo
    default), plain AdamW otherwise. A pin wins."""
    if d.pins.optimizer:
        return d.pins.optimizer
    if method == "qlora" and d.on_cuda:
        return "paged-adamw-32bit"
    return "adamw"


def settings_for(
    d: Draft,
    method: Method,
    *,
    gradient_checkpointing: Optional[bool] = None,
    micro_batch: Optional[int] = None,
    seq_len: Optional[int] = None,
    strategy: Optional[Strategy] = None,
    optimizer: Optional[Optimizer] = None,
    lora_rank: Optional[int] = None,
    cpu_offload: Optional[bool] = None,
    gradient_accumulation_steps: Optional[int] = None,
    loss_chunk_size: Optional[int] = -1,
    activation_offload: Optional[bool] = None,
) -> MemorySettings:
    """MemorySettings for `method` under the draft, with optional overrides.

    The accumulation is not an independent choice: TP047 sets it from the final micro-batch
    (accumulation_for), so each rung is priced with the accumulation its own micro-batch implies
    (halving the micro-batch to 1/2 gives accumulation >= 2, and then the gradients persist across
    micro-batches and are resident at the loss peak). The chosen plan's estimate uses the draft's
    final micro-batch, hence the same accumulation as the plan's training section."""
    lora = method != "full"
    micro = micro_batch or d.micro_batch
    return MemorySettings(
        method=method,
        precision=d.precision,
        optimizer=(optimizer or default_optimizer(d, method)),
        gradient_checkpointing=d.gradient_checkpointing
        if gradient_checkpointing is None
        else gradient_checkpointing,
        attention=d.attention,
        micro_batch=micro,
        seq_len=seq_len or d.seq_len,
        lora_rank=(lora_rank or d.lora_rank) if lora else None,
        target_modules=list(d.target_modules) if lora else None,
        strategy=(strategy or d.strategy),
        num_devices=d.num_devices,
        cpu_offload=d.cpu_offload if cpu_offload is None else cpu_offload,
        lora_dropout=d.lora_dropout if lora else None,
        gradient_accumulation_steps=gradient_accumulation_steps or accumulation_for(d, micro),
        loss_chunk_size=d.loss_chunk_size if loss_chunk_size == -1 else loss_chunk_size,
        activation_offload=d.activation_offload if activation_offload is None else activation_offload,
        kbit_upcast=d.kbit_upcast,
    )


def accumulation_for(d: Draft, micro_batch: int) -> int:
    """Accumulation steps that keep the task's effective batch at this micro-batch: the same
    arithmetic as rule TP047 (ceil(batch / (micro x devices)))."""
    return max(1, math.ceil(d.task.batch_size / (micro_batch * d.num_devices)))


def estimate_for(d: Draft, method: Method, **overrides: Any) -> MemoryEstimate:
    """Estimate `method` on the draft's device under the draft's settings (plus overrides)."""
    return _cached_estimate(d, settings_for(d, method, **overrides))


def estimate_whole(d: Draft, est: MemoryEstimate) -> MemoryEstimate:
    """``est`` on one device, nothing sharded or offloaded: the whole model states, which is what
    a checkpoint holds (FSDP's full state dict, DeepSpeed's per-rank files add up to it), where
    ``est`` itself prices one rank's shard."""
    st = est.settings
    if st.num_devices == 1 and not st.cpu_offload:
        return est
    whole = st.model_copy(update={"strategy": "none", "num_devices": 1, "cpu_offload": False})
    return _cached_estimate(d, whole)


def _cached_estimate(d: Draft, settings: MemorySettings) -> MemoryEstimate:
    cal = tuple(sorted((d.calibration or {}).items()))
    return _estimate(
        d.inputs.model.model_dump_json(),
        settings.model_dump_json(),
        d.inputs.hardware.memory_bytes,
        "cpu" if d.on_cpu else "cuda",
        d.headroom_fraction,
        cal,
    )


@lru_cache(maxsize=4096)
def _estimate(
    model_json: str,
    settings_json: str,
    capacity: int,
    device: Literal["cuda", "cpu"],
    headroom: float,
    cal: tuple[tuple[str, float], ...],
) -> MemoryEstimate:
    model = _model_from_json(model_json)
    return estimate(
        model,
        MemorySettings.model_validate_json(settings_json),
        capacity_bytes=capacity,
        device=device,
        headroom_fraction=headroom,
        calibration=dict(cal) or None,
    )


@lru_cache(maxsize=64)
def _model_from_json(model_json: str) -> ModelSpec:
    return ModelSpec.model_validate_json(model_json)


def strategies(d: Draft) -> list[Strategy]:
    """Strategies to try, simplest first: one device has none; CPU processes use DDP (gloo)."""
    if d.num_devices == 1:
        return ["none"]
    if d.on_cpu:
        return ["ddp"]
    return ["ddp", "deepspeed-zero2", "fsdp"]


def ladder(
    d: Draft, method: Method, *, seq_len: Optional[int] = None, lora_rank: Optional[int] = None
) -> list[Fit]:
    """Every rung of the fitting ladder for `method`, cheapest first (see module docstring)."""
    base_opt = default_optimizer(d, method)
    opt_steps: list[Optimizer] = [base_opt]
    if method == "full" and d.on_cuda and not d.pins.optimizer and base_opt == "adamw":
        opt_steps.append("adamw-8bit")
    micro_steps: list[int] = []
    mb = d.micro_batch
    while True:
        micro_steps.append(mb)
        if mb == 1:
            break
        mb = max(1, mb // 2)
    rungs: list[Fit] = []
    for micro in micro_steps:
        for opt in opt_steps:
            for gc, chunk, off in saver_steps(d, micro, seq_len or d.seq_len):
                for strat in strategies(d):
                    est = estimate_for(
                        d,
                        method,
                        gradient_checkpointing=gc,
                        micro_batch=micro,
                        strategy=strat,
                        optimizer=opt,
                        seq_len=seq_len,
                        lora_rank=lora_rank,
                        loss_chunk_size=chunk,
                        activation_offload=off,
                    )
                    rungs.append(Fit(est, gc, micro, strat, opt, False, chunk, off))
    if offload_possible(d):
        unpaged: dict[Optimizer, Optimizer] = {"paged-adamw-32bit": "adamw", "paged-adamw-8bit": "adamw-8bit"}
        for micro in micro_steps:
            for opt in dict.fromkeys(unpaged.get(o, o) for o in opt_steps):
                for gc, chunk, off in saver_steps(d, micro, seq_len or d.seq_len):
                    est = estimate_for(
                        d,
                        method,
                        gradient_checkpointing=gc,
                        micro_batch=micro,
                        strategy="fsdp",
                        optimizer=opt,
                        seq_len=seq_len,
                        lora_rank=lora_rank,
                        cpu_offload=True,
                        loss_chunk_size=chunk,
                        activation_offload=off,
                    )
                    rungs.append(Fit(est, gc, micro, "fsdp", opt, True, chunk, off))
    return rungs


SLOWDOWN = {"loss_chunking": 0.0, "gradient_checkpointing": 0.81, "activation_offload": 0.67}
"""Step-time cost of each activation saver, as a fraction of the plain step, measured on the
embedded SmolLM2-135M (LoRA r=8 all-linear, fp32, 1 x 256 tokens) on this repository's shared
2-core CPU machine by benchmarks/memory_rungs.py (2 rounds x 2 timed steps, interleaved):
plain 16.8 s, chunked CE 13.6 s (-18.8%: no measurable cost, recorded as 0), gradient
checkpointing 30.4 s (+81%), activation offload 28.0 s (+67%, host copies only). The machine was
heavily shared, so these are rough. On a GPU, offload also moves every saved tensor over PCIe
twice per step (host_bytes each way), which a CPU cannot show; that is why it comes last
(SAVER_ORDER)."""

SAVER_ORDER = ("loss_chunking", "gradient_checkpointing", "activation_offload")
"""The order the ladder tries the savers in: least time first. Chunking costs one extra lm_head
forward; checkpointing one extra forward of every block (~20-33%, Korthikanti et al. 2022);
offload, on a GPU, PCIe transfers of all saved activations each way (torchtune docs: 'can
slow training'), but it keeps the least on the device, so it is the last of them."""

PCIE_BYTES_PER_S = 25 * 10**9
"""Effective host<->device bandwidth assumed when stating offload's transfer time: PCIe 4.0 x16
is 32 GB/s raw, ~25 GB/s achieved with pinned memory (NVIDIA bandwidthTest figures) [S]."""


LOSS_CHUNKS = 8
"""Chunks per micro-batch when the ladder turns chunked cross-entropy on (torchtune's
num_output_chunks default)."""


def chunk_tokens(micro_batch: int, seq_len: int) -> int:
    """Tokens per loss chunk the ladder picks: the micro-batch's tokens in LOSS_CHUNKS pieces."""
    return max(1, math.ceil(micro_batch * seq_len / LOSS_CHUNKS))


def saver_steps(d: Draft, micro_batch: int, seq_len: int) -> list[tuple[bool, Optional[int], bool]]:
    """(gradient_checkpointing, loss_chunk_size, activation_offload) rungs in SAVER_ORDER, each
    keeping the savers before it. A pin fixes its setting and removes its rung; offload is a rung on
    CUDA only (on a CPU the host is the device) and replaces checkpointing, under which it would
    move nothing."""
    p = d.pins
    gc = d.gradient_checkpointing if p.gradient_checkpointing is None else p.gradient_checkpointing
    chunk = p.loss_chunk_size if p.loss_chunk_size is not None else d.loss_chunk_size
    off = d.activation_offload if p.activation_offload is None else p.activation_offload
    steps = [(gc, chunk, off)]
    for saver in SAVER_ORDER:
        g, c, o = steps[-1]
        if saver == "loss_chunking" and p.loss_chunk_size is None and c is None:
            steps.append((g, chunk_tokens(micro_batch, seq_len), o))
        elif saver == "gradient_checkpointing" and p.gradient_checkpointing is None and not g:
            steps.append((True, c, o))
        elif saver == "activation_offload" and p.activation_offload is None and not o and d.on_cuda:
            # offload moves nothing under checkpointing: it replaces it (unless checkpointing is pinned on)
            if p.gradient_checkpointing is not True:
                steps.append((False, c, True))
    return steps


def offload_possible(d: Draft) -> bool:
    """CPU offload is a rung only on several GPUs (FSDP CPUOffload / ZeRO-3 offload shard first).
    Paged 8-bit/32-bit optimizers already page to host memory, so they do not combine with it."""
    paged_pin = (d.pins.optimizer or "").startswith("paged-")
    return d.on_cuda and d.num_devices > 1 and not d.cpu_offload and not paged_pin


def host_offload_bytes(d: Draft, fit: Fit) -> int:
    """Host RAM one node needs for an offloaded fit: the parameters, gradients and optimizer
    states its GPUs would hold under FSDP without offload (per device x GPUs per node)."""
    # Accumulation >= 2 so the estimate counts the gradients in full (stored, not just their excess
    # over the activations at the peak): host RAM holds them whatever the phase.
    est = estimate_for(
        d,
        d.chosen_method,
        gradient_checkpointing=fit.gradient_checkpointing,
        micro_batch=fit.micro_batch,
        strategy="fsdp",
        optimizer=fit.optimizer,
        cpu_offload=False,
        gradient_accumulation_steps=2,
        loss_chunk_size=fit.loss_chunk_size,
        activation_offload=fit.activation_offload,
    )
    b = est.breakdown
    per_device = b.weights + b.quantization_constants + b.adapter_weights + b.gradients + b.optimizer_states
    return int(per_device * getattr(d.hardware, "count", 1))


def best_fit(
    d: Draft, method: Method, *, seq_len: Optional[int] = None, lora_rank: Optional[int] = None
) -> Optional[Fit]:
    """The cheapest rung of the ladder that fits, or None."""
    for rung in ladder(d, method, seq_len=seq_len, lora_rank=lora_rank):
        if rung.fits:
            return rung
    return None


def lowest(d: Draft, method: Method, *, seq_len: Optional[int] = None) -> Fit:
    """The smallest-memory rung of the ladder (used to price a method that never fits)."""
    return min(ladder(d, method, seq_len=seq_len), key=lambda f: f.estimate.per_device_bytes)


def fits(d: Draft, method: Method, *, seq_len: Optional[int] = None, lora_rank: Optional[int] = None) -> bool:
    """Whether `method` fits at some rung of the ladder."""
    return best_fit(d, method, seq_len=seq_len, lora_rank=lora_rank) is not None
