"""Adapter-shape rules (TP006, TP010-TP013): the sequence length the data needs, then the LoRA
targets, rank, alpha and dropout (used by every method that adapts; full fine-tuning ignores them).
"""

from __future__ import annotations

from typing import Optional

from ..draft import Draft
from ..fitting import fits
from ..modelspec import resolve_targets
from ._base import Outcome, rule, size_phrase


@rule(
    "TP006",
    "seq-len-from-data",
    "the training file, tokenised as the executor renders it (advisor/datastats.py): "
    "99th-percentile row length, rounded up to a multiple of 8",
)
def seq_len_from_data(d: Draft) -> Optional[Outcome]:
    """Why: activations and logits grow with the sequence length, so a plan priced at 2048 tokens
    for rows of 66 over-predicts memory several times and wastes the card on padding. The data
    says how long its rows are: the 99th percentile of the token lengths, rounded up to a multiple
    of 8, holds 99 rows in 100 whole; the share cut is stated.
    When not: no --data file was read; or the user pinned --seq-len (kept, with a warning when it
    truncates many rows or prices far more tokens than any row has). Without the model's tokenizer
    on this machine the lengths are approximated (UTF-8 bytes / 4) and the plan says so.
    Source: the training file, tokenised with the model's own tokenizer where available."""
    ds = d.inputs.data_stats
    if ds is None:
        return None
    how = "counted with " + ds.tokenizer if ds.exact else ds.tokenizer
    sampled = f" (a sample of {ds.sampled_rows:,})" if ds.sampled_rows < ds.rows else ""
    facts = (
        f"{ds.rows:,} rows{sampled}: p{ds.percentile:g} {ds.percentile_tokens} tokens, "
        f"longest {ds.max_tokens}, mean {ds.mean_tokens:g}; {how}"
    )
    share = f"{ds.truncated_share:.1%} of rows truncated"
    warnings: list[str] = []
    if not ds.exact:
        warnings.append(
            "Token counts are approximate (no tokenizer for this model on this machine): "
            "seq_len and dataset tokens rest on UTF-8 bytes / 4."
        )
    if d.task.seq_len == ds.proposed_seq_len:
        msg = f"seq_len {ds.proposed_seq_len} from the data ({facts}); {share}."
    else:
        msg = f"seq_len {d.task.seq_len} given; the data proposes {ds.proposed_seq_len} ({facts}); {share}."
        if ds.truncated_share > 0.05:
            warnings.append(
                f"--seq-len {d.task.seq_len} truncates {ds.truncated_share:.0%} of the rows; "
                f"the data's p{ds.percentile:g} is {ds.percentile_tokens} tokens "
                f"(--seq-len {ds.proposed_seq_len})."
            )
        elif d.task.seq_len >= 2 * max(ds.proposed_seq_len, ds.max_tokens):
            warnings.append(
                f"--seq-len {d.task.seq_len} prices memory for {d.task.seq_len} tokens but the "
                f"longest row has {ds.max_tokens}: --seq-len {ds.proposed_seq_len} plans for "
                f"what will run."
            )
    return Outcome(msg, warnings=tuple(warnings))


@rule(
    "TP010",
    "target-all-linear",
    "QLoRA §4 (all linear layers needed to match full FT); Biderman et al. 2024 §4.7 Fig. 7",
)
def target_all_linear(d: Draft) -> Optional[Outcome]:
    """Why: adapting every linear layer, attention and MLP, is what lets LoRA match full
    fine-tuning; attention-only adapters leave quality on the table, and most of the gain comes
    from the MLP layers. Module coverage is a lever; rank is only a knob.
    When not: the user pinned target modules (kept; a warning if they skip the MLP).
    Source: QLoRA §4; Biderman et al. §4.7; LoRA Without Regret ('attention-only underperforms')."""
    pin = d.pins.target_modules
    names = d.model.module_names
    if pin:
        targets = resolve_targets(d.model, pin)
        mlp = {m.name for m in d.model.linear_modules if m.kind == "mlp"}
        warnings: tuple[str, ...] = ()
        if not mlp.intersection(targets):
            warnings = (
                f"--target-modules {','.join(pin)} skips the MLP layers; all-linear "
                f"({','.join(names)}) learns more (QLoRA §4, Biderman §4.7).",
            )
        return Outcome(
            f"Target modules pinned: {', '.join(targets)}.", {"target_modules": tuple(targets)}, warnings
        )
    return Outcome(f"LoRA targets all linear layers: {', '.join(names)}.", {"target_modules": tuple(names)})


