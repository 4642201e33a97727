"""What the advisor is asked about: the hardware, the model and the task (plus the user's pins)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from .common import (
    Attention,
    DomainDistance,
    ForgettingTolerance,
    Method,
    Optimizer,
    Precision,
    Regime,
    Strict,
)
from .distance import DistanceEvidence

# --------------------------------------------------------------------------- hardware


class GPUHardware(Strict):
    """One or more identical GPUs, on one or several nodes."""

    kind: Literal["gpu"] = "gpu"
    """Discriminator: this hardware is a set of GPUs."""
    name: str = Field(min_length=1)
    """Card name as shown to people, e.g. "NVIDIA A100 80GB" or "custom 24 GiB"."""
    memory_bytes: int = Field(gt=0)
    """Memory of ONE card in bytes (not the sum). Range: > 0. The advisor plans per device."""
    count: int = Field(default=1, ge=1, le=4096)
    """GPUs per node. 1..4096. More GPUs allow DDP/FSDP/ZeRO sharding; each adds communication."""
    nodes: int = Field(default=1, ge=1, le=1024)
    """Number of nodes (machines), each with `count` GPUs. 1..1024."""
    bf16: bool = True
    """Whether the card computes in bfloat16 (Ampere and newer). Without it the plan uses fp16
    mixed precision, which needs loss scaling and is less stable (QLoRA README)."""
    vendor: Literal["nvidia", "amd", "intel", "other"] = "nvidia"
    """Who makes the card. Paged optimizers (bitsandbytes + CUDA unified memory) need NVIDIA."""

    @property
    def total_devices(self) -> int:
        return self.count * self.nodes


class CPUHardware(Strict):
    """Training on the host CPU and its RAM (slow, but real: tuneplan's own CI does it)."""

    kind: Literal["cpu"] = "cpu"
    """Discriminator: this hardware is a CPU."""
    name: str = Field(default="cpu", min_length=1)
    """CPU model name, for people."""
    memory_bytes: int = Field(gt=0)
    """RAM available to training in bytes. Range: > 0."""
    cores: int = Field(default=1, ge=1)
    """Logical cores. More cores speed up matmuls; memory planning ignores it."""
    bf16: bool = False
    """Whether to plan bf16 compute. Off by default: many CPUs emulate bf16 slowly, so fp32 is the
    safe CPU default."""
    count: int = Field(default=1, ge=1, le=64)
    """Processes to run on this host (gloo backend). Each process holds a full replica under DDP."""
    nodes: int = Field(default=1, ge=1, le=1)
    """Always 1 for CPU plans."""

    @property
    def total_devices(self) -> int:
        return self.count


Hardware = Annotated[Union[GPUHardware, CPUHardware], Field(discriminator="kind")]

# --------------------------------------------------------------------------- model


class LinearModule(Strict):
    """One kind of linear layer inside a transformer block (a LoRA target candidate)."""

    name: str = Field(min_length=1)
    """The architecture's own module name as peft matches it, e.g. "q_proj" or "c_attn"."""
    in_features: int = Field(gt=0)
    """Input width of the layer."""
    out_features: int = Field(gt=0)
    """Output width of the layer."""
    kind: Literal["attention", "mlp"]
    """Which sub-block the layer belongs to. LoRA on MLP layers carries most of the gain
    (Biderman et al. 2024 §4.7); all-linear is the default."""
    bias: bool = False
    """Whether the layer has a bias vector (counted as a frozen parameter)."""
    experts: int = Field(default=1, ge=1)
    """Copies of this layer in one block: 1 for a dense layer, the routed-expert count for a
    mixture-of-experts projection (transformers >= 5 stores them fused as one 3-D parameter, e.g.
    "experts.gate_up_proj", which peft adapts through target_parameters). Every copy is resident
    in memory whether or not a token is routed to it."""
    active_experts: Optional[int] = Field(default=None, ge=1)
    """Copies each token passes through (top-k routing); null means all. Activations and FLOPs
    scale with it, weights, gradients and optimizer states with `experts`."""

    @property
    def weight_params(self) -> int:
        """Weights of all copies (all experts are resident)."""
        return self.in_features * self.out_features * self.experts

    @property
    def active_weight_params(self) -> int:
        """Weights one token multiplies through (top-k experts)."""
        return self.in_features * self.out_features * (self.active_experts or self.experts)

    def lora_params(self, rank: int) -> int:
        """LoRA adds A (r x in) and B (out x r): r * (in + out) parameters (LoRA paper §4.1); a fused
        expert parameter gets one pair per expert (peft ParamWrapper: A is (r*E) x in, B out x (r*E))."""
        return rank * (self.in_features + self.out_features) * self.experts


class ParamCounts(Strict):
    """Parameter counts by module type, exact for catalog and config models."""

    embedding: int = Field(ge=0)
    """Token (and learned position) embedding parameters."""
    attention: int = Field(ge=0)
    """All attention linear layers over all blocks, weights and biases."""
    mlp: int = Field(ge=0)
    """All MLP linear layers over all blocks, weights and biases."""
    norm: int = Field(ge=0)
    """Normalisation parameters (all LayerNorm/RMSNorm weights and biases)."""
    lm_head: int = Field(ge=0)
    """Output projection parameters; 0 when tied to the input embedding."""

    @property
    def linear(self) -> int:
        return self.attention + self.mlp

    @property
    def total(self) -> int:
        return self.embedding + self.attention + self.mlp + self.norm + self.lm_head


class ModelSpec(Strict):
    """The architecture facts the estimator and the rules need, for one causal LM."""

    name: str = Field(min_length=1)
    """Identifier, e.g. "meta-llama/Llama-3.1-8B", a local path, or "guess-7B"."""
    family: str = Field(min_length=1)
    """Architecture family ("llama", "qwen2", "gemma2", "phi3", "mistral", "gpt2", "gpt3")."""
    origin: Literal["catalog", "config", "guess"] = "catalog"
    """Where the numbers come from: the built-in catalog, a local config.json, or a guess from a
    parameter count (--params), which the plan flags."""
    source: str = ""
    """Citation for the numbers (config file, paper section)."""
    num_layers: int = Field(gt=0)
    """Transformer blocks (L)."""
    hidden_size: int = Field(gt=0)
    """Model width (h)."""
    intermediate_size: int = Field(gt=0)
    """MLP inner width (ffn)."""
    num_attention_heads: int = Field(gt=0)
    """Query heads (a)."""
    num_key_value_heads: int = Field(gt=0)
    """Key/value heads; fewer than query heads under grouped-query attention."""
    head_dim: int = Field(gt=0)
    """Per-head width; usually hidden_size / num_attention_heads (Gemma 2 differs)."""
    vocab_size: int = Field(gt=0)
    """Vocabulary size (V); sets the logits' size b*s*V."""
    max_position_embeddings: int = Field(default=2048, gt=0)
    """Longest context the model was trained for."""
    tie_word_embeddings: bool = False
    """Whether lm_head shares the input embedding's weights."""
    gated_mlp: bool = True
    """SwiGLU/GeGLU MLP with gate, up and down projections (Llama-style) vs a 2-matrix GELU MLP
    (GPT-2 style). Changes the activation memory per layer."""
    linear_modules: list[LinearModule] = Field(min_length=1)
    """Linear layers of ONE block, by their module names (LoRA target candidates)."""
    params: ParamCounts
    """Exact parameter counts by module type."""

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSpec":
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        return self

    @property
    def total_params(self) -> int:
        return self.params.total

    @property
    def active_params(self) -> int:
        """Parameters one token uses: the total less the experts it is not routed to (equal to the
        total for a dense model). FLOPs per token are ~2 x this (Kaplan et al. 2020 §2.1)."""
        idle = sum(m.weight_params - m.active_weight_params for m in self.linear_modules)
        return self.params.total - idle * self.num_layers

    @property
    def is_moe(self) -> bool:
        return any(m.experts > 1 for m in self.linear_modules)

    @property
    def module_names(self) -> list[str]:
        seen: list[str] = []
        for m in self.linear_modules:
            if m.name not in seen:
                seen.append(m.name)
        return seen

    def lora_params(self, rank: int, targets: list[str]) -> int:
        """Exact trainable LoRA parameters over all blocks for the given target names."""
        per_block = sum(m.lora_params(rank) for m in self.linear_modules if m.name in targets)
        return per_block * self.num_layers


# --------------------------------------------------------------------------- task


DomainLabel = Literal[
    "chat",
    "instruction",
    "classification",
    "summarization",
    "extraction",
    "code",
    "math",
    "new-language",
    "medical",
    "legal",
    "finance",
    "science",
    "other",
]


class Task(Strict):
    """What the user wants the model to learn, and what they can afford to lose."""

    domain_distance: DomainDistance
    """How far the target data is from what the base model already does well. near: chat,
    style, formats, classification; moderate: a specialist vocabulary; far: code, math,
    a new language (Biderman et al. 2024: full fine-tuning learns more there)."""
    domain_label: Optional[DomainLabel] = None
    """Optional kind of data, for rank and warning rules (code, math, new-language …)."""
    forgetting_tolerance: ForgettingTolerance
    """How much general ability may be lost. low: must keep it (LoRA forgets less); high: only the
    target matters."""
    regime: Regime = "instruction"
    """instruction: prompt/response pairs (typically < 100M tokens); continued-pretraining: raw
    text, often billions of tokens, where LoRA trails full fine-tuning at every rank
    (Biderman et al. 2024 §4.1)."""
    seq_len: int = Field(default=2048, ge=16, le=1_048_576)
    """Tokens per training sequence. 16..1M. Activations and logits grow linearly (quadratically
    for eager attention)."""
    batch_size: int = Field(default=8, ge=1, le=65536)
    """Effective (global) batch in sequences per optimizer step. The plan splits it into
    micro-batch x accumulation x devices. LoRA prefers small batches (< ~32; LoRA Without Regret)."""
    dataset_tokens: Optional[int] = Field(default=None, ge=1)
    """Optional training-set size in tokens; enables the capacity rule (LoRA may be capacity-bound
    on large datasets)."""
    needs_fresh_facts: bool = False
    """True when the goal is facts that change or must be cited; fine-tuning is then the wrong
    first tool and the plan says retrieval comes first."""


class Pins(Strict):
    """Choices the user fixes; the advisor fills everything else and warns when it disagrees."""

    method: Optional[Method] = None
    """Force full, lora or qlora."""
    lora_rank: Optional[int] = Field(default=None, ge=1, le=4096)
    """Force the LoRA rank r. 1..4096."""
    lora_alpha: Optional[float] = Field(default=None, gt=0, le=65536)
    """Force LoRA alpha (the update is scaled by alpha/r). Default: fixed 32, so the advised learning
    rate does not depend on rank; a pinned alpha scales the advised LoRA rate by 32/alpha."""
    target_modules: Optional[list[str]] = None
    """Force LoRA targets: module names, or ["all-linear"]."""
    precision: Optional[Precision] = None
    """Force the training precision."""
    gradient_checkpointing: Optional[bool] = None
    """Force gradient checkpointing on or off."""
    optimizer: Optional[Optimizer] = None
    """Force the optimizer."""
    attention: Optional[Attention] = None
    """Force the attention implementation."""
    learning_rate: Optional[float] = Field(default=None, gt=0, lt=1)
    """Force the peak learning rate."""
    max_steps: Optional[int] = Field(default=None, ge=1)
    """Force a fixed number of optimizer steps (instead of epochs)."""
    lora_dropout: Optional[float] = Field(default=None, ge=0, lt=1)
    """Force the LoRA dropout. 0 saves a mask and a copy of every adapted input per layer."""
    kbit_upcast: Optional[bool] = None
    """QLoRA: force peft's fp32 upcast of the non-quantised parameters on (True) or off (False)."""
    activation_offload: Optional[bool] = None
    """Force activation offloading to host RAM on or off (removes that rung of the fit ladder)."""
    loss_chunk_size: Optional[int] = Field(default=None, ge=1)
    """Force chunked cross-entropy with this many tokens per chunk (removes that rung)."""


class DataStats(Strict):
    """What `advise --data` read from the training file, torch-free (advisor/datastats.py)."""

    path: str = Field(min_length=1)
    """The training file that was read."""
    rows: int = Field(ge=1)
    """Usable rows in the file."""
    train_rows: int = Field(ge=1)
    """Rows left for training after the eval carve-off (all rows when an eval file is given)."""
    skipped_rows: int = Field(default=0, ge=0)
    """Malformed rows skipped (only with skip_bad_rows)."""
    sampled_rows: int = Field(ge=1)
    """Rows tokenised; fewer than `rows` on large files (a seeded uniform sample, totals scaled)."""
    shapes: list[str] = Field(default_factory=list)
    """Row shapes found: text, prompt-completion, alpaca, messages."""
    tokens: int = Field(ge=1)
    """All tokens of all rows, untruncated, as the executor renders them (templates included)."""
    trained_tokens: int = Field(ge=1)
    """Loss-bearing tokens (completions, assistant turns; every token of text rows) in the
    training rows. This is what `task.dataset_tokens` is set to when not given."""
    mean_tokens: float = Field(gt=0)
    """Mean tokens per row."""
    max_tokens: int = Field(ge=1)
    """Longest row in tokens."""
    percentile: float = Field(gt=0, le=100)
    """Percentile of row lengths the proposed seq_len covers (99: one row in a hundred may be
    truncated; higher costs memory for a few long rows)."""
    percentile_tokens: int = Field(ge=1)
    """Row length at that percentile (nearest rank), in tokens."""
    proposed_seq_len: int = Field(ge=16)
    """percentile_tokens rounded up to a multiple of 8, within 16..the model's context."""
    seq_len: int = Field(ge=16)
    """The sequence length the truncation share is measured at: the user's --seq-len if given,
    else proposed_seq_len."""
    truncated_share: float = Field(ge=0, le=1)
    """Share of rows longer than seq_len (their tail tokens are cut)."""
    tokenizer: str = Field(min_length=1)
    """Where the token counts come from: the model's own tokenizer (and its file), or the stated
    approximation when none is on this machine."""
    exact: bool
    """True when counted with the model's own tokenizer; False for the bytes/4 approximation."""


class Inputs(Strict):
    """Everything the plan was computed from."""

    hardware: Hardware
    """The devices to train on."""
    model: ModelSpec
    """The base model's architecture."""
    task: Task
    """The adaptation task."""
    pins: Pins = Field(default_factory=Pins)
    """User-fixed choices."""
    calibrated: bool = False
    """Whether the estimator applied stored correction factors (tuneplan calibrate)."""
    data_stats: Optional[DataStats] = None
    """What was read from the training file (`advise --data`): token lengths, rows, tokens.
    Null when no data file was given; seq_len, dataset_tokens and planned steps then rest on the
    user's answers or the defaults."""
    distance: Optional[DistanceEvidence] = None
    """Where task.domain_distance came from and, with `advise --measure-distance`, what the
    measurement on the data and the base model found (docs/domain-distance.md). Null when the
    distance was declared with --domain and nothing was measured."""
