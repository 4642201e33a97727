"""The advisor's rules: the seed's decision tree and the papers' figures as small pure functions.

Each rule takes the Draft and returns an Outcome (it fired: what to change, what to warn) or None
(it did not fire). Rules never mutate; the engine applies outcomes in the order of `RULES`, the
explicit list below, and records every rule that fired in the plan's `decisions`.

The rules live in one module per stage of the pipeline, in the order they fire:

  framing.py       TP001-TP005  retrieval first, known or guessed model, precision, attention, headroom
  adapter.py       TP006-TP013  seq_len from the data, LoRA targets, rank, alpha, dropout
  method.py        TP020-TP025  full FT / LoRA / QLoRA from domain, forgetting and what fits; pins
  memory.py        TP030-TP032  the fitting ladder, shorter sequences, ways out
  optimisation.py  TP040-TP048  learning rate, schedule, QLoRA recipe, optimizer, batch, steps
  calibration.py   TP050        the estimate scaled by factors from measured runs

`_base.py` holds the anatomy (Outcome, Rule, @rule). Every rule's docstring has three parts —
Why, When not, Source — that `tuneplan explain ID` prints. Cases for each rule, both ways, live in
tests/rules/<ID>.yaml.
"""

from __future__ import annotations

from ._base import Outcome, Rule, RuleFn, rule
from .adapter import alpha_fixed, dropout_by_size, rank_by_distance, seq_len_from_data, target_all_linear
from .calibration import calibrated_estimate
from .framing import (
    attention_kernel,
    guessed_architecture,
    memory_headroom,
    precision_by_hardware,
    retrieval_first,
)
from .memory import fit_ladder, infeasible_ways_out, shorten_sequences
from .method import (
    far_domain_full,
    far_full_unaffordable,
    far_low_forgetting_lora,
    method_pin,
    near_lora_then_qlora,
    nothing_fits_take_qlora,
)
from .optimisation import (
    cpt_with_lora,
    gradient_accumulation,
    learning_rate,
    lora_capacity,
    lora_small_batch,
    paged_optimizer,
    qlora_recipe,
    schedule_recipe,
    steps_from_data,
)

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
    calibrated_estimate,
]
"""The explicit, ordered registry. Order matters: framing, adapter shape, method, memory ladder,
optimisation, calibration. A rule sees every decision made before it."""

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


__all__ = ["RULES", "RULES_BY_ID", "Outcome", "Rule", "RuleFn", "rule"]