def _advised_rank(d: Draft) -> tuple[int, str]:
    label = d.task.domain_label
    if d.is_far and label == "code":
        return 256, "code is the domain where ranks 16-64 fall short (Biderman §4.7: r=256)"
    if d.is_far:
        return 64, "far domain: math-like shifts were matched at r=64 (Biderman §4.1)"
    if d.task.domain_distance == "moderate":
        return 32, "moderate shift: a mid rank"
    return 16, "near domain: r=16 matched full FT on general instruction data (Biderman App. C)"


MAX_CAPACITY_RANK = 512
"""The largest rank the capacity rule raises to: the top of LoRA Without Regret's and tinker's
sweeps (r = 1..512); beyond it there is no evidence that LoRA behaves as measured."""


def _fits_adapter(d: Draft, rank: int) -> bool:
    return fits(d, "lora", lora_rank=rank) or fits(d, "qlora", lora_rank=rank)


@rule(
    "TP011",
    "rank-by-distance",
    "Biderman et al. 2024 §4.1, §4.7 rec. (b), App. C; QLoRA §4 ('r does not affect performance'); "
    "LoRA Without Regret ('How much capacity': ~2 bits/param vs ~1 bit/token)",
)
def rank_by_distance(d: Draft) -> Optional[Outcome]:
    """Why: rank is a knob, not the lever — with all linear layers adapted, r barely matters on near
    domains below capacity (QLoRA §4; tinker's sweeps find the same best LR at every rank); far
    domains need more (code IFT matched full FT only at r=256). What sets the needed rank is
    capacity: an adapter stores ~2 bits per parameter and instruction data carries up to ~1 bit per
    token, so when the dataset size is known the rank is doubled until 2 x adapter parameters >=
    dataset tokens (up to r=512, the largest swept), as long as LoRA or QLoRA still fits.
    When not: the user pinned --lora-rank (kept; a warning if it is low for a far domain).
    Source: Biderman et al. 2024 §4.1 (code r=256, math r=64), App. C (chat r=16); QLoRA §4;
    LoRA Without Regret (Llama-3.2-1B at r=16 0.019 nats behind r=128 on ~100k examples)."""
    want, why = _advised_rank(d)
    pin = d.pins.lora_rank
    if pin:
        warnings: tuple[str, ...] = ()
        if d.is_far and pin < 64:
            warnings = (
                f"--lora-rank {pin} is low for a far domain; Biderman et al. needed r=64 "
                f"(math) to 256 (code) to approach full fine-tuning.",
            )
        return Outcome(f"LoRA rank pinned to {pin}.", {"lora_rank": pin}, warnings)
    rank = want
    note = ""
    if want > 64 and not _fits_adapter(d, want):
        rank = 64
        note = f"; r={want} does not fit this device, so r=64"
    tokens = d.task.dataset_tokens
    if tokens:
        targets = list(d.target_modules)
        start = rank
        while (
            2 * d.model.lora_params(rank, targets) < tokens
            and rank < MAX_CAPACITY_RANK
            and _fits_adapter(d, rank * 2)
        ):
            rank *= 2
        params = d.model.lora_params(rank, targets)
        if rank > start:
            bound = "" if 2 * params >= tokens else " (still capacity-bound: see TP045)"
            note += (
                f"; raised from r={start} to r={rank} for capacity: {params / 1e6:.1f}M adapter "
                f"parameters x ~2 bits hold {tokens:,} tokens x ~1 bit{bound}"
            )
        elif 2 * params >= tokens:
            note += (
                f"; not capacity-bound: {params / 1e6:.1f}M adapter parameters x ~2 bits >= "
                f"{tokens:,} tokens x ~1 bit"
            )
    return Outcome(f"LoRA rank {rank}: {why}{note}.", {"lora_rank": rank})


