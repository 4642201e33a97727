"""result.json: what one executed plan measured. Written atomically by the executor, then landed in
DuckDB; `tuneplan runs ingest` rebuilds database rows from these files alone."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .common import Method, Strict

RunStatus = Literal["running", "succeeded", "failed", "interrupted"]


class MeasuredMemory(Strict):
    """Measured memory of a run, by how it was measured."""

    device_kind: Literal["cpu", "cuda", "other"]
    """Where training ran."""
    peak_bytes: int = Field(ge=0)
    """The measured peak, compared with the plan's per-device prediction. CUDA:
    torch.cuda.max_memory_allocated. CPU: runtime_bytes (the process RSS before the model was
    loaded: Python + torch + transformers + peft) + the peak of live CPU tensor bytes during a
    profiled training step (parameters, gradients and optimizer states alive at its start + the
    highest running sum of allocations minus frees up to the end of optimizer.step(): saved
    activations, logits and loss copies, backward transients, gradients). Only designated steps
    are profiled (the 2nd, and later ones with a longer micro-batch; the run's substitutions name
    them). Excludes allocator fragmentation and memory taken outside torch's allocator. The
    like-for-like figure, compared with the prediction less its framework overhead, is
    peak_bytes - runtime_bytes (tensor bytes only; executor/memory_compare.py)."""
    runtime_bytes: int = Field(default=0, ge=0)
    """The part of peak_bytes that is the process runtime, not tensors. CPU: the process RSS
    before the model was loaded (Python + torch + transformers + peft). 0 on CUDA, where
    max_memory_allocated excludes the CUDA context. 0 in results written before it was recorded."""
    params_bytes: int = Field(default=0, ge=0)
    """Bytes of all model parameters (and quantisation buffers) as loaded."""
    grads_bytes: int = Field(default=0, ge=0)
    """Bytes of gradients held by trainable parameters."""
    optimizer_bytes: int = Field(default=0, ge=0)
    """Bytes of optimizer state tensors."""
    saved_tensors_peak_bytes: int = Field(default=0, ge=0)
    """Peak bytes of tensors autograd saved for backward (saved-tensor hooks), CPU runs."""
    cuda_max_allocated_bytes: Optional[int] = None
    """torch.cuda.max_memory_allocated, CUDA runs."""
    cuda_max_reserved_bytes: Optional[int] = None
    """torch.cuda.max_memory_reserved, CUDA runs."""
    rss_peak_bytes: Optional[int] = None
    """Process peak resident set size (ru_maxrss), includes the Python runtime and libraries."""


class Resume(Strict):
    """One `tuneplan run --resume` of a run."""

    resumed_at: str
    """UTC time the resume started (ISO 8601)."""
    from_step: int = Field(ge=0)
    """Optimizer step of the checkpoint it continued from."""
    checkpoint: str
    """The checkpoint directory loaded."""
    previous_status: str
    """The run's status before the resume (interrupted or failed)."""
    previous_error: Optional[str] = None
    """Why it had stopped."""


class RunResult(Strict):
    """One run of one plan: the promise (predictions) next to what happened (measurements)."""

    run_id: str
    """Unique id (timestamp + short hash)."""
    status: RunStatus
    """running | succeeded | failed | interrupted."""
    error: Optional[str] = None
    """Error type and message when failed or interrupted."""
    plan_hash: str
    """sha256 of the canonical plan JSON (first 16 hex digits)."""
    method: Method
    """Method executed."""
    model: str
    """Model name as planned."""
    hardware: str
    """Device description, e.g. "cpu (2 cores)" or "cuda: NVIDIA H200"."""
    num_processes: int = Field(default=1, ge=1)
    """Processes that trained."""
    strategy: str = "none"
    """Distributed strategy used."""
    started_at: str
    """ISO-8601 UTC start time."""
    finished_at: Optional[str] = None
    """ISO-8601 UTC end time."""
    run_dir: str
    """Run directory (plan.json, metrics.jsonl, result.json, artefact)."""
    predicted_peak_bytes: int = Field(ge=0)
    """plan.memory.per_device_bytes."""
    predicted_fits: bool = True
    """plan.memory.fits."""
    measured: Optional[MeasuredMemory] = None
    """Measured memory; null if the run died before measuring."""
    forgetting_tolerance: Optional[str] = None
    """The plan's stated tolerance, for checks."""
    domain_distance: Optional[str] = None
    """The plan's stated domain distance."""
    eval_loss_before: Optional[float] = None
    """In-domain eval loss before training."""
    eval_loss_after: Optional[float] = None
    """In-domain eval loss after training (learning = before - after)."""
    forgetting_loss_before: Optional[float] = None
    """General-text probe loss before training."""
    forgetting_loss_after: Optional[float] = None
    """General-text probe loss after training (forgetting = after - before)."""
    steps: int = Field(default=0, ge=0)
    """Optimizer steps completed."""
    tokens: int = Field(default=0, ge=0)
    """Training tokens processed (non-padding)."""
    tokens_per_second: Optional[float] = None
    """Training throughput (tokens / training seconds)."""
    wall_seconds: Optional[float] = None
    """Wall time of the whole run."""
    trainable_params: Optional[int] = None
    """Parameters that received gradients."""
    total_params: Optional[int] = None
    """All parameters of the loaded model."""
    artifact_path: Optional[str] = None
    """Saved adapter or full weights."""
    artifact_bytes: Optional[int] = None
    """Size of the artefact on disk."""
    substitutions: list[str] = Field(default_factory=list)
    """Every place the executor could not honour the plan exactly (e.g. bf16 -> fp32 on CPU)."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Library versions (torch, transformers, peft, bitsandbytes, accelerate, tuneplan)."""
    trust_remote_code: bool = False
    """Whether the model was allowed to run its own code."""
    data_path: Optional[str] = None
    """Training data used."""
    checkpoint_dir: Optional[str] = None
    """Newest complete checkpoint (`tuneplan run --resume` continues from it); null when none."""
    checkpoints_saved: int = Field(default=0, ge=0)
    """Checkpoints written by this run (over all its resumes)."""
    checkpoint_bytes: Optional[int] = None
    """Bytes on disk of the newest checkpoint (compare with the plan's training.checkpoint_bytes)."""
    checkpoint_seconds: Optional[float] = None
    """Mean wall seconds one checkpoint save took (the loop is paused meanwhile)."""
    resumes: list[Resume] = Field(default_factory=list)
    """One entry per `--resume`: {resumed_at, from_step, checkpoint, previous_status}."""
    stop_reason: Optional[str] = None
    """Why training ended before its planned steps (signal, early stop, failed checkpoint)."""
    early_stopped: bool = False
    """Stopped by training.early_stop_patience (the run still succeeds)."""
    best_step: Optional[int] = None
    """Step with the lowest eval loss during training (eval_every_steps)."""
    best_eval_loss: Optional[float] = None
    """That lowest eval loss."""
    packing: bool = False
    """Whether examples were packed into sequences."""
    padding_fraction: Optional[float] = None
    """Share of the trained batch positions that were padding (0..1)."""
    padded_tokens_per_second: Optional[float] = None
    """Throughput counting padding positions too (tokens_per_second counts real tokens only)."""
