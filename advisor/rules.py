"""The advisor's rules: the seed's decision tree and the papers' figures as small pure functions.

Each rule takes the Draft and returns an Outcome (it fired: what to change, what to warn) or None
(it did not fire). Rules never mutate; the engine applies outcomes in the order of `RULES`, an
explicit list, and records every rule that fired in the plan's `decisions`.

Every rule's docstring has three parts — Why, When not, Source — that `tuneplan explain ID` prints.
Cases for each rule, both ways, live in tests/rules/<ID>.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .draft import Draft
from .fitting import PCIE_BYTES_PER_S, SLOWDOWN, best_fit, default_optimizer, fits, host_offload_bytes, lowest
from .modelspec import resolve_targets

GIB = 1024**3


@dataclass(frozen=True)
class Outcome:
    """What a rule decided: a message for people, field updates and warnings for the plan."""

    message: str
    updates: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    ways_out: tuple[str, ...] = ()


RuleFn = Callable[[Draft], Optional[Outcome]]


@dataclass(frozen=True)
class Rule:
    """A registered rule: id, kebab-case name, the source it rests on, and the function."""

    id: str
    name: str
    source: str
    fn: RuleFn

    def __call__(self, d: Draft) -> Optional[Outcome]:
        return self.fn(d)

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


def rule(id: str, name: str, source: str) -> Callable[[RuleFn], Rule]:
    """Attach an id, a name and a source to a rule function (registration is explicit: RULES)."""

    def wrap(fn: RuleFn) -> Rule:
        return Rule(id=id, name=name, source=source, fn=fn)

    return wrap


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _size_phrase(d: Draft) -> str:
    return f"{d.billions:.2f}B" if d.billions < 10 else f"{d.billions:.0f}B"


# =========================================================================== framing


@rule("TP001", "retrieval-first",
      "Seed document (fine-tuning vs RAG is the prior question); LoRA paper §7.2 fn 6")
def retrieval_first(d: Draft) -> Optional[Outcome]:
    """Why: facts that change or must be cited belong in a retrieval index, not in weights —
    fine-tuning teaches behaviour and format, and its knowledge goes stale with the next release.
    When not: the task is a style, format, skill or language (set needs_fresh_facts false).
    Source: the seed document's prior question — retrieval vs fine-tuning before any GPU-hour."""
    if not d.task.needs_fresh_facts:
        return None
    return Outcome(
        "The need is facts that change or must be cited: start with retrieval (RAG); fine-tune "
        "afterwards only for format, tone or skills. The plan below is for that second step.",
        warnings=("Retrieval comes first: fine-tuning does not keep changing facts current or "
                  "citable.",),
    )


@rule("TP002", "guessed-architecture", "tuneplan: --params builds a standard Llama-style shape")
def guessed_architecture(d: Draft) -> Optional[Outcome]:
    """Why: a parameter count alone does not fix layer count, width, vocabulary or GQA, which set
    activation and logits memory; the estimate rests on a standard Llama-style guess.
    When not: the model came from the catalog or a config.json (exact counts).
    Source: tuneplan's own guess table (advisor/catalog.py)."""
    if d.model.origin != "guess":
        return None
    m = d.model
    return Outcome(
        f"Architecture guessed from the parameter count: {m.num_layers} layers, hidden "
        f"{m.hidden_size}, MLP {m.intermediate_size}, {m.num_key_value_heads} KV heads, vocab "
        f"{m.vocab_size}.",
        warnings=("The model's architecture is a guess from its parameter count; give --model "
                  "(catalog id or a local directory) for exact numbers.",),
    )


@rule("TP003", "precision-by-hardware",
      "QLoRA README (fp16 compute 'can lead to instabilities'); bf16 needs Ampere or newer")
def precision_by_hardware(d: Draft) -> Optional[Outcome]:
    """Why: bf16 mixed precision has fp32's range, so no loss scaling; cards without bf16 fall back
    to fp16 mixed precision; CPUs train in fp32 (bf16 on many CPUs is emulated and slow).
    When not: the user pinned a precision (it stays; a warning says if the card cannot do it).
    Source: QLoRA README — fp16 runs of 7B LLaMA completed only 80% of the time."""
    hw = d.hardware
    advised = "fp32" if d.on_cpu else ("bf16-mixed" if hw.bf16 else "fp16-mixed")
    pin = d.pins.precision
    if pin:
        warnings: tuple[str, ...] = ()
        if pin.startswith("bf16") and not hw.bf16:
            warnings = (f"--precision {pin} pinned, but {hw.name} has no bf16 support; "
                        f"the advisor would use {advised}.",)
        return Outcome(f"Precision pinned to {pin}.", {"precision": pin}, warnings)
    reason = ("CPU: fp32" if d.on_cpu else
              f"{hw.name} computes in bf16" if hw.bf16 else f"{hw.name} lacks bf16: fp16 with loss scaling")
    warnings = () if d.on_cpu or hw.bf16 else (
        "fp16 mixed precision is less stable than bf16 (QLoRA README: 80% of 7B fp16 runs completed).",)
    return Outcome(f"Precision {advised} ({reason}).", {"precision": advised}, warnings)


@rule("TP004", "attention-kernel", "Korthikanti et al. 2022 (5as/h score term); FlashAttention")
def attention_kernel(d: Draft) -> Optional[Outcome]:
    """Why: eager attention stores the b*a*s*s scores and softmax for backward (Korthikanti's
    5as/h term, larger than the rest of the block at long sequences); SDPA and FlashAttention
    recompute them and keep memory linear in s.
    When not: the user pinned an attention implementation (kept, with a warning for eager).
    Source: Korthikanti et al. 2022 Eq. 1; FlashAttention never materialises the s x s scores."""
    pin = d.pins.attention
    if pin == "eager":
        extra = 5 * d.model.num_attention_heads * d.seq_len / d.model.hidden_size
        return Outcome(
            "Attention pinned to eager.", {"attention": "eager"},
            (f"--attention eager stores the s x s attention scores: about {extra:.0f}·sbh extra "
             f"bytes per layer vs 34·sbh for the rest of the block; sdpa avoids it.",),
        )
    if pin:
        return Outcome(f"Attention pinned to {pin}.", {"attention": pin})
    return Outcome("Attention: sdpa (memory linear in sequence length; flash where installed).",
                   {"attention": "sdpa"})


