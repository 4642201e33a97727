"""``tuneplan compare``: run the same task as full, LoRA and QLoRA side by side, and say whether
the evidence supports the advisor's pick for the user's forgetting tolerance.

A comparison is a sweep over the one axis ``method`` (executor/sweep.py runs, records, picks the
best, draws and prints it): each variant is the plan's ``inputs`` re-advised with ``pins.method``
set, so it gets that method's advised learning rate, rank, quantisation and memory settings, and
each trial lands in the ``comparisons`` table with axis "method". What this module adds is the
verdict on the advisor's pick (what it advises with the method pin removed): learning vs
forgetting vs memory per method, the promises TP020 / TP021 / TP023 audit (:func:`judge`,
docs/checks.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tuneplan.schemas import Plan, RunResult

from . import sweep
from .ledger.check import FORGETTING_THRESHOLDS, LEARNING_MATCH_SHARE
from .sweep import _mem, parse_methods

__all__ = ["Comparison", "Outcome", "build_variants", "judge", "parse_methods", "run_comparison"]

NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}

Outcome = sweep.Trial
"""What one method's run gave: a sweep Trial on the axis method."""


@dataclass
class Comparison:
    compare_id: str
    advised_method: str
    plan_method: str
    forgetting_tolerance: str
    domain_distance: str
    output_dir: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    verdict: str = "undecided"
    sentence: str = ""
    interrupted: bool = False
    best_method: Optional[str] = None
    """The sweep's pick: the lowest eval loss within the forgetting tolerance."""
    best_sentence: str = ""
    tuned_plan_path: Optional[str] = None

    @property
    def trials(self) -> list[Outcome]:
        return list(self.outcomes.values())


def build_variants(
    plan: Plan, methods: list[str], calibration: Optional[dict[str, float]] = None
) -> tuple[str, dict[str, Plan]]:
    """(the advisor's unpinned pick, {method: plan re-advised with pins.method = method})."""
    advised = sweep.advised_values(plan, ["method"], calibration)["method"]
    trials = sweep.build_trials(plan, {"method": methods}, calibration)
    return advised, {values["method"]: v for values, v in trials}


def _outcome(method: str, plan: Plan, result: Optional[RunResult]) -> Outcome:
    return sweep.trial_of({"method": method}, plan, result)


# ------------------------------------------------------------------------------------- judging


def judge(pick: str, tolerance: str, outcomes: dict[str, Outcome]) -> tuple[str, str]:
    """("supported" | "not supported" | "undecided", one sentence). docs/checks.md states the logic:

    the pick must have succeeded, learned (learning > 0) and kept forgetting within the tolerance's
    threshold; then, against whichever comparators succeeded:
      full  -> it learned at least as much as every other method (the reason to pay its cost);
      lora/qlora, low tolerance -> it forgot no more than full fine-tuning (TP021);
      lora/qlora, medium/high   -> it learned >= 80 % of what full learned (LoRA matches, TP023);
      qlora -> also >= 80 % of LoRA's learning with a lower measured peak than LoRA (TP023).
    """
    name = NAMES.get(pick, pick)
    limit = FORGETTING_THRESHOLDS.get(tolerance)
    head = f"the advisor's pick of {name} for {tolerance} forgetting tolerance"
    ok = {m: o for m, o in outcomes.items() if o.status == "succeeded" and o.learning is not None}
    if pick not in ok:
        why = (
            "was not part of the comparison"
            if pick not in outcomes
            else f"run did not succeed ({outcomes[pick].status})"
        )
        return "undecided", f"The evidence cannot judge {head}: its {name} {why}."
    p = ok[pick]
    good: list[str] = []
    bad: list[str] = []
    untested: list[str] = []
    if p.learning > 0:
        good.append(f"{name} learned ({p.learning:+.3f} eval loss)")
    else:
        bad.append(f"{name} did not learn ({p.learning:+.3f} eval loss)")
    if p.forgetting is not None and limit is not None:
        if p.forgetting <= limit:
            good.append(f"forgot {p.forgetting:+.3f} nats, within the {tolerance} limit of {limit}")
        else:
            bad.append(f"forgot {p.forgetting:+.3f} nats, beyond the {tolerance} limit of {limit}")

    def need(m: str) -> Optional[Outcome]:
        if m in ok:
            return ok[m]
        untested.append(f"{NAMES[m]} did not {'run' if m not in outcomes else 'succeed'}")
        return None

    if pick == "full":
        others = [ok[m] for m in ok if m != "full"]
        if not others:
            untested.append("no other method succeeded")
        else:
            best = max(others, key=lambda o: o.learning)
            if p.learning >= best.learning:
                good.append(f"learned most ({p.learning:+.3f} vs {NAMES[best.method]} {best.learning:+.3f})")
            else:
                bad.append(f"{NAMES[best.method]} learned more ({best.learning:+.3f} vs {p.learning:+.3f})")
    else:
        full = need("full")
        if full is not None:
            if tolerance == "low":
                if p.forgetting is None or full.forgetting is None:
                    untested.append("forgetting was not measured")
                elif p.forgetting <= full.forgetting:
                    good.append(
                        f"forgot no more than full fine-tuning ({p.forgetting:+.3f} vs "
                        f"{full.forgetting:+.3f} nats)"
                    )
                else:
                    bad.append(
                        f"forgot more than full fine-tuning ({p.forgetting:+.3f} vs "
                        f"{full.forgetting:+.3f} nats)"
                    )
            elif full.learning > 0 and p.learning < LEARNING_MATCH_SHARE * full.learning:
                bad.append(
                    f"learned under {LEARNING_MATCH_SHARE:.0%} of full fine-tuning "
                    f"({p.learning:+.3f} vs {full.learning:+.3f})"
                )
            else:
                good.append(
                    f"learned at least {LEARNING_MATCH_SHARE:.0%} of full fine-tuning "
                    f"({p.learning:+.3f} vs {full.learning:+.3f})"
                )
        if pick == "qlora":
            lora = need("lora")
            if lora is not None:
                matches = p.learning >= (
                    LEARNING_MATCH_SHARE * lora.learning if lora.learning > 0 else lora.learning
                )
                less = (p.measured_bytes or 0) < (lora.measured_bytes or 0)
                text = (
                    f"({p.learning:+.3f} vs {lora.learning:+.3f} learning, "
                    f"{_mem(p.measured_bytes)} vs {_mem(lora.measured_bytes)})"
                )
                if matches and less:
                    good.append(f"matched LoRA with less memory {text}")
                else:
                    bad.append(f"did not match LoRA with less memory {text}")
    tail = f" (not tested: {'; '.join(untested)})" if untested else ""
    if bad:
        return "not supported", f"The evidence does not support {head}: {'; '.join(bad)}{tail}."
    return "supported", f"The evidence supports {head}: {'; '.join(good)}{tail}."


