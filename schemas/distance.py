"""Where a plan's domain distance came from: declared by the user, or measured on the data and
the base model (`tuneplan measure`, `advise --measure-distance`; docs/domain-distance.md)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .common import DomainDistance, Strict


class FitSignal(Strict):
    """How well the base model already predicts the training targets, next to general text."""

    target_loss: float = Field(ge=0)
    """Mean next-token loss of the base model on the target tokens (assistant turns, completions,
    every token of text rows), nats. Low on predictable text, which is why it is not used alone."""
    probe_loss: float = Field(ge=0)
    """Mean next-token loss on the general-English probe text (the executor's forgetting probe),
    nats: the model's baseline on text it knows."""
    loss_ratio: float = Field(ge=0)
    """target_loss / probe_loss. Below 1: the targets are easier for the model than general text."""
    high_loss_nats: float = Field(gt=0)
    """Per-token loss above which a target token counts as surprising, nats (2.3 = under ~10%
    probability)."""
    high_loss_share: float = Field(ge=0, le=1)
    """Share of target tokens above high_loss_nats, 0..1."""
    target_tokens: int = Field(ge=1)
    """Target tokens the fit was read on."""


class LayerRank(Strict):
    """One sampled linear layer's accumulated full-parameter gradient."""

    name: str = Field(min_length=1)
    """Module path in the model, e.g. model.layers.10.mlp.down_proj."""
    kind: Literal["attention", "mlp", "other"]
    """Which part of the block it belongs to (from the module name)."""
    block: int = Field(ge=0)
    """Index of its transformer block (depth)."""
    out_features: int = Field(ge=1)
    """Rows of the weight (and of its gradient)."""
    in_features: int = Field(ge=1)
    """Columns of the weight."""
    rank_90: int = Field(ge=0)
    """Smallest rank whose singular values hold 90% of the gradient's energy (sum of squared
    singular values)."""
    rank_90_share: float = Field(ge=0, le=1)
    """rank_90 / min(out_features, in_features): 1 means the update needs every direction."""
    energy_at_lora_rank: float = Field(ge=0, le=1)
    """Share of the gradient's energy the best rank-`lora_rank` approximation keeps, 0..1."""


class RankSignal(Strict):
    """How many directions the data pulls the weights in: the singular-value spectrum of the
    gradient accumulated over a few micro-batches at the base weights."""

    energy_share: float = Field(gt=0, le=1)
    """The energy share the per-layer rank is read at (0.9)."""
    micro_batches: int = Field(ge=1)
    """Micro-batches the gradient was accumulated over."""
    tokens_per_batch: int = Field(ge=1)
    """Target tokens each micro-batch was filled to (so tasks with short and long rows are
    measured on about the same number of loss-bearing tokens)."""
    mean_rank_90_share: float = Field(ge=0, le=1)
    """Mean over the sampled layers of rank_90_share: the verdict's rank signal."""
    median_rank_90: float = Field(ge=0)
    """Median over the sampled layers of rank_90, in directions."""
    max_rank_90: int = Field(ge=0)
    """Largest rank_90 over the sampled layers."""
    lora_rank: int = Field(ge=1)
    """The LoRA rank the captured-energy figures are read at: the plan's rank (the advised or
    pinned one) when the plan has LoRA, else the reference rank 16."""
    mean_energy_at_lora_rank: float = Field(ge=0, le=1)
    """Mean over the sampled layers of the energy share that rank captures, 0..1."""
    layers: list[LayerRank] = Field(min_length=1)
    """Every sampled layer (attention and MLP linears of blocks spread over depth)."""


class PilotSignal(Strict):
    """A short LoRA-vs-full pilot on a subset of the data (`--pilot-steps N`, through `compare`):
    how much of full fine-tuning's eval-loss drop LoRA reaches in the same steps."""

    steps: int = Field(ge=1)
    """Optimizer steps each of the two runs took (the --pilot-steps budget). More steps read the
    outcome more reliably (a gap between LoRA and full fine-tuning grows with training) but cost
    two training runs of that length."""
    train_rows: int = Field(ge=1)
    """Rows of the seeded subset both runs trained on."""
    eval_rows: int = Field(ge=1)
    """Held-out rows of the same subset both runs were evaluated on (before and after)."""
    full_drop: Optional[float] = None
    """Full fine-tuning's eval-loss drop (eval loss before - after), nats; positive: it learned.
    None when the run did not succeed."""
    lora_drop: Optional[float] = None
    """LoRA's eval-loss drop over the same steps and data, nats. None when the run did not succeed."""
    min_full_drop: float = Field(gt=0)
    """The guard, nats (0.02, the comparison audits' noise band): below this full fine-tuning's
    drop (or when it is negative) the share is noise and is not computed."""
    share: Optional[float] = None
    """lora_drop / full_drop, unitless: 1 LoRA learned as much as full fine-tuning, above 1 more,
    below 0 LoRA's eval loss rose. None when either run failed or full_drop < min_full_drop."""
    verdict: Optional[DomainDistance] = None
    """What the pilot alone says (share >= 0.8 near, >= 0.5 moderate, below 0.5 far;
    docs/domain-distance.md); None when the share is None (inconclusive)."""
    compare_id: str = Field(min_length=1)
    """The pilot's comparison id: its rows in the DuckDB tables comparisons and runs."""
    full_run_id: Optional[str] = None
    """Run id of the full fine-tuning run (None when it did not start)."""
    lora_run_id: Optional[str] = None
    """Run id of the LoRA run (None when it did not start)."""
    lora_rank: Optional[int] = Field(default=None, ge=1)
    """The rank the pilot's LoRA run used (advised for the subset)."""
    full_learning_rate: Optional[float] = Field(default=None, gt=0)
    """Learning rate of the full run (each method gets its own advised rate)."""
    lora_learning_rate: Optional[float] = Field(default=None, gt=0)
    """Learning rate of the LoRA run."""
    seconds: float = Field(ge=0)
    """Wall time of the two runs, model loads included."""
    note: Optional[str] = None
    """Why the pilot is inconclusive, when it is."""


class DistanceEvidence(Strict):
    """Where `inputs.task.domain_distance` came from, and what a measurement found."""

    source: Literal["declared", "measured"]
    """declared: the user's --domain was used (a measurement, if any, is only evidence);
    measured: the distance is the measurement's verdict."""
    declared: Optional[DomainDistance] = None
    """The user's --domain, when one was given."""
    measured: DomainDistance
    """The measurement's verdict (docs/domain-distance.md thresholds): the update-rank and fit
    signals', moved by the pilot when one was run and is conclusive."""
    score: float = Field(ge=0)
    """Distance score: the mean of the rank and fit signals, each divided by its far threshold
    (0 near the base model; >= 1 at or past both far thresholds on average). Orders tasks."""
    rank_verdict: DomainDistance
    """What the update-rank signal alone says."""
    fit_verdict: DomainDistance
    """What the fit signal (high-loss share) alone says."""
    thresholds: str = Field(min_length=1)
    """Which thresholds gave the verdict (the documented defaults, with their version)."""
    measure_id: str = Field(min_length=1)
    """Id of this measurement; the key of its row in the DuckDB table distance_measurements."""
    model: str = Field(min_length=1)
    """The model the measurement ran on (the plan's model, or the proxy)."""
    proxy: bool = False
    """True when a smaller model of the same family stood in for the plan's model (--proxy-model):
    its distances are an estimate for the larger one."""
    device: str = Field(min_length=1)
    """Where it ran: cpu, cuda:0, …"""
    load: Literal["fp32", "bf16", "4bit"]
    """How the weights were loaded for the measurement."""
    data: str = Field(min_length=1)
    """The data measured: a file path, or reference:<task> for a shipped reference task."""
    rows: int = Field(ge=1)
    """Rows the signals were read on (a seeded sample of the data)."""
    seconds: float = Field(ge=0)
    """Wall time of the measurement, model load included."""
    fit: FitSignal
    """The fit signal."""
    rank: RankSignal
    """The update-rank signal."""
    pilot: Optional[PilotSignal] = None
    """The optional third signal (`--pilot-steps N`): a short LoRA-vs-full run on a subset. When it
    is conclusive it moves `measured`: up to its own verdict when it says farther, one step
    toward it when it says nearer (docs/domain-distance.md). None: no pilot was run."""
    notes: list[str] = Field(default_factory=list)
    """What the measurement could not do as asked (truncated rows, fewer tokens than asked …)."""