@rule("TP005", "memory-headroom", "accelerate model-size estimator docs ('add up to 20%')")
def memory_headroom(d: Draft) -> Optional[Outcome]:
    """Why: allocators fragment and peaks spike (optimizer step, loss upcast), so a plan that fills
    the card to the byte fails in practice; the advisor keeps a stated share free.
    When not: never skipped; the share is stated so it can be argued with.
    Source: accelerate's estimator docs advise adding up to 20% on top of its estimate."""
    cap = d.hardware.memory_bytes
    usable = int(cap * (1 - d.headroom_fraction))
    return Outcome(
        f"Headroom: {d.headroom_fraction:.0%} of {gib(cap)} kept free; plans must fit in "
        f"{gib(usable)} per device.")


# =========================================================================== adapter shape


@rule("TP006", "seq-len-from-data",
      "the training file, tokenised as the executor renders it (advisor/datastats.py): "
      "99th-percentile row length, rounded up to a multiple of 8")
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
    facts = (f"{ds.rows:,} rows{sampled}: p{ds.percentile:g} {ds.percentile_tokens} tokens, "
             f"longest {ds.max_tokens}, mean {ds.mean_tokens:g}; {how}")
    share = f"{ds.truncated_share:.1%} of rows truncated"
    warnings: list[str] = []
    if not ds.exact:
        warnings.append("Token counts are approximate (no tokenizer for this model on this machine): "
                        "seq_len and dataset tokens rest on UTF-8 bytes / 4.")
    if d.task.seq_len == ds.proposed_seq_len:
        msg = f"seq_len {ds.proposed_seq_len} from the data ({facts}); {share}."
    else:
        msg = f"seq_len {d.task.seq_len} given; the data proposes {ds.proposed_seq_len} ({facts}); {share}."
        if ds.truncated_share > 0.05:
            warnings.append(f"--seq-len {d.task.seq_len} truncates {ds.truncated_share:.0%} of the rows; "
                            f"the data's p{ds.percentile:g} is {ds.percentile_tokens} tokens "
                            f"(--seq-len {ds.proposed_seq_len}).")
        elif d.task.seq_len >= 2 * max(ds.proposed_seq_len, ds.max_tokens):
            warnings.append(f"--seq-len {d.task.seq_len} prices memory for {d.task.seq_len} tokens but the "
                            f"longest row has {ds.max_tokens}: --seq-len {ds.proposed_seq_len} plans for "
                            f"what will run.")
    return Outcome(msg, warnings=tuple(warnings))


@rule("TP010", "target-all-linear",
      "QLoRA §4 (all linear layers needed to match full FT); Biderman et al. 2024 §4.7 Fig. 7")
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
        warnings = ()
        if not mlp.intersection(targets):
            warnings = (f"--target-modules {','.join(pin)} skips the MLP layers; all-linear "
                        f"({','.join(names)}) learns more (QLoRA §4, Biderman §4.7).",)
        return Outcome(f"Target modules pinned: {', '.join(targets)}.",
                       {"target_modules": tuple(targets)}, warnings)
    return Outcome(f"LoRA targets all linear layers: {', '.join(names)}.",
                   {"target_modules": tuple(names)})


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


@rule("TP011", "rank-by-distance",
      "Biderman et al. 2024 §4.1, §4.7 rec. (b), App. C; QLoRA §4 ('r does not affect performance'); "
      "LoRA Without Regret ('How much capacity': ~2 bits/param vs ~1 bit/token)")
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
        warnings = ()
        if d.is_far and pin < 64:
            warnings = (f"--lora-rank {pin} is low for a far domain; Biderman et al. needed r=64 "
                        f"(math) to 256 (code) to approach full fine-tuning.",)
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
        while (2 * d.model.lora_params(rank, targets) < tokens and rank < MAX_CAPACITY_RANK
               and _fits_adapter(d, rank * 2)):
            rank *= 2
        params = d.model.lora_params(rank, targets)
        if rank > start:
            bound = "" if 2 * params >= tokens else " (still capacity-bound: see TP045)"
            note += (f"; raised from r={start} to r={rank} for capacity: {params / 1e6:.1f}M adapter "
                     f"parameters x ~2 bits hold {tokens:,} tokens x ~1 bit{bound}")
        elif 2 * params >= tokens:
            note += (f"; not capacity-bound: {params / 1e6:.1f}M adapter parameters x ~2 bits >= "
                     f"{tokens:,} tokens x ~1 bit")
    return Outcome(f"LoRA rank {rank}: {why}{note}.", {"lora_rank": rank})


FIXED_ALPHA = 32.0
"""LoRA alpha by default: the value LoRA Without Regret and tinker's sweeps held fixed."""