# ------------------------------------------------------------------------------------- running


def run_comparison(
    plan_path: str | Path,
    methods: list[str],
    *,
    max_steps: Optional[int] = None,
    db: Optional[str] = None,
    output_dir: Optional[str] = None,
    data: Optional[str] = None,
    model_path: Optional[str] = None,
    progress: Optional[bool] = None,
    runner: Optional[Callable[..., RunResult]] = None,
    trust_remote_code: bool = False,
) -> Comparison:
    """The sweep over ``methods`` (executor/sweep.py: a failed run does not stop the others;
    InputError for a bad plan or when every variant failed input validation; on Ctrl-C the runs
    so far, ``interrupted`` set), judged; writes comparison.json next to sweep.json."""
    sw = sweep.run_sweep(
        plan_path,
        {"method": methods},
        max_steps=max_steps,
        db=db,
        output_dir=output_dir,
        data=data,
        model_path=model_path,
        progress=progress,
        runner=runner,
        trust_remote_code=trust_remote_code,
        id_prefix="cmp",
        kind="compare",
    )
    cmp = from_sweep(sw)
    (Path(sw.output_dir) / "comparison.json").write_text(
        json.dumps(_as_dict(cmp), indent=2, default=str) + "\n"
    )
    return cmp


def from_sweep(sw: sweep.Sweep) -> Comparison:
    """The comparison (outcome per method, the verdict) of a sweep over the axis method."""
    cmp = Comparison(
        compare_id=sw.sweep_id,
        advised_method=sw.advised["method"],
        plan_method=sw.plan_method,
        forgetting_tolerance=sw.forgetting_tolerance,
        domain_distance=sw.domain_distance,
        output_dir=sw.output_dir,
        outcomes={t.method: t for t in sw.trials},
        interrupted=sw.interrupted,
        best_method=None if sw.best is None else sw.trials[sw.best].method,
        best_sentence=sw.sentence,
        tuned_plan_path=sw.tuned_plan_path,
    )
    cmp.verdict, cmp.sentence = judge(cmp.advised_method, cmp.forgetting_tolerance, cmp.outcomes)
    return cmp


def _as_dict(cmp: Comparison) -> dict:
    d = asdict(cmp)
    d["outcomes"] = {m: sweep.trial_dict(o) for m, o in cmp.outcomes.items()}
    return d


exit_code = sweep.exit_code
"""0 all ran and succeeded, 1 any failed or was skipped, 130 interrupted."""


def print_comparison(cmp: Comparison, console=None) -> None:
    """The side-by-side table (sweep.print_trials) and the one-sentence verdict."""
    notes = []
    if cmp.plan_method != cmp.advised_method:
        notes.append(
            f"note: the plan ran {cmp.plan_method} (pinned); the advisor's own pick is {cmp.advised_method}"
        )
    notes.append(cmp.sentence)
    if cmp.best_sentence and cmp.best_method is not None:
        notes.append(cmp.best_sentence)
    if cmp.tuned_plan_path:
        notes.append(f"tuned plan: {cmp.tuned_plan_path}")
    methods = list(cmp.outcomes)
    sweep.print_trials(
        cmp.trials,
        title=f"comparison {cmp.compare_id} ({cmp.domain_distance} domain, "
        f"{cmp.forgetting_tolerance} forgetting tolerance)",
        axes=["method"],
        advised={"method": cmp.advised_method},
        best=None if cmp.best_method is None else methods.index(cmp.best_method),
        notes=notes,
        console=console,
    )
