"""plan.json: the advisor's output and the executor's input. External API — paths are stable."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .common import (
    Attention,
    LRScheduler,
    Method,
    Optimizer,
    Precision,
    Strategy,
    Strict,
)
from .inputs import Inputs

SCHEMA_VERSION = "1.0"


class Training(Strict):
    """Optimisation settings the executor applies as given."""

    learning_rate: float = Field(gt=0, lt=1)
    """Peak learning rate. LoRA wants ~10x full fine-tuning's (LoRA Without Regret; Biderman 2024)."""
    learning_rate_band: Optional[list[float]] = Field(default=None, min_length=3, max_length=3)
    """The sweep band around the advised rate: [LR/3, LR, 3·LR] (published sweeps' grids are ~3x
    apart). `tuneplan sweep --lr band` runs these three; null in plans written before it existed."""
    lr_scheduler: LRScheduler = "cosine"
    """Schedule after warmup. QLoRA used constant; Biderman et al. cosine."""
    warmup_ratio: float = Field(default=0.03, ge=0, le=0.5)
    """Fraction of steps spent warming up linearly from 0. 0..0.5."""
    num_epochs: Optional[float] = Field(default=None, gt=0)
    """Passes over the data; exclusive with max_steps."""
    max_steps: Optional[int] = Field(default=None, ge=1)
    """Optimizer steps; exclusive with num_epochs. Wins when both are known to the executor."""
    planned_steps: Optional[int] = Field(default=None, ge=1)
    """Optimizer steps the plan expects: epochs x ceil(training rows / effective batch) when the
    data was read (`advise --data`), else max_steps or null. Informational: the executor counts
    its own from num_epochs."""
    per_device_batch_size: int = Field(ge=1)
    """Sequences per device per forward/backward (micro-batch). Memory grows linearly with it."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-batches accumulated per optimizer step; trades time for memory at the same effective
    batch."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping threshold (L2). QLoRA used 0.3."""
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    """Decoupled AdamW weight decay."""
    optimizer: Optimizer = "adamw"
    """adamw: 8 bytes/param of fp32 state; adamw-8bit: 2 bytes/param; paged-*: bitsandbytes paged
    states that spill to CPU on CUDA memory spikes (QLoRA §3)."""
    precision: Precision = "bf16-mixed"
    """bf16-mixed: fp32 master weights, bf16 compute; bf16: pure bf16 weights and states;
    fp16-mixed: for cards without bf16 (needs loss scaling); fp32: CPU default."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: keeps ~one layer input per block instead of all
    activations (Korthikanti et al. 2022), at ~20-33% more compute."""
    attention: Attention = "sdpa"
    """eager materialises the b*a*s*s score matrix; sdpa/flash do not."""
    seq_len: int = Field(ge=16)
    """Tokens per sequence after any shortening the advisor applied."""
    seed: int = 1234
    """Random seed for data order and adapter initialisation."""
    activation_offload: bool = False
    """Move what autograd saves for backward to host RAM during forward and bring it back in
    backward (torch saved-tensor hooks; torchtune's OffloadActivations). Device memory keeps about
    one block's tensors in flight; host RAM holds the rest (priced in memory.terms). Costs a copy of
    every saved tensor each way (PCIe on a GPU); no saving of the checkpointed block inputs under
    gradient checkpointing (torch.utils.checkpoint holds those itself)."""
    loss_chunk_size: Optional[int] = Field(default=None, ge=1)
    """Tokens per chunk of the cross-entropy: lm_head + loss run chunk by chunk and are recomputed in
    backward, so the full-vocabulary logits of the micro-batch never exist at once (at 128k-256k
    vocabularies they dominate). None: one pass over the whole micro-batch. Costs one extra lm_head
    forward; ignored (stated) under several processes."""
    save_every_steps: Optional[int] = Field(default=None, ge=1)
    """Write a resumable checkpoint (trainable weights - the adapter alone for LoRA/QLoRA -,
    optimizer, scheduler, RNG states, gradient scaler, data position, metrics so far) every N
    optimizer steps; null: only on SIGTERM/SIGINT. Each save costs about checkpoint_bytes of disk
    writes and a pause of the loop; `tuneplan run --resume` continues from the newest one."""
    save_every_minutes: Optional[float] = Field(default=None, gt=0)
    """Also checkpoint when this many minutes of wall time passed since the last save (whichever of
    this and save_every_steps comes first); null: by steps only. Spot instances: 10-30."""
    save_total_limit: int = Field(default=2, ge=1, le=100)
    """Checkpoints kept: older ones are deleted once a newer one is complete. 2 survives one
    checkpoint being corrupted by a crash mid-write elsewhere; each costs checkpoint_bytes."""
    checkpoint_bytes: Optional[int] = Field(default=None, ge=0)
    """Estimated bytes of one checkpoint: trainable weights + optimizer states of the whole model
    (every rank's share, as FSDP's full state dict and DeepSpeed's per-rank files hold them, none
    offloaded), from the memory estimate's breakdown on one device (adapter_weights or weights,
    optimizer_states; RNG/scheduler/data state are a few KB). Null in plans written before it
    existed."""
    packing: bool = False
    """Concatenate several examples into each seq_len sequence (position ids reset per example,
    first token of each example not trained), so fewer steps carry the same trained tokens and
    little padding. Off by default: with sdpa/eager attention, packed examples attend to each
    other (flash_attention_2 isolates them by position ids), which matters for chat data."""
    eval_every_steps: Optional[int] = Field(default=None, ge=1)
    """Evaluate eval and probe loss every N optimizer steps during training (logged in
    metrics.jsonl, best step recorded); null: only before and after. Each costs one evaluation
    (TUNEPLAN_EVAL_BATCHES batches of each)."""
    early_stop_patience: Optional[int] = Field(default=None, ge=1)
    """Stop when the eval loss has not improved for this many evaluations in a row (needs
    eval_every_steps); the run succeeds and records that it stopped early. Null: never."""

    @field_validator("early_stop_patience")
    @classmethod
    def _patience_needs_evaluations(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        # eval_every_steps is declared first, so it is in info.data when it was valid itself
        if v is not None and "eval_every_steps" in info.data and info.data["eval_every_steps"] is None:
            raise ValueError("needs evaluations to count: set training.eval_every_steps too")
        return v

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "Training":
        if self.num_epochs is None and self.max_steps is None:
            raise ValueError("set num_epochs or max_steps")
        return self


class LoraSettings(Strict):
    """LoRA adapter configuration (null for full fine-tuning)."""

    rank: int = Field(ge=1, le=4096)
    """r: width of the update BA. A knob, not the lever (Biderman 2024; QLoRA §4)."""
    alpha: float = Field(gt=0)
    """Scale numerator: update scaled by alpha/r (or alpha/sqrt(r) with rsLoRA)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter input. 0.05-0.1 for models up to 13B (QLoRA scripts)."""
    target_modules: list[str] = Field(min_length=1)
    """The architecture's module names the adapters wrap (all linear layers by default)."""
    use_rslora: bool = False
    """Scale by alpha/sqrt(r) (rank-stabilised LoRA); helps at high ranks."""
    alpha_convention: str = "alpha = 2r"
    """How alpha was set, stated so learning rates transfer (alpha and LR trade off): "fixed"
    (alpha 32 whatever the rank, the advisor's default), "pinned" (--lora-alpha), or "alpha = 2r"
    (plans written before the fixed convention; the default when the field is absent)."""


class Quantization(Strict):
    """4-bit storage of the frozen base for QLoRA."""

    bits: Literal[4] = 4
    """Storage bits per base weight."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """NF4 is the QLoRA recipe; FP4 trails it by about a point of MMLU (QLoRA Table 4)."""
    double_quant: bool = True
    """Quantise the quantisation constants too: 4.127 instead of 4.5 bits/param (QLoRA §3)."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype matmuls dequantise into. bf16 on capable cards; fp16 is less stable."""
    kbit_upcast: bool = True
    """True: peft's prepare_model_for_kbit_training, which casts every non-quantised 16-bit parameter
    (embeddings, lm_head, norms) to fp32 (+2 B/param on those and an fp32 residual stream). False:
    they stay in the compute dtype, as in the QLoRA paper's qlora.py and torchtune (less memory)."""


class MemoryBreakdown(Strict):
    """Predicted peak bytes per device, by component. They sum to per_device_bytes."""

    weights: int = Field(ge=0)
    """Model weights as stored on the device (after sharding), incl. fp32 master copies."""
    quantization_constants: int = Field(ge=0)
    """NF4 block constants (absmax and, with double quantisation, its second level)."""
    adapter_weights: int = Field(ge=0)
    """LoRA A and B matrices."""
    gradients: int = Field(ge=0)
    """Gradients of the trainable parameters."""
    optimizer_states: int = Field(ge=0)
    """Optimizer moments (and fp32 master copies under mixed precision when not in weights)."""
    activations: int = Field(ge=0)
    """Tensors saved for backward across all blocks."""
    logits_and_loss: int = Field(ge=0)
    """Logits, their fp32 upcast and gradient for the loss."""
    framework_overhead: int = Field(ge=0)
    """CUDA context, allocator fragmentation and temporary buffers."""

    @property
    def total(self) -> int:
        return sum(getattr(self, f) for f in type(self).model_fields)


class MemoryTerm(Strict):
    """One itemised line of the estimate with the formula it came from."""

    component: Literal[
        "weights",
        "quantization_constants",
        "adapter_weights",
        "gradients",
        "optimizer_states",
        "activations",
        "logits_and_loss",
        "framework_overhead",
    ]
    """Which breakdown entry this line adds to."""
    label: str
    """What is counted, for people."""
    bytes: int = Field(ge=0)
    """Bytes on each device."""
    formula: str
    """The arithmetic, with the numbers used."""
    source: str
    """Where the formula comes from."""


class MemorySettings(Strict):
    """The settings an estimate was computed under."""

    method: Method
    """Method estimated."""
    precision: Precision
    """Training precision."""
    optimizer: Optimizer
    """Optimizer."""
    gradient_checkpointing: bool
    """Activation recomputation on/off."""
    attention: Attention
    """Attention implementation."""
    micro_batch: int = Field(ge=1)
    """Sequences per device per step."""
    seq_len: int = Field(ge=1)
    """Tokens per sequence."""
    lora_rank: Optional[int] = None
    """LoRA rank (None for full)."""
    target_modules: Optional[list[str]] = None
    """LoRA targets (None for full)."""
    strategy: Strategy = "none"
    """How state is spread over devices."""
    num_devices: int = Field(default=1, ge=1)
    """Devices sharing the model under the strategy."""
    cpu_offload: bool = False
    """Whether optimizer states and parameters are offloaded to host memory (ZeRO-Offload/FSDP)."""
    lora_dropout: Optional[float] = Field(default=None, ge=0, lt=1)
    """LoRA dropout; > 0 makes each adapter keep its own dropped copy of its input for backward.
    None: assume dropout is on."""
    double_quant: bool = True
    """QLoRA double quantisation (4.127 vs 4.5 bits/param)."""
    loss_chunk_size: Optional[int] = Field(default=None, ge=1)
    """Tokens per chunk when cross-entropy is computed in chunks (training.loss_chunk_size: lm_head +
    loss per chunk, recomputed in backward); None: logits for the whole micro-batch at once, as
    transformers does."""
    kbit_upcast: bool = True
    """QLoRA only: quantization.kbit_upcast (non-quantised parameters cast to fp32 by peft)."""
    activation_offload: bool = False
    """training.activation_offload: saved activations live in host RAM, one block in flight."""
    untied_head: bool = False
    """Price a tied-embedding model as a stack that unties lm_head (its own V x h weight, with
    gradients and optimizer states under full fine-tuning). The executor keeps ties as loaded."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-batches per optimizer step. Above 1 the gradients persist across micro-batches, so they
    are resident at the forward/loss peak; at 1 (with zero_grad(set_to_none=True)) they are created
    during backward as activations are freed, and only count where they exceed them."""


class MemoryEstimate(Strict):
    """Predicted peak memory on each device for one method and its settings."""

    method: Method
    """Method estimated."""
    per_device_bytes: int = Field(ge=0)
    """Predicted whole-device need: every breakdown component, including the CUDA context (CPU:
    the Python/torch process) and allocator fragmentation. What must fit; compare it with
    nvidia-smi / the device's capacity."""
    allocated_peak_bytes: Optional[int] = Field(default=None, ge=0)
    """Predicted tensor bytes at the peak: per_device_bytes less framework_overhead (context,
    runtime, fragmentation). Compare it with torch.cuda.max_memory_allocated and with published
    peaks, which leave the context out (CPU: the executor's live-tensor peak). None only in plans
    written before this field existed (then it is per_device_bytes - framework_overhead)."""
    host_bytes: int = Field(default=0, ge=0)
    """Host RAM the settings move off the device (activation offload), per device; not in
    per_device_bytes."""
    device_capacity_bytes: int = Field(gt=0)
    """Memory of one device."""
    usable_bytes: int = Field(gt=0)
    """Capacity less the stated headroom; the fit test compares against this."""
    fits: bool
    """per_device_bytes <= usable_bytes."""
    headroom_bytes: int
    """device_capacity_bytes - per_device_bytes (negative when it does not fit)."""
    headroom_fraction: float = Field(ge=0, lt=1)
    """Share of capacity kept free for fragmentation and spikes."""
    breakdown: MemoryBreakdown
    """Bytes by component."""
    terms: list[MemoryTerm]
    """Itemised lines with formulas and sources."""
    settings: MemorySettings
    """Settings the estimate assumes."""
    trainable_params: int = Field(ge=0)
    """Trainable parameter count."""
    calibration_factor: Optional[float] = None
    """Multiplier applied from `tuneplan calibrate`, when --calibrated."""


class Alternative(Strict):
    """A method the advisor did not choose, priced under its own best settings."""

    method: Method
    """The other method."""
    per_device_bytes: int = Field(ge=0)
    """Its predicted peak per device."""
    fits: bool
    """Whether it fits the device."""
    reason: str
    """Why it was not chosen."""
    estimate: MemoryEstimate
    """Its full itemised estimate."""


class Distributed(Strict):
    """How the run spreads over processes."""

    num_processes: int = Field(default=1, ge=1)
    """Total processes (devices) across all nodes."""
    strategy: Strategy = "none"
    """none: one device; ddp: replicas; deepspeed-zero2: shard optimizer+gradients; fsdp /
    deepspeed-zero3: shard parameters, gradients and optimizer states."""
    num_nodes: int = Field(default=1, ge=1)
    """Machines."""
    cpu_offload: bool = False
    """Offload parameters/optimizer states to host memory."""


class Decision(Strict):
    """One rule that fired, in order."""

    rule: str
    """Rule id, e.g. "TP010"."""
    name: str
    """Rule name, kebab-case."""
    message: str
    """What the rule decided and why, with the numbers."""
    source: str
    """Paper/section or document the rule rests on."""


class DataSpec(Strict):
    """Datasets the executor reads; null until known."""

    train_path: Optional[str] = None
    """Training data file (JSONL, JSON, CSV or Parquet)."""
    eval_path: Optional[str] = None
    """In-domain eval file; carved off the training data when absent."""
    probe_path: Optional[str] = None
    """General-text forgetting probe; the built-in probe when absent."""
    eval_fraction: float = Field(default=0.1, gt=0, lt=1)
    """Share of training rows held out when eval_path is absent."""
    skip_bad_rows: bool = False
    """Skip (and count) malformed rows instead of failing with file:line."""


class Plan(Strict):
    """A complete, validated fine-tuning plan."""

    schema_version: str = SCHEMA_VERSION
    """Version of this schema."""
    tuneplan_version: str
    """tuneplan release that wrote the plan."""
    method: Method
    """Chosen method."""
    feasible: bool
    """False when nothing fits; `ways_out` then says what would."""
    training: Training
    """Optimisation settings."""
    lora: Optional[LoraSettings]
    """Adapter settings; null for full fine-tuning."""
    quantization: Optional[Quantization]
    """4-bit base settings for QLoRA; null otherwise."""
    memory: MemoryEstimate
    """Prediction for the chosen method."""
    alternatives: list[Alternative]
    """The other methods, each priced and with the reason it was not chosen."""
    distributed: Distributed = Field(default_factory=Distributed)
    """Process layout."""
    decisions: list[Decision]
    """Every rule that fired, in order."""
    warnings: list[str] = Field(default_factory=list)
    """Things the user should know (disagreements with pins, capacity ceilings, …)."""
    ways_out: list[str] = Field(default_factory=list)
    """When infeasible: concrete changes that would make a plan fit."""
    inputs: Inputs
    """What the plan was computed from."""
    data: Optional[DataSpec] = None
    """Datasets; filled by the user or the executor."""
    trust_remote_code: bool = False
    """Records whether the model directory's own Python (modeling_*.py) was allowed to run.
    Only the command line's ``--trust-remote-code`` (run, compare, merge) turns it on; set in a
    plan file it has no effect beyond a warning. Never on in validate, advise or --dry-run."""

    @model_validator(mode="after")
    def _consistent(self) -> "Plan":
        problems = []
        if self.method == "full" and self.lora is not None:
            problems.append("lora must be null when method is 'full'")
        if self.method in ("lora", "qlora") and self.lora is None:
            problems.append(f"lora settings are required when method is '{self.method}'")
        if self.method == "qlora" and self.quantization is None:
            problems.append("quantization is required when method is 'qlora'")
        if self.method != "qlora" and self.quantization is not None:
            problems.append("quantization must be null unless method is 'qlora'")
        if self.memory.method != self.method:
            problems.append("memory.method must equal method")
        if problems:
            raise ValueError("; ".join(problems))
        return self