@rule("TP012", "alpha-fixed",
      "LoRA Without Regret (alpha = 32 with 1/r scaling: best LR ~independent of rank, < 2x from "
      "r=4 to 512); tinker-cookbook hyperparams ('LR is independent of LoRA rank'); Biderman et al. "
      "2024 App. B (alpha = 2r at r=256 spiked at 2e-4)")
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
            warnings = (f"--lora-alpha {pin:g} at r={d.lora_rank} (alpha >= 2r): Biderman et al. saw loss "
                        f"spikes there and halved the rate; the advised rate is scaled by 32/alpha.",)
        return Outcome(f"alpha pinned to {pin:g} (update scaled by alpha/r = {pin / d.lora_rank:.3g}).",
                       {"lora_alpha": float(pin), "alpha_convention": "pinned",
                        "use_rslora": False}, warnings)
    return Outcome(f"alpha = {FIXED_ALPHA:g}, fixed (update scaled by alpha/r = "
                   f"{FIXED_ALPHA / d.lora_rank:.3g}); the learning rate does not depend on rank.",
                   {"lora_alpha": FIXED_ALPHA, "alpha_convention": "fixed",
                    "use_rslora": False})


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
        return Outcome("LoRA dropout 0.0: a mixture-of-experts model's fused expert projections are "
                       "adapted by peft's ParamWrapper, which supports no adapter dropout.",
                       {"lora_dropout": 0.0})
    p = 0.05 if d.billions <= 20 else 0.0
    return Outcome(f"LoRA dropout {p} for a {_size_phrase(d)} model.", {"lora_dropout": p})


# =========================================================================== method


def _method_word(m: str) -> str:
    return {"full": "full fine-tuning", "lora": "16-bit LoRA", "qlora": "QLoRA (4-bit NF4 base)"}[m]


def _peak(d: Draft, method: str) -> str:
    f = best_fit(d, method)
    return gib((f or lowest(d, method)).estimate.per_device_bytes)


def _adapter_that_fits(d: Draft) -> Optional[str]:
    for m in ("lora", "qlora"):
        if fits(d, m):
            return m
    return None


@rule("TP020", "far-domain-full",
      "Biderman et al. 2024 §4.1, §4.6 (full FT learns 10-100x higher-rank updates on code/math)")
def far_domain_full(d: Draft) -> Optional[Outcome]:
    """Why: on far domains (code, math, a new language, continued pretraining) full fine-tuning's
    high-rank updates learn more than LoRA at any practical rank; if the user can bear the
    forgetting that comes with it and full fine-tuning fits (sharded over the GPUs given), take it.
    When not: low forgetting tolerance (TP021), full fine-tuning does not fit (TP022), near or
    moderate domains (TP023).
    Source: Biderman et al. 2024 §4.1 (CPT gap at every rank), §4.6 (rank of full-FT updates)."""
    if not d.is_far or d.task.forgetting_tolerance == "low":
        return None
    f = best_fit(d, "full")
    if f is None:
        return None
    where = f"on {d.num_devices} devices ({f.strategy})" if d.num_devices > 1 else "on one device"
    return Outcome(
        f"Far domain with {d.task.forgetting_tolerance} forgetting tolerance, and full "
        f"fine-tuning fits {where} at {gib(f.estimate.per_device_bytes)}: full fine-tuning, which "
        f"learns more there than LoRA.",
        {"advised_method": "full"},
    )


@rule("TP021", "far-domain-low-forgetting-lora",
      "Biderman et al. 2024 §4.2, §4.5 (LoRA forgets less; rank controls forgetting)")
def far_low_forgetting_lora(d: Draft) -> Optional[Outcome]:
    """Why: the user cannot afford to lose general ability; LoRA forgets less than full fine-tuning
    (and than weight decay or dropout), at the price of learning less on far domains — so a higher
    rank and a warning about its capacity ceiling.
    When not: forgetting tolerance medium or high with full fine-tuning affordable (TP020).
    Source: Biderman et al. §4.2 (code CPT forgetting: full 0.545 vs LoRA r=256 0.617), §4.5."""
    if not d.is_far or d.task.forgetting_tolerance != "low":
        return None
    m = _adapter_that_fits(d) or "qlora"
    return Outcome(
        f"Far domain, low forgetting tolerance: {_method_word(m)} at r={d.lora_rank}; LoRA "
        f"forgets less than full fine-tuning.",
        {"advised_method": m},
        (f"LoRA learns less than full fine-tuning on far domains (Biderman et al. 2024); expect "
         f"a capacity ceiling even at r={d.lora_rank}. Evaluate on held-out in-domain data.",),
    )


@rule("TP022", "far-domain-full-unaffordable",
      "Biderman et al. 2024 §4.1; QLoRA Tables 3-4 (QLoRA ≈ 16-bit LoRA)")
def far_full_unaffordable(d: Draft) -> Optional[Outcome]:
    """Why: full fine-tuning would learn more on this far domain, but it does not fit the devices
    even with sharding, checkpointing, 8-bit AdamW and micro-batch 1; LoRA (or QLoRA when 16-bit
    LoRA does not fit) is the affordable road, with its capacity ceiling stated.
    When not: full fine-tuning fits (TP020); low tolerance chooses LoRA anyway (TP021).
    Source: Biderman et al. §4.1; QLoRA Tables 3-4 for QLoRA matching 16-bit LoRA."""
    if not d.is_far or d.task.forgetting_tolerance == "low" or d.advised_method:
        return None
    m = _adapter_that_fits(d) or "qlora"
    return Outcome(
        f"Far domain, but full fine-tuning needs {_peak(d, 'full')} per device (does not fit): "
        f"{_method_word(m)} instead.",
        {"advised_method": m},
        (f"Full fine-tuning would learn more on this far domain but does not fit; "
         f"{_method_word(m)} may hit a capacity ceiling. More or larger GPUs (sharded full "
         f"fine-tuning) lift it.",),
    )


@rule("TP023", "near-domain-lora-then-qlora",
      "Biderman et al. 2024 App. C (LoRA r=16 matches full FT on Tülu); QLoRA Tables 3-4, §4")