FIXED_ALPHA = 32.0
"""LoRA alpha by default: the value LoRA Without Regret and tinker's sweeps held fixed."""


@rule(
    "TP012",
    "alpha-fixed",
    "LoRA Without Regret (alpha = 32 with 1/r scaling: best LR ~independent of rank, < 2x from "
    "r=4 to 512); tinker-cookbook hyperparams ('LR is independent of LoRA rank'); Biderman et al. "
    "2024 App. B (alpha = 2r at r=256 spiked at 2e-4)",
)
def alpha_fixed(d: Draft) -> Optional[Outcome]:
    """Why: peft scales the update by alpha/r. With alpha held at 32 the best learning rate barely
    moves with rank (under 2x from r=4 to r=512 in LoRA Without Regret's sweeps), so one advised
    rate serves every rank. Tying alpha = 2r instead keeps alpha/r = 2 while the update is a sum of
    r rank-1 terms, so its first-step size grows with r: Biderman et al. had to halve the rate at
    r=256 (loss spikes at 2e-4). Fixed alpha is the default; the learning-rate rule (TP040) scales
    the LoRA rate by 32/alpha when alpha is pinned.
    When not: the user pinned --lora-alpha (kept; a warning when it grows with a high rank).
    rsLoRA (alpha/sqrt(r)) is another convention whose rates do not carry over.
    Source: LoRA Without Regret ('Optimal learning rate and rank'); tinker-cookbook
    skills/research/references/hyperparams.md; Biderman et al. 2024 App. B, Fig. S3."""
    pin = d.pins.lora_alpha
    if pin:
        warnings: tuple[str, ...] = ()
        if d.lora_rank >= 256 and pin >= 2 * d.lora_rank:
            warnings = (
                f"--lora-alpha {pin:g} at r={d.lora_rank} (alpha >= 2r): Biderman et al. saw loss "
                f"spikes there and halved the rate; the advised rate is scaled by 32/alpha.",
            )
        return Outcome(
            f"alpha pinned to {pin:g} (update scaled by alpha/r = {pin / d.lora_rank:.3g}).",
            {"lora_alpha": float(pin), "alpha_convention": "pinned", "use_rslora": False},
            warnings,
        )
    return Outcome(
        f"alpha = {FIXED_ALPHA:g}, fixed (update scaled by alpha/r = "
        f"{FIXED_ALPHA / d.lora_rank:.3g}); the learning rate does not depend on rank.",
        {"lora_alpha": FIXED_ALPHA, "alpha_convention": "fixed", "use_rslora": False},
    )


@rule("TP013", "dropout-by-size", "QLoRA scripts and App. A.1 (0.05-0.1 up to 13B, not for 33B/65B)")
def dropout_by_size(d: Draft) -> Optional[Outcome]:
    """Why: adapter dropout helped the QLoRA authors' 7B and 13B models and not the 33B/65B ones.
    When not: the sources disagree on exact values (App. A.1 vs Table 9 vs scripts); 0 is PEFT's
    and torchtune's default and is defensible everywhere.
    Mixture of experts: 0, because peft adapts fused expert parameters through ParamWrapper, which
    refuses lora_dropout != 0 (peft tuners/lora/layer.py ParamWrapper).
    Source: artidoro/qlora scripts (7B 0.1; 13B-65B 0.05); QLoRA App. A.1."""
    if d.pins.lora_dropout is not None:
        p = d.pins.lora_dropout
        return Outcome(f"LoRA dropout {p} (pinned).", {"lora_dropout": p})
    if d.inputs.model.is_moe:
        return Outcome(
            "LoRA dropout 0.0: a mixture-of-experts model's fused expert projections are "
            "adapted by peft's ParamWrapper, which supports no adapter dropout.",
            {"lora_dropout": 0.0},
        )
    p = 0.05 if d.billions <= 20 else 0.0
    return Outcome(f"LoRA dropout {p} for a {size_phrase(d)} model.", {"lora_dropout": p})
