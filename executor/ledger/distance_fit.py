"""``tuneplan calibrate``, distance part: refit the measured-distance thresholds
(docs/domain-distance.md, executor/distance/verdict.py) from recorded outcomes.

The cases are the pairs ``check --rules`` audits (check.py DISTANCE_AUDIT_SQL): a LoRA/QLoRA run
and its full fine-tuning comparator whose adapter plan carries a measurement
(``inputs.distance.measure_id``). Each conclusive pair (both runs at least MIN_AUDIT_STEPS
steps) is labelled **fell short** when full fine-tuning learned more than the adapter by at least
the noise band (0.02 nats), else **matched**. Outcomes are two-class, so what they can place is
the boundary between "LoRA falls short" and not: the *far* threshold of each signal

    update rank   mean rank_90 share >= t      predicts fell short
    fit           high-loss share >= t         predicts fell short
    score         distance score >= t          predicts fell short (current t = 1: far on average)
    pilot         pilot share < t              predicts fell short (pairs whose measurement had a pilot)

For each signal the proposed t maximises the pairs it classifies as they turned out; the
candidates are the current threshold and the midpoints between consecutive recorded values, and
among equally good ones the one nearest the current threshold wins (a threshold moves only as far
as the data asks). The moderate thresholds keep their ratio to the far ones (outcomes cannot place
them). Below MIN_PAIRS conclusive pairs, or fewer than MIN_PER_OUTCOME of either outcome, nothing
is proposed ("not enough data"). The proposal is printed, not applied: the verdict keeps the
documented thresholds until verdict.py and the docs are changed. DuckDB only; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .check import MIN_AUDIT_STEPS, NOISE_BAND_NATS, _rows
from .connect import DBPath, open_read

MIN_PAIRS = 6
"""Fewest conclusive pairs the refit needs."""
MIN_PER_OUTCOME = 2
"""... with at least this many that fell short and this many that matched (one case of a class
places no boundary)."""

PAIRS_SQL = """
SELECT l.compare_id, l.adapter_method, l.adapter_run_id, l.full_run_id, l.adapter_learning,
       l.full_learning, d.measure_id, d.verdict, d.score, d.mean_rank_90_share, d.high_loss_share,
       d.pilot_share, a.steps AS adapter_steps, f.steps AS full_steps