def near_lora_then_qlora(d: Draft) -> Optional[Outcome]:
    """Why: on near and moderate domains LoRA matches full fine-tuning, and QLoRA (NF4 + double
    quantisation) matches 16-bit LoRA, so between them the choice is only memory: 16-bit LoRA when it
    fits (no dequantisation cost), else QLoRA.
    When not: far domains or continued pretraining (TP020-TP022).
    Source: Biderman App. C; QLoRA Table 3 (T5-3B: LoRA BF16 55.4 vs NF4+DQ 55.3), Table 4."""
    if d.is_far:
        return None
    if fits(d, "lora"):
        return Outcome(
            f"{d.task.domain_distance.capitalize()} domain: LoRA matches full fine-tuning here, "
            f"and 16-bit LoRA fits ({_peak(d, 'lora')} per device).",
            {"advised_method": "lora"})
    if fits(d, "qlora"):
        return Outcome(
            f"{d.task.domain_distance.capitalize()} domain: 16-bit LoRA needs "
            f"{_peak(d, 'lora')} per device (does not fit); QLoRA matches it at "
            f"{_peak(d, 'qlora')}.",
            {"advised_method": "qlora"})
    return None


@rule("TP024", "nothing-fits-take-qlora", "QLoRA §1 (the smallest road: 65B on one 48 GB GPU)")
def nothing_fits_take_qlora(d: Draft) -> Optional[Outcome]:
    """Why: no method fits at the requested length; QLoRA is the smallest road, so it is the one to
    shorten sequences for, or to report as infeasible with ways out.
    When not: some method fits.
    Source: QLoRA §1 — 4-bit NF4 base plus adapters is the lowest-memory of the three methods."""
    if d.advised_method:
        return None
    return Outcome("No method fits at the requested sequence length; planning QLoRA, the "
                   "smallest road.", {"advised_method": "qlora"})


@rule("TP025", "method-pin", "tuneplan: a pin stays, with a warning saying why it differs")
def method_pin(d: Draft) -> Optional[Outcome]:
    """Why: the user may know something the advisor does not (a deployment constraint, a
    comparison to run); a pinned method stays, and the plan says where the advice differs.
    When not: no --method given; the advised method is used.
    Source: tuneplan's pin contract (validation rejects the impossible; advice stays advice)."""
    pin = d.pins.method
    advised = d.advised_method
    if not pin:
        return Outcome(f"Method: {_method_word(advised)}.", {"method": advised})
    warnings = ()
    if pin != advised:
        extra = ""
        if pin == "full" and d.task.forgetting_tolerance == "low":
            extra = " Full fine-tuning forgets more than LoRA (Biderman et al. §4.2)."
        elif pin != "full" and d.is_far and d.task.forgetting_tolerance != "low":
            extra = " On far domains LoRA learns less than full fine-tuning (Biderman et al. §4.1)."
        elif pin == "qlora" and advised == "lora":
            extra = " 16-bit LoRA fits and avoids 4-bit dequantisation; results match."
        if not fits(d, pin):
            extra += f" {_method_word(pin)} does not fit this device as asked."
        warnings = (f"--method {pin} pinned; the advisor would choose {advised}.{extra}",)
    return Outcome(f"Method pinned: {_method_word(pin)}.", {"method": pin}, warnings)


# =========================================================================== memory ladder


@rule("TP030", "fit-ladder",
      "ZeRO (Rajbhandari et al. 2020); Korthikanti et al. 2022 (recomputation); HF anatomy (8-bit Adam)")
def fit_ladder(d: Draft) -> Optional[Outcome]:
    """Why: before giving up on a method, spend what costs only time: shard state over the devices
    (DDP, ZeRO-2, then FSDP), recompute activations (gradient checkpointing), 8-bit AdamW for full
    fine-tuning, then smaller micro-batches with gradient accumulation (same effective batch), and
    last, on several GPUs, FSDP with CPU offload (state in host RAM, slow over PCIe).
    When not: the method fits as asked; pinned settings are not changed.
    Source: ZeRO §5 (per-device model states); Korthikanti et al. 2022 (full recomputation keeps
    2·sbh per layer); HF anatomy (8-bit AdamW 2 bytes/param); ZeRO-Offload / FSDP CPUOffload
    (facts §6b)."""
    f = best_fit(d, d.method)
    if f is None:
        return None
    changes = []
    if f.strategy != d.strategy:
        changes.append(f"strategy {f.strategy} over {d.num_devices} devices")
    warnings: tuple[str, ...] = ()
    if f.cpu_offload:
        host = host_offload_bytes(d, f)
        changes.append("CPU offload of parameters, gradients and optimizer states")
        warnings = (f"Only fits with CPU offload: each node needs about {gib(host)} of host RAM for "
                    f"the offloaded parameters, gradients and optimizer states (plus pinned "
                    f"buffers), and steps are much slower (PCIe transfers every step). More GPUs "
                    f"or a smaller method avoid it.",)
    if f.gradient_checkpointing != d.gradient_checkpointing:
        changes.append(f"gradient checkpointing on (~{SLOWDOWN['gradient_checkpointing']:.0%} slower)"
                       if f.gradient_checkpointing else "gradient checkpointing off")
    if f.optimizer != default_optimizer(d, d.method):
        changes.append(f"optimizer {f.optimizer}")
    if f.loss_chunk_size != d.loss_chunk_size and f.loss_chunk_size:
        changes.append(f"chunked cross-entropy ({f.loss_chunk_size} tokens per chunk, "
                       f"~{SLOWDOWN['loss_chunking']:.0%} slower)")
    if f.activation_offload and not d.activation_offload:
        hb = f.estimate.host_bytes
        changes.append(f"activation offload to host RAM instead of checkpointing ({gib(hb)} of host RAM; "
                       f"~{SLOWDOWN['activation_offload']:.0%} slower on the embedded model on CPU, plus "
                       f"~{2 * hb / PCIE_BYTES_PER_S:.1f} s per micro-batch of PCIe transfers on a GPU)")
        warnings = warnings + (f"Activation offload needs about {gib(hb)} of host RAM per GPU "
                               f"(pinned), on top of the process.",)
    if f.micro_batch != d.micro_batch:
        changes.append(f"micro-batch {d.micro_batch} -> {f.micro_batch} with accumulation")
    updates = {"gradient_checkpointing": f.gradient_checkpointing, "micro_batch": f.micro_batch,
               "strategy": f.strategy, "optimizer": f.optimizer, "cpu_offload": f.cpu_offload,
               "loss_chunk_size": f.loss_chunk_size, "activation_offload": f.activation_offload}
    if not changes:
        return Outcome(f"{_method_word(d.method)} fits as asked: "
                       f"{gib(f.estimate.per_device_bytes)} per device.", updates)
    return Outcome(f"To fit {_method_word(d.method)}: {', '.join(changes)} -> "
                   f"{gib(f.estimate.per_device_bytes)} per device.", updates, warnings)


