"""Method rules (TP020-TP025): full fine-tuning, 16-bit LoRA or QLoRA, from the domain's distance,
the forgetting tolerance and what fits; a pinned method stays, with a warning where advice differs.
"""

from __future__ import annotations

from typing import Optional

from tuneplan.schemas.common import Method

from ..draft import Draft
from ..fitting import best_fit, fits, lowest
from ._base import Outcome, gib, method_word, rule


def _peak(d: Draft, method: Method) -> str:
    f = best_fit(d, method)
    return gib((f or lowest(d, method)).estimate.per_device_bytes)


def _adapter_that_fits(d: Draft) -> Optional[str]:
    for m in ("lora", "qlora"):
        if fits(d, m):
            return m
    return None


@rule(
    "TP020",
    "far-domain-full",
    "Biderman et al. 2024 §4.1, §4.6 (full FT learns 10-100x higher-rank updates on code/math)",
)
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


@rule(
    "TP021",
    "far-domain-low-forgetting-lora",
    "Biderman et al. 2024 §4.2, §4.5 (LoRA forgets less; rank controls forgetting)",
)
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
        f"Far domain, low forgetting tolerance: {method_word(m)} at r={d.lora_rank}; LoRA "
        f"forgets less than full fine-tuning.",
        {"advised_method": m},
        (
            f"LoRA learns less than full fine-tuning on far domains (Biderman et al. 2024); expect "
            f"a capacity ceiling even at r={d.lora_rank}. Evaluate on held-out in-domain data.",
        ),
    )


@rule(
    "TP022",
    "far-domain-full-unaffordable",
    "Biderman et al. 2024 §4.1; QLoRA Tables 3-4 (QLoRA ≈ 16-bit LoRA)",
)
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
        f"{method_word(m)} instead.",
        {"advised_method": m},
        (
            f"Full fine-tuning would learn more on this far domain but does not fit; "
            f"{method_word(m)} may hit a capacity ceiling. More or larger GPUs (sharded full "
            f"fine-tuning) lift it.",
        ),
    )


@rule(
    "TP023",
    "near-domain-lora-then-qlora",
    "Biderman et al. 2024 App. C (LoRA r=16 matches full FT on Tülu); QLoRA Tables 3-4, §4",
)
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
            {"advised_method": "lora"},
        )
    if fits(d, "qlora"):
        return Outcome(
            f"{d.task.domain_distance.capitalize()} domain: 16-bit LoRA needs "
            f"{_peak(d, 'lora')} per device (does not fit); QLoRA matches it at "
            f"{_peak(d, 'qlora')}.",
            {"advised_method": "qlora"},
        )
    return None


@rule("TP024", "nothing-fits-take-qlora", "QLoRA §1 (the smallest road: 65B on one 48 GB GPU)")
def nothing_fits_take_qlora(d: Draft) -> Optional[Outcome]:
    """Why: no method fits at the requested length; QLoRA is the smallest road, so it is the one to
    shorten sequences for, or to report as infeasible with ways out.
    When not: some method fits.
    Source: QLoRA §1 — 4-bit NF4 base plus adapters is the lowest-memory of the three methods."""
    if d.advised_method:
        return None
    return Outcome(
        "No method fits at the requested sequence length; planning QLoRA, the smallest road.",
        {"advised_method": "qlora"},
    )


@rule("TP025", "method-pin", "tuneplan: a pin stays, with a warning saying why it differs")
def method_pin(d: Draft) -> Optional[Outcome]:
    """Why: the user may know something the advisor does not (a deployment constraint, a
    comparison to run); a pinned method stays, and the plan says where the advice differs.
    When not: no --method given; the advised method is used.
    Source: tuneplan's pin contract (validation rejects the impossible; advice stays advice)."""
    pin = d.pins.method
    advised = d.advised_method
    if advised is None:  # TP024 always advises one
        raise RuntimeError("TP025 runs after TP020-TP024 have advised a method")
    if not pin:
        return Outcome(f"Method: {method_word(advised)}.", {"method": advised})
    warnings: tuple[str, ...] = ()
    if pin != advised:
        extra = ""
        if pin == "full" and d.task.forgetting_tolerance == "low":
            extra = " Full fine-tuning forgets more than LoRA (Biderman et al. §4.2)."
        elif pin != "full" and d.is_far and d.task.forgetting_tolerance != "low":
            extra = " On far domains LoRA learns less than full fine-tuning (Biderman et al. §4.1)."
        elif pin == "qlora" and advised == "lora":
            extra = " 16-bit LoRA fits and avoids 4-bit dequantisation; results match."
        if not fits(d, pin):
            extra += f" {method_word(pin)} does not fit this device as asked."
        warnings = (f"--method {pin} pinned; the advisor would choose {advised}.{extra}",)
    return Outcome(f"Method pinned: {method_word(pin)}.", {"method": pin}, warnings)