FROM audit_lora_vs_full_learning l
JOIN runs a ON a.run_id = l.adapter_run_id
JOIN runs f ON f.run_id = l.full_run_id
JOIN distance_measurements d ON d.measure_id = plan_measure_id(a.plan_json)
ORDER BY l.compare_id, l.adapter_method
"""


@dataclass
class SignalFit:
    name: str
    """update rank | fit | score | pilot share"""
    column: str
    direction: str
    """">=": value at or above t predicts fell short; "<": value below t does."""
    current: float
    proposed: Optional[float]
    agree_current: int
    agree_proposed: int
    cases: int
    moderate_current: Optional[float] = None
    moderate_proposed: Optional[float] = None


@dataclass
class DistanceFit:
    pairs: int = 0
    """Conclusive pairs."""
    fell_short: int = 0
    matched: int = 0
    inconclusive: int = 0
    """Pairs with a run under MIN_AUDIT_STEPS."""
    verdict_agree: int = 0
    """Pairs the recorded verdicts (far = fell short) got right."""
    enough: bool = False
    signals: list[SignalFit] = field(default_factory=list)
    thresholds: str = ""


def _predicts_short(value: float, t: float, direction: str) -> bool:
    return value >= t if direction == ">=" else value < t


def _agree(cases: list[tuple[float, bool]], t: float, direction: str) -> int:
    return sum(_predicts_short(v, t, direction) == short for v, short in cases)


def best_threshold(cases: list[tuple[float, bool]], current: float, direction: str) -> tuple[float, int]:
    """(t, agreeing cases): the threshold classifying most (value, fell_short) cases right; ties go
    to the candidate nearest the current threshold."""
    values = sorted({v for v, _ in cases})
    candidates = [current] + [round((a + b) / 2, 6) for a, b in zip(values, values[1:])]
    candidates += [values[0] - 1e-6 if direction == ">=" else values[-1] + 1e-6] if values else []
    best = max(candidates, key=lambda t: (_agree(cases, t, direction), -abs(t - current)))
    return best, _agree(cases, best, direction)


def fit(db: DBPath = None, *, con=None, min_steps: int = MIN_AUDIT_STEPS, band: float = NOISE_BAND_NATS):
    """The refit from the database's recorded pairs (opened read-only)."""
    from tuneplan.executor.distance.verdict import DEFAULT

    own = con is None
    con = con or open_read(db)
    try:
        rows = _rows(con, PAIRS_SQL)
    finally:
        if own:
            con.close()
    out = DistanceFit(thresholds=DEFAULT.label)
    labelled: list[tuple[dict[str, Any], bool]] = []
    for r in rows:
        if min((r["adapter_steps"] or 0), (r["full_steps"] or 0)) < min_steps:
            out.inconclusive += 1
            continue
        short = (r["full_learning"] - r["adapter_learning"]) >= band
        labelled.append((r, short))
    out.pairs = len(labelled)
    out.fell_short = sum(s for _, s in labelled)
    out.matched = out.pairs - out.fell_short
    out.verdict_agree = sum((r["verdict"] == "far") == s for r, s in labelled)
    out.enough = out.pairs >= MIN_PAIRS and min(out.fell_short, out.matched) >= MIN_PER_OUTCOME
    specs = (
        (
            "update rank (mean rank90 share)",
            "mean_rank_90_share",
            ">=",
            DEFAULT.rank_far,
            DEFAULT.rank_moderate,
        ),
        ("fit (high-loss share)", "high_loss_share", ">=", DEFAULT.fit_far, DEFAULT.fit_moderate),
        ("score", "score", ">=", 1.0, None),
        ("pilot share", "pilot_share", "<", DEFAULT.pilot_far, None),
    )
    for name, col, direction, current, moderate in specs:
        cases = [(float(r[col]), s) for r, s in labelled if r[col] is not None]
        enough = len(cases) >= MIN_PAIRS and min(sum(s for _, s in cases), sum(not s for _, s in cases)) >= (
            MIN_PER_OUTCOME
        )
        proposed, agree = best_threshold(cases, current, direction) if enough else (None, 0)
        out.signals.append(
            SignalFit(
                name=name,
                column=col,
                direction=direction,
                current=current,
                proposed=proposed,
                agree_current=_agree(cases, current, direction),
                agree_proposed=agree,
                cases=len(cases),
                moderate_current=moderate,
                moderate_proposed=(
                    None if moderate is None or proposed is None else round(proposed * moderate / current, 6)
                ),
            )
        )
    return out


def lines(f: DistanceFit) -> list[str]:
    """What `tuneplan calibrate` prints for the distance thresholds."""
    head = (
        f"distance thresholds ({f.thresholds}): {f.pairs} conclusive LoRA-vs-full pair"
        f"{'s' if f.pairs != 1 else ''} with a measured distance ({f.fell_short} fell short of full "
        f"fine-tuning by >= {NOISE_BAND_NATS} nats, {f.matched} matched"
        + (f"; {f.inconclusive} under {MIN_AUDIT_STEPS} steps not counted" if f.inconclusive else "")
        + ")"
    )
    if not f.enough:
        return [
            head,
            f"  not enough data: the refit needs at least {MIN_PAIRS} conclusive pairs with at least "
            f"{MIN_PER_OUTCOME} of each outcome; the thresholds stay as documented (fix: run `tuneplan "
            "compare` on plans advised with --measure-distance)",
        ]
    out = [head, f"  the recorded verdicts (far = falls short) agree with {f.verdict_agree}/{f.pairs}"]
    for s in f.signals:
        rel = "far at >=" if s.direction == ">=" else "far below"
        if s.proposed is None:
            out.append(f"  {s.name}, {rel} {s.current:g}: not enough data ({s.cases} pairs carry it)")
            continue
        mod = (
            f" (moderate {s.moderate_current:g} -> {s.moderate_proposed:g}, same ratio)"
            if s.moderate_current is not None
            else ""
        )
        out.append(
            f"  {s.name}, {rel}: {s.current:g} -> {s.proposed:g}{mod}; agrees with "
            f"{s.agree_current}/{s.cases} -> {s.agree_proposed}/{s.cases} pairs"
        )
    out.append(
        "  proposed, not applied: the verdict keeps the documented thresholds until "
        "executor/distance/verdict.py and docs/domain-distance.md are changed"
    )
    return out