MIN_SEQ = 128
PIN_FLAGS = (("gradient_checkpointing", "--[no-]gradient-checkpointing"), ("optimizer", "--optimizer"),
             ("activation_offload", "--[no-]activation-offload"), ("loss_chunk_size", "--loss-chunk-size"))


def _blocking_pins(d: Draft) -> list[str]:
    """Flags of memory-relevant pins without which the method would fit at the current length."""
    out = []
    for pin, flag in PIN_FLAGS:
        if getattr(d.pins, pin) is None:
            continue
        free = d.with_updates({"inputs": d.inputs.model_copy(
            update={"pins": d.pins.model_copy(update={pin: None})})})
        if best_fit(free, d.method) is not None:
            out.append(flag)
    return out


@rule("TP031", "shorten-sequences", "Korthikanti et al. 2022 (activations linear in s); tuneplan")
def shorten_sequences(d: Draft) -> Optional[Outcome]:
    """Why: activations and logits grow with sequence length; when nothing else fits, shorter
    sequences may — but they change what the model sees, so the plan says so loudly.
    When not: the method fits at the requested length, or not even 128 tokens fit.
    Source: Korthikanti et al. 2022 Eq. 1 (per-layer activations proportional to s·b·h)."""
    if best_fit(d, d.method) is not None:
        return None
    s = d.seq_len // 2
    while s >= MIN_SEQ:
        f = best_fit(d, d.method, seq_len=s)
        if f is not None:
            return Outcome(
                f"{_method_word(d.method)} does not fit at {d.seq_len} tokens even at micro-batch "
                f"1; at {s} tokens it needs {gib(f.estimate.per_device_bytes)} per device.",
                {"seq_len": s, "seq_shortened_from": d.seq_len, "gradient_checkpointing":
                 f.gradient_checkpointing, "micro_batch": f.micro_batch, "strategy": f.strategy,
                 "optimizer": f.optimizer, "cpu_offload": f.cpu_offload,
                 "loss_chunk_size": f.loss_chunk_size, "activation_offload": f.activation_offload},
                (f"Sequences shortened from {d.seq_len} to {s} tokens to fit; longer examples "
                 f"will be truncated."
                 + "".join(f" Without the {flag} pin, {d.seq_len} tokens would fit."
                           for flag in _blocking_pins(d)),),
            )
        s //= 2
    return None


@rule("TP032", "infeasible-ways-out", "tuneplan estimator (advisor/estimator.py)")
def infeasible_ways_out(d: Draft) -> Optional[Outcome]:
    """Why: when nothing fits even at 128 tokens and micro-batch 1, say so, and say what would fit:
    more GPUs (sharded), a larger card, a smaller model.
    When not: a configuration fits.
    Source: tuneplan's estimator applied to the alternatives named."""
    if best_fit(d, d.method) is not None:
        return None
    low = lowest(d, d.method)
    ways = [f"{_method_word(d.method)} needs at least {gib(low.estimate.per_device_bytes)} per "
            f"device; this device allows {gib(int(d.hardware.memory_bytes * (1 - d.headroom_fraction)))}."]
    if d.method != "qlora" and not d.pins.method:
        ways.append("Use QLoRA (4-bit base).")
    ways += [f"Drop the {flag} pin: without it the plan fits." for flag in _blocking_pins(d)]
    need = low.estimate.per_device_bytes / (1 - d.headroom_fraction)
    ways.append(f"Use a device with at least {gib(int(need))} of memory.")
    if not d.on_cpu:
        ways.append("Add GPUs: with FSDP the weights, gradients and optimizer states are sharded.")
    ways.append("Choose a smaller model (see `tuneplan models`).")
    updates = {"feasible": False, "gradient_checkpointing": low.gradient_checkpointing,
               "micro_batch": low.micro_batch, "strategy": low.strategy, "optimizer": low.optimizer,
               "cpu_offload": low.cpu_offload, "loss_chunk_size": low.loss_chunk_size,
               "activation_offload": low.activation_offload}
    return Outcome(f"Nothing fits: {ways[0]}", updates, ("No configuration fits this hardware.",),
                   tuple(ways))


# =========================================================================== optimisation


LR_FIT_BASE = 5e-5
"""Full fine-tuning rate of the fit at hidden size 2000 and batch 128 (tinker-cookbook get_lr:
LoRA 5e-4 there, full = LoRA / 10)."""
LR_FIT_EXPONENT = {"llama": 0.781, "qwen2": 0.0775}
"""p in (2000 / h)^p by family, fitted on Llama-3 and Qwen3 sweeps (tinker-cookbook get_lr)."""
LR_REF_BATCH = 128
"""Batch (sequences) the fit was calibrated at (Tulu-3 SFT sweep, batch 128)."""
LR_BATCH_CLAMP = (0.25, 2.0)
"""Bounds on the sqrt(B / 128) factor: B = 8 .. 512; the batch term is the least certain part."""
LR_HIDDEN_RANGE = (576, 8192)
"""Hidden sizes the fit is used over: SmolLM2-135M (576; the smallest with a published recipe,
alignment-handbook) to Llama-3.1-70B (8192, the largest swept); sizes outside are clamped."""
LORA_LR_CAP = 1e-3
"""Highest advised LoRA/QLoRA rate: 3e-3 diverged in 72 of 80 diverged sweep runs, 1e-3 diverged
only at low rank on 70B (tinker sft_sweep.md)."""
FULL_LR_CAP = LORA_LR_CAP / 10
SHORT_RUN_STEPS = 100


def _epochs(method: Optional[str]) -> float:
    """Default epochs: full FT peaked at 2, LoRA needed ~4 (Biderman et al. App. C)."""
    return 2.0 if method == "full" else 4.0


def planned_steps(d: Draft) -> Optional[int]:
    """Optimizer steps of the run when they can be known before it: the --max-steps pin, or the
    default epochs over the data's training rows at the effective batch; None when unknown."""
    if d.max_steps is not None:
        return d.max_steps
    ds = d.inputs.data_stats
    if ds is None:
        return None
    return max(1, math.ceil(_epochs(d.method) * ds.train_rows / d.task.batch_size))


def lr_band(lr: float) -> tuple[float, float, float]:
    """The sweep band LR/3, LR, 3·LR, rounded to 3 significant figures."""
    return tuple(float(f"{x:.3g}") for x in (lr / 3, lr, 3 * lr))  # type: ignore[return-value]


@rule("TP040", "learning-rate",
      "tinker-cookbook get_lr fit and recipes/chat_sl sft_sweep.md; LoRA Without Regret (LoRA ≈ 10x "
      "full FT, ~15x under ~100 steps); Malladi et al. 2022 (sqrt batch scaling for Adam)")
def learning_rate(d: Draft) -> Optional[Outcome]:
    """Why: the learning rate is the lever that decides the outcome, and its best value follows the
    model's width, not its parameter count: full fine-tuning LR = 5e-5 x (2000 / h)^p at batch 128,
    p = 0.781 for Llama-family and 0.0775 for Qwen-family (an empirical fit of Tulu-3 sweeps; h
    clamped to 576..8192), times sqrt(B / 128) for the effective batch B (Adam's square-root rule,
    clamped to 1/4..2), capped at 1e-4. LoRA and QLoRA take 10x that (15x for runs under ~100
    planned steps), times 32/alpha when alpha is pinned away from the fixed 32, capped at 1e-3 where
    the sweeps diverged. With alpha fixed the rate does not depend on rank. Other families get
    Llama's exponent and a warning: they are uncalibrated. Every plan carries a sweep band
    LR/3, LR, 3·LR (the sweeps' grids are ~3x apart) for `tuneplan sweep --lr band`.
    When not: the user pinned --learning-rate (kept, with the band around it). The batch term is the
    least certain part of the fit; LoRA tolerates large batches less than full FT (TP044).
    Source: tinker-cookbook hyperparam_utils.get_lr (formula version) and sft_sweep.md (best LoRA
    LR: Llama-3.2-1B/3B 1e-3, Llama-3.1-8B/70B 3e-4 at batch 128); LoRA Without Regret; Malladi et
    al. 2022; QLoRA scripts (2e-4 at batch 16, alpha 16 for 7B and 13B)."""
    pin = d.pins.learning_rate
    if pin:
        band = lr_band(pin)
        return Outcome(f"Learning rate pinned to {pin:g}; sweep band {band[0]:g}, {band[1]:g}, {band[2]:g}.",
                       {"learning_rate": pin, "learning_rate_band": band})
    m = d.model
    family = m.family
    p = LR_FIT_EXPONENT.get(family)
    warnings: tuple[str, ...] = ()
    if p is None:
        p = LR_FIT_EXPONENT["llama"]
        warnings = (f"Uncalibrated family {family!r}: the learning rate uses the Llama-family fit; "
                    f"sweep it (`tuneplan sweep plan.json --lr band`).",)
    lo, hi = LR_HIDDEN_RANGE
    h = min(max(m.hidden_size, lo), hi)
    hnote = "" if h == m.hidden_size else f" (hidden {m.hidden_size} clamped to {h})"
    batch = d.task.batch_size
    bfac = min(max(math.sqrt(batch / LR_REF_BATCH), LR_BATCH_CLAMP[0]), LR_BATCH_CLAMP[1])
    full = LR_FIT_BASE * (2000 / h) ** p * bfac
    parts = [f"full-FT fit 5e-5 x (2000/{h})^{p:g}{hnote} x sqrt({batch}/{LR_REF_BATCH})"
             f"{' clamped' if bfac != math.sqrt(batch / LR_REF_BATCH) else ''} = {full:.3g}"]
    if d.method == "full":
        lr = min(full, FULL_LR_CAP)
        if lr < full:
            parts.append(f"capped at {FULL_LR_CAP:g}")
        band = lr_band(lr)
        return Outcome(f"Learning rate {band[1]:g} for full fine-tuning of a {_size_phrase(d)} {family} "
                       f"model: {'; '.join(parts)}. Sweep band {band[0]:g}, {band[1]:g}, {band[2]:g}.",
                       {"learning_rate": band[1], "learning_rate_band": band}, warnings)
    steps = planned_steps(d)
    mult = 15.0 if steps is not None and steps < SHORT_RUN_STEPS else 10.0
    parts.append(f"x {mult:g} for LoRA" + (f" ({steps} planned steps < {SHORT_RUN_STEPS})" if mult == 15 else ""))
    lr = full * mult
    alpha = d.lora_alpha
    if alpha != FIXED_ALPHA:
        lr *= FIXED_ALPHA / alpha
        parts.append(f"x 32/alpha = 32/{alpha:g}")
    if lr > LORA_LR_CAP:
        parts.append(f"capped at {LORA_LR_CAP:g} (sweeps diverged above)")
        lr = LORA_LR_CAP
    band = lr_band(lr)
    return Outcome(f"Learning rate {band[1]:g} for {_method_word(d.method)} ({family}): {'; '.join(parts)}. "
                   f"Sweep band {band[0]:g}, {band[1]:g}, {band[2]:g}.",
                   {"learning_rate": band[1], "learning_rate_band": band}, warnings)


@rule("TP041", "schedule-recipe",
      "QLoRA repo (constant LR, warmup 0.03, max_grad_norm 0.3, wd 0); Biderman App. A "
      "(cosine, 10% warmup, clip 1.0)")
def schedule_recipe(d: Draft) -> Optional[Outcome]:
    """Why: each method keeps the schedule it was validated with: QLoRA a constant rate after 3%
    warmup with gradient clipping at 0.3 and no weight decay; LoRA and full fine-tuning cosine decay
    after 10% warmup, clipping at 1.0. Epochs: full FT peaked at 2 epochs, LoRA needed ~4.
    When not: --max-steps pinned replaces epochs.
    Source: artidoro/qlora qlora.py defaults; Biderman et al. App. A and App. C (epochs)."""
    if d.method == "qlora":
        upd = {"lr_scheduler": "constant_with_warmup", "warmup_ratio": 0.03, "max_grad_norm": 0.3,
               "weight_decay": 0.0}
        msg = "QLoRA recipe: constant LR after 3% warmup, clip 0.3, no weight decay"
    elif d.method == "lora":
        upd = {"lr_scheduler": "cosine", "warmup_ratio": 0.1, "max_grad_norm": 1.0, "weight_decay": 0.0}
        msg = "LoRA: cosine after 10% warmup, clip 1.0"
    else:
        upd = {"lr_scheduler": "cosine", "warmup_ratio": 0.1, "max_grad_norm": 1.0, "weight_decay": 0.01}
        msg = "Full fine-tuning: cosine after 10% warmup, clip 1.0, weight decay 0.01"
    if d.max_steps is None:
        epochs = _epochs(d.method)
        upd["num_epochs"] = epochs
        msg += f"; {epochs:g} epochs"
    else:
        upd["num_epochs"] = None
        msg += f"; {d.max_steps} steps (pinned)"
    return Outcome(msg + ".", upd)


@rule("TP042", "qlora-recipe",
      "QLoRA §3, Table 2, Table 4 (NF4 + double quantisation; FP4 a point behind); transformers "
      "BitsAndBytesConfig defaults")
def qlora_recipe(d: Draft) -> Optional[Outcome]:
    """Why: QLoRA only matches 16-bit LoRA with its full recipe — NF4 storage, double quantisation
    (4.127 instead of 4.5 bits/param), bf16 compute — while the libraries' defaults are FP4, no
    double quantisation and fp32 compute; the plan spells it out.
    When not: method is not QLoRA.
    Source: QLoRA §3 and Table 4 (FP4 'consistently one percentage point behind')."""
    if d.method != "qlora":
        return None
    compute = "float32" if d.on_cpu else ("bfloat16" if d.hardware.bf16 else "float16")
    q = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": compute,
         "kbit_upcast": d.kbit_upcast}
    up = ("non-quantised parameters upcast to fp32 (peft prepare_model_for_kbit_training)" if d.kbit_upcast
          else "non-quantised parameters kept in the compute dtype (kbit_upcast off, as qlora.py/torchtune)")
    return Outcome(f"4-bit NF4 with double quantisation, {compute} compute; {up}.", {"quantization": q})


@rule("TP043", "paged-optimizer",
      "QLoRA §3-4 (paged optimizers critical for 33B/65B on one 24/48 GB GPU); bitsandbytes docs")
def paged_optimizer(d: Draft) -> Optional[Outcome]:
    """Why: paged optimizer states spill to CPU RAM during memory spikes instead of failing, at no
    cost when everything fits; the QLoRA recipe uses them. They need NVIDIA unified memory.
    When not: not QLoRA, not on an NVIDIA GPU (CPU plans use torch AdamW), or the optimizer pinned.
    Source: QLoRA §3; bitsandbytes optimizer docs (paging only on OOM)."""
    if d.method != "qlora" or not d.on_cuda or d.pins.optimizer:
        return None
    if d.optimizer.startswith("paged"):
        return Outcome(f"Optimizer {d.optimizer}: spills to CPU RAM on memory spikes.")
    return None


@rule("TP044", "lora-small-batch",
      "LoRA Without Regret ('Batch size effects': LoRA pays more at large batch, at any rank)")
def lora_small_batch(d: Draft) -> Optional[Outcome]:
    """Why: LoRA is less tolerant of large batches than full fine-tuning, independent of rank; the
    gap was small at 32 and grew above it.
    When not: full fine-tuning, or an effective batch of 32 or less.
    Source: LoRA Without Regret, 'Batch size effects'."""
    if d.method == "full" or d.task.batch_size <= 32:
        return None
    return Outcome(
        f"Effective batch {d.task.batch_size} is large for LoRA.",
        warnings=(f"LoRA trains worse than full fine-tuning at large batches (LoRA Without Regret); "
                  f"consider an effective batch of 32 or less instead of {d.task.batch_size}.",))


@rule("TP045", "lora-capacity",
      "LoRA Without Regret ('How much capacity': ~2 bits/param stored vs ~1 bit/token of data)")
def lora_capacity(d: Draft) -> Optional[Outcome]:
    """Why: an adapter stores at most ~2 bits per parameter, and instruction data carries up to ~1
    bit per token; an adapter with fewer than half as many parameters as the dataset has tokens is
    likely capacity-bound and learns less than full fine-tuning.
    When not: full fine-tuning, or the dataset size is unknown.
    Source: LoRA Without Regret (capacity argument; Allen-Zhu & Li for 2 bits/param)."""
    tokens = d.task.dataset_tokens
    if d.method == "full" or not tokens:
        return None
    params = d.model.lora_params(d.lora_rank, list(d.target_modules))
    if 2 * params >= tokens:
        return None
    return Outcome(
        f"Adapter has {params / 1e6:.1f}M parameters for {tokens / 1e6:.0f}M tokens.",
        warnings=(f"The adapter ({params / 1e6:.1f}M params at r={d.lora_rank}) may be capacity-bound "
                  f"for {tokens / 1e6:.0f}M tokens; raise the rank or consider full fine-tuning.",))


@rule("TP046", "continued-pretraining-with-lora",
      "Biderman et al. 2024 §4.7 rec. (a): LoRA for instruction finetuning, not continued pretraining")
def cpt_with_lora(d: Draft) -> Optional[Outcome]:
    """Why: on continued pretraining (billions of raw tokens) LoRA trailed full fine-tuning at every
    rank, even r=256 after 20B tokens.
    When not: instruction regime, or full fine-tuning chosen.
    Source: Biderman et al. §4.1 and recommendation (a) in §4.7."""
    if d.task.regime != "continued-pretraining" or d.method == "full":
        return None
    return Outcome("Continued pretraining with adapters.",
                   warnings=("LoRA is recommended for instruction tuning, not continued "
                             "pretraining, where it learns less at every rank (Biderman et al. "
                             "2024); full fine-tuning on more devices would learn more.",))


@rule("TP047", "gradient-accumulation", "tuneplan: effective batch = micro x accumulation x devices")
def gradient_accumulation(d: Draft) -> Optional[Outcome]:
    """Why: the effective batch the user asked for is kept whatever the micro-batch: accumulation
    makes up the difference across steps and devices.
    When not: never skipped; it only restates the arithmetic.
    Source: the definition of gradient accumulation."""
    per_step = d.micro_batch * d.num_devices
    accum = max(1, math.ceil(d.task.batch_size / per_step))
    eff = per_step * accum
    msg = (f"Effective batch {eff} = micro-batch {d.micro_batch} x {accum} accumulation steps x "
           f"{d.num_devices} device{'s' if d.num_devices > 1 else ''}.")
    warnings = ()
    if eff != d.task.batch_size:
        warnings = (f"Effective batch is {eff}, not {d.task.batch_size}: it must be a multiple of "
                    f"micro-batch x devices ({per_step}).",)
    return Outcome(msg, {"grad_accum": accum}, warnings)


@rule("TP048", "steps-from-data",
      "tuneplan: steps = epochs x ceil(training rows / (micro-batch x devices)) / accumulation, "
      "as the executor counts them (executor/train.py total_steps)")
def steps_from_data(d: Draft) -> Optional[Outcome]:
    """Why: with the row count known the plan can say how many optimizer steps it will take, and
    warmup and schedule lengths stop being abstract. Under ~100 steps a run is short: warmup is a
    handful of steps and the learning rate matters more (LoRA Without Regret).
    When not: no --data file was read. With --max-steps pinned the steps are the pin, and the rule
    states how many epochs that is.
    Source: the executor's own step count (executor/train.py)."""
    ds = d.inputs.data_stats
    if ds is None:
        return None
    micro_per_epoch = math.ceil(ds.train_rows / (d.micro_batch * d.num_devices))
    per_epoch = max(1, math.ceil(micro_per_epoch / d.grad_accum))
    eff = d.micro_batch * d.grad_accum * d.num_devices
    carve = "" if ds.train_rows == ds.rows else f" ({ds.rows - ds.train_rows:,} held out for eval)"
    if d.max_steps is not None:
        epochs = d.max_steps / per_epoch
        return Outcome(f"{d.max_steps} steps pinned: {epochs:.2g} epochs over {ds.train_rows:,} training "
                       f"rows{carve} at an effective batch of {eff}.", {"planned_steps": d.max_steps})
    epochs = d.num_epochs or 1.0
    steps = max(1, math.ceil(epochs * micro_per_epoch / d.grad_accum))
    msg = (f"{steps} optimizer steps planned: {epochs:g} epochs x {per_epoch} steps per epoch "
           f"({ds.train_rows:,} training rows{carve} / effective batch {eff}); "
           f"{ds.trained_tokens:,} loss-bearing tokens per epoch.")
    if steps < 100:
        msg += " A short run (< 100 steps)."
    return Outcome(msg, {"planned_steps": steps})


RULES: list[Rule] = [
    retrieval_first,
    guessed_architecture,
    precision_by_hardware,
    attention_kernel,
    memory_headroom,
    seq_len_from_data,
    target_all_linear,
    rank_by_distance,
    alpha_fixed,
    dropout_by_size,
    far_domain_full,
    far_low_forgetting_lora,
    far_full_unaffordable,
    near_lora_then_qlora,
    nothing_fits_take_qlora,
    method_pin,
    fit_ladder,
    shorten_sequences,
    infeasible_ways_out,
    learning_rate,
    schedule_recipe,
    qlora_recipe,
    paged_optimizer,
    lora_small_batch,
    lora_capacity,
    cpt_with_lora,
    gradient_accumulation,
    steps_from_data,
]
"""The explicit, ordered registry. Order matters: framing, adapter shape, method, memory ladder,
optimisation. A rule sees every decision made before it."""

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}
