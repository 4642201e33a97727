"""``tuneplan check``: did the advice hold? Every recorded run's promises against what it measured,
and a per-rule audit across comparisons (``tuneplan check --rules``).

Per run (docs/checks.md has the reasoning behind every threshold):

* memory_error = (predicted - measured) / measured, signed, as ``tuneplan runs`` shows it;
  memory_error_comparable is like-for-like, tensor bytes on both sides: the prediction less its
  framework overhead (runtime / CUDA context and allocator fragmentation) against the measured
  peak less its runtime_bytes (CPU: the process RSS before the model loaded; 0 on CUDA, whose
  max_allocated has no CUDA context). Both, learning, forgetting and memory_under_predicted are
  read from the views (views.sql defines each once), never recomputed here.
* broken when a plan predicted to fit failed out of memory;
* broken when the measured peak exceeds the like-for-like prediction by more than
  MEMORY_UNDER_PREDICTION_LIMIT (25 %) of the measurement: under-prediction causes OOMs;
* broken when the probe loss rose by more than FORGETTING_THRESHOLDS[tolerance] nats;
* broken when the in-domain eval loss did not fall (nothing learned);
* broken when a loss is not finite (NaN or inf in the result or in metrics);
* runs still running, interrupted, or failed for reasons other than memory are judged on what they
  measured; the reasons say what could not be judged.

Reads only (connect.open_read): an older database is refused with the command that upgrades it.
DuckDB only; never imports torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .connect import DBPath, open_read
from .migrate import LEARNING_MATCH_SHARE, MEMORY_UNDER_PREDICTION_LIMIT

__all__ = [
    "MEMORY_UNDER_PREDICTION_LIMIT",
    "MEMORY_OVER_PREDICTION_NOTE",
    "FORGETTING_THRESHOLDS",
    "LEARNING_MATCH_SHARE",
    "NOISE_BAND_NATS",
    "MIN_AUDIT_STEPS",
    "RULE_PROMISES",
    "RunCheck",
    "judge_run",
    "check_runs",
    "gate",
    "summarise",
    "audit_rules",
    "audit_distance",
    "to_json",
]

MEMORY_OVER_PREDICTION_NOTE = 0.50
"""A note (not a break) when the like-for-like prediction is more than 50 % above the measurement:
the advisor may have turned down a method that would have fit."""
FORGETTING_THRESHOLDS: dict[str, float] = {"low": 0.05, "medium": 0.15, "high": 0.50}
"""Largest probe-loss increase (nats) each forgetting tolerance accepts: exp(0.05) = +5 %,
exp(0.15) = +16 %, exp(0.50) = +65 % general-text perplexity."""
NOISE_BAND_NATS = 0.02
"""Default noise band of the comparison audits (TP020, TP021): a learning or forgetting
difference between two runs smaller than this many nats is inconclusive, not a verdict. The runs
do not record their eval-batch variance, so this is a documented default (docs/checks.md):
with TUNEPLAN_EVAL_BATCHES-sized evaluations the same checkpoint's loss moves by about 0.01 nats
between eval draws; twice that keeps one noisy batch from deciding a rule."""
MIN_AUDIT_STEPS = 20
"""Fewest optimizer steps each run of a comparison pair needs before the audits count it: a
5-step run has barely moved from its starting loss, so its learning/forgetting difference is
noise, not evidence (the pair is inconclusive)."""

RULE_PROMISES: dict[str, str] = {
    "TP020": "full fine-tuning learns more than LoRA on far domains",
    "TP021": "LoRA forgets less than full fine-tuning",
    "TP023": f"QLoRA learns about as much as LoRA (>= {LEARNING_MATCH_SHARE:.0%}) with less memory",
    "TP030": "a plan predicted to fit runs without OOM, its peak within "
    f"{MEMORY_UNDER_PREDICTION_LIMIT:.0%} of the prediction",
    "TP040": "the advised learning rate is within 2x of the best rate of each recorded "
    "learning-rate sweep (lowest eval loss)",
    "distance": "a measured far domain distance precedes LoRA falling short of full fine-tuning's "
    "learning, a measured near one LoRA matching it (docs/domain-distance.md thresholds)",
}


@dataclass
class RunCheck:
    """The verdict on one run."""

    run_id: str
    method: Optional[str]
    status: str
    memory_error: Optional[float]
    memory_error_comparable: Optional[float]
    forgetting: Optional[float]
    forgetting_within_tolerance: Optional[bool]
    learning: Optional[float]
    learned: Optional[bool]
    out_of_memory: bool
    verdict: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    forgetting_tolerance: Optional[str] = None
    non_finite: list[str] = field(default_factory=list)
    steps: Optional[int] = None
    started_at: Optional[str] = None
    memory_under_predicted: Optional[bool] = None
    """run_memory_checks.memory_under_predicted: like-for-like error below -MEMORY_UNDER_PREDICTION_LIMIT."""


def _rows(con, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _finite(x: Any) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def judge_run(row: dict[str, Any]) -> RunCheck:
    """Verdict for one row of ``runs`` joined with ``run_memory_checks`` and ``run_learning``."""
    status = row.get("status") or "unknown"
    tol = row.get("forgetting_tolerance")
    reasons: list[str] = []
    notes: list[str] = []
    broken = False
    oom = bool(row.get("out_of_memory"))
    fits = row.get("predicted_fits")
    err = _finite(row.get("memory_error"))
    cerr = _finite(row.get("memory_error_comparable"))
    non_finite = [
        k
        for k in ("eval_loss_before", "eval_loss_after", "forgetting_loss_before", "forgetting_loss_after")
        if row.get(k) is not None and not math.isfinite(float(row[k]))
    ]
    if row.get("non_finite_metrics"):
        non_finite.append(f"{row['non_finite_metrics']} metrics row(s) (loss or grad_norm)")
    if non_finite:
        broken = True
        reasons.append(f"non-finite loss (NaN or inf): {', '.join(non_finite)}")

    if oom:
        if fits is False:
            notes.append("out of memory, as predicted (the plan said it does not fit)")
        else:
            broken = True
            reasons.append(f"predicted to fit, but failed out of memory ({row.get('error')})")
    if cerr is None:
        if not oom:
            notes.append("memory not measured")
    elif row.get("memory_under_predicted"):
        broken = True
        measured = row.get("measured_comparable_bytes")
        if measured is None:
            measured = row["measured_peak_bytes"]
        reasons.append(
            f"memory under-predicted: measured {measured:,} B (tensor bytes, peak less "
            f"runtime) is {-cerr:.0%} above the like-for-like prediction "
            f"{row['predicted_comparable_bytes']:,} B (memory.allocated_peak_bytes; limit "
            f"{MEMORY_UNDER_PREDICTION_LIMIT:.0%})"
        )
    elif cerr > MEMORY_OVER_PREDICTION_NOTE:
        notes.append(
            f"memory over-predicted by {cerr:.0%} like-for-like (memory.allocated_peak_bytes vs "
            f"the measured tensor peak; not a break: the plan "
            "is safe, but may have turned down a method that would have fit)"
        )
    if status == "succeeded" and fits is False:
        notes.append("ran although predicted not to fit")

    eb, ea = _finite(row.get("eval_loss_before")), _finite(row.get("eval_loss_after"))
    learning = _finite(row.get("learning"))
    learned = None if learning is None else learning > 0
    if learned is False:
        broken = True
        reasons.append(f"did not learn: eval loss {eb:.4f} -> {ea:.4f}")

    forgetting = _finite(row.get("forgetting"))
    within: Optional[bool] = None
    if forgetting is not None:
        limit = FORGETTING_THRESHOLDS.get(tol or "")
        if limit is None:
            notes.append(f"forgetting {forgetting:+.4f} nats not judged: no known tolerance ({tol!r})")
        else:
            within = forgetting <= limit
            if not within:
                broken = True
                reasons.append(
                    f"forgot {forgetting:+.4f} nats on the probe, beyond the {tol} tolerance ({limit} nats)"
                )

    if status == "running":
        notes.append("still running (or killed without a final record): judged on what it measured so far")
    elif status == "interrupted":
        notes.append("interrupted: judged on what it measured before it stopped")
    elif status == "failed" and not oom:
        notes.append(
            f"failed, not for memory ({row.get('error')}): not counted against the "
            "advice; judged on what it measured"
        )
    if status != "succeeded" and (learned is None or within is None):
        missing = [n for n, v in (("learning", learned), ("forgetting", within)) if v is None]
        notes.append(f"{' and '.join(missing)} not measured")

    return RunCheck(
        run_id=row["run_id"],
        method=row.get("method"),
        status=status,
        memory_error=err,
        memory_error_comparable=cerr,
        forgetting=forgetting,
        forgetting_within_tolerance=within,
        learning=learning,
        learned=learned,
        out_of_memory=oom,
        verdict="broken" if broken else "held",
        reasons=reasons,
        notes=notes,
        forgetting_tolerance=tol,
        non_finite=non_finite,
        steps=row.get("steps"),
        started_at=None if row.get("started_at") is None else str(row.get("started_at")),
        memory_under_predicted=None if cerr is None else bool(row.get("memory_under_predicted")),
    )


_RUN_SQL = """
SELECT r.run_id, r.method, r.status, r.error, r.forgetting_tolerance, r.domain_distance,
       r.eval_loss_before, r.eval_loss_after, r.forgetting_loss_before, r.forgetting_loss_after,
       r.steps, r.started_at, r.plan_hash,
       r.predicted_fits, r.predicted_peak_bytes, r.measured_peak_bytes,
       r.predicted_overhead_bytes, r.runtime_bytes, m.predicted_comparable_bytes,
       m.measured_comparable_bytes, m.memory_error, m.memory_error_comparable,
       m.memory_under_predicted, m.out_of_memory, l.learning, l.forgetting,
       (SELECT count(*) FROM metrics x WHERE x.run_id = r.run_id
          AND (NOT isfinite(x.loss) OR NOT isfinite(x.grad_norm))) AS non_finite_metrics
FROM runs r JOIN run_memory_checks m USING (run_id) JOIN run_learning l USING (run_id)
WHERE {where}
ORDER BY r.started_at NULLS LAST, r.run_id
"""


def _filters(
    run_ids: Optional[list[str]], plan_hashes: Optional[list[str]], since: Optional[str]
) -> tuple[str, list[Any]]:
    where, params = ["TRUE"], []
    if run_ids:
        where.append("(" + " OR ".join("starts_with(r.run_id, ?)" for _ in run_ids) + ")")
        params += list(run_ids)
    if plan_hashes:
        where.append("r.plan_hash IN (" + ", ".join("?" for _ in plan_hashes) + ")")
        params += list(plan_hashes)
    if since:
        where.append("r.started_at >= CAST(? AS TIMESTAMP)")
        params.append(since)
    return " AND ".join(where), params


def check_runs(
    db: DBPath = None,
    *,
    con=None,
    run_ids: Optional[list[str]] = None,
    plan_hashes: Optional[list[str]] = None,
    since: Optional[str] = None,
) -> dict[str, Any]:
    """{"runs": [RunCheck as dict, ...], "summary": {...}} for every run in the database, or
    those whose run_id starts with one of ``run_ids``, whose plan_hash is in ``plan_hashes``,
    started at or after ``since`` (ISO date or timestamp, UTC)."""
    own = con is None
    con = con or open_read(db)
    where, params = _filters(run_ids, plan_hashes, since)
    try:
        rows = _rows(con, _RUN_SQL.format(where=where), params)
    finally:
        if own:
            con.close()
    checks = [judge_run(r) for r in rows]
    return {"runs": [asdict(c) for c in checks], "summary": summarise(checks)}


def gate(result: dict[str, Any]) -> list[str]:
    """Why ``check --strict`` fails (empty: it passes). No evidence is never a pass: zero runs,
    a run that did not succeed (except an out-of-memory the plan predicted), a non-finite loss,
    a broken verdict, and with --rules a rule whose audit is broken or mixed."""
    runs = result["runs"]
    reasons = []
    if not runs:
        reasons.append(
            "no runs to judge (an empty database, or the filters matched none): no evidence is not a pass"
        )
    for r in runs:
        expected_oom = r["out_of_memory"] and any("as predicted" in n for n in r["notes"])
        if r["status"] != "succeeded" and not expected_oom:
            reasons.append(f"run {r['run_id']} is {r['status']}, not succeeded")
        if r["verdict"] == "broken":
            reasons.append(f"run {r['run_id']} broke the advice: {'; '.join(r['reasons'])}")
    for rule in result.get("rules") or []:
        if rule["status"] in ("broken", "mixed"):
            reasons.append(
                f"rule {rule['rule']} audit is {rule['status']}: {rule['broken']} of "
                f'{rule["tested"]} conclusive case(s) broke "{rule["promise"]}"'
            )
    return reasons


def summarise(checks: list[RunCheck]) -> dict[str, Any]:
    """Counts by verdict and by what was judged."""
    errs = [c.memory_error_comparable for c in checks if c.memory_error_comparable is not None]
    return {
        "runs": len(checks),
        "held": sum(c.verdict == "held" for c in checks),
        "broken": sum(c.verdict == "broken" for c in checks),
        "succeeded": sum(c.status == "succeeded" for c in checks),
        "failed": sum(c.status == "failed" for c in checks),
        "interrupted": sum(c.status == "interrupted" for c in checks),
        "running": sum(c.status == "running" for c in checks),
        "out_of_memory": sum(c.out_of_memory for c in checks),
        "memory_under_predicted": sum(bool(c.memory_under_predicted) for c in checks),
        "did_not_learn": sum(c.learned is False for c in checks),
        "non_finite": sum(bool(c.non_finite) for c in checks),
        "forgot_beyond_tolerance": sum(c.forgetting_within_tolerance is False for c in checks),
        "mean_abs_memory_error_comparable": (sum(abs(e) for e in errs) / len(errs)) if errs else None,
    }


# ------------------------------------------------------------------------------------------ rules


def _rule(
    rule: str,
    cases: list[tuple[Optional[bool], str]],
    note: str = "",
    *,
    noise_band: Optional[float] = None,
    min_steps: Optional[int] = None,
) -> dict[str, Any]:
    """One rule's audit from its cases: (True held / False broken / None inconclusive, evidence).
    Status: untested (no case), inconclusive (no conclusive case), held, broken, or mixed."""
    tested = sum(c is not None for c, _ in cases)
    held = sum(c is True for c, _ in cases)
    inconclusive = sum(c is None for c, _ in cases)
    if not cases:
        status = "untested"
    elif tested == 0:
        status = "inconclusive"
    elif held == tested:
        status = "held"
    elif held == 0:
        status = "broken"
    else:
        status = "mixed"
    return {
        "rule": rule,
        "promise": RULE_PROMISES[rule],
        "tested": tested,
        "held": held,
        "broken": tested - held,
        "inconclusive": inconclusive,
        "status": status,
        "evidence": [e for _, e in cases],
        "note": note,
        "noise_band_nats": noise_band,
        "min_steps": min_steps,
    }


def _pair(
    steps: dict[str, Any],
    a: str,
    b: str,
    diff: Optional[float],
    holds: Any,
    band: Optional[float],
    min_steps: int,
) -> tuple[Optional[bool], str]:
    """(verdict, why) of one comparison pair: inconclusive below the minimum steps or inside
    the noise band."""
    short = [rid for rid in (a, b) if (steps.get(rid) or 0) < min_steps]
    if short:
        return None, (
            f"inconclusive: {', '.join(f'{r} ran {steps.get(r) or 0} steps' for r in short)}"
            f" (minimum {min_steps})"
        )
    if band is not None and diff is not None and abs(diff) < band:
        return None, f"inconclusive: difference {diff:+.4f} nats is inside the noise band ±{band}"
    return bool(holds), "held" if holds else "broken"


def audit_rules(
    db: DBPath = None, *, con=None, noise_band: float = NOISE_BAND_NATS, min_steps: int = MIN_AUDIT_STEPS
) -> list[dict[str, Any]]:
    """Which rules' promises held across runs, from the audit_* views (one entry per rule). A
    comparison pair counts only when both runs trained at least ``min_steps`` steps and (TP020,
    TP021) their difference is outside ``noise_band`` nats; otherwise it is inconclusive."""
    own = con is None
    con = con or open_read(db)
    try:
        qv = _rows(con, "SELECT * FROM audit_qlora_vs_lora_memory ORDER BY compare_id")
        fv = _rows(con, "SELECT * FROM audit_lora_vs_full_forgetting ORDER BY compare_id, adapter_method")
        lv = _rows(con, "SELECT * FROM audit_lora_vs_full_learning ORDER BY compare_id, adapter_method")
        mv = _rows(
            con,
            "SELECT r.run_id, r.method, m.memory_error_comparable, "
            "m.memory_under_predicted, m.out_of_memory "
            "FROM runs r JOIN run_memory_checks m USING (run_id) WHERE r.predicted_fits "
            "AND (r.measured_peak_bytes > 0 OR m.out_of_memory) ORDER BY run_id",
        )
        lr = _rows(
            con, "SELECT * FROM audit_learning_rate WHERE advised_learning_rate > 0 ORDER BY compare_id"
        )
        steps = dict(con.execute("SELECT run_id, steps FROM runs").fetchall())
    finally:
        if own:
            con.close()
    out = []
    cases = []
    for r in qv:
        verdict, why = _pair(steps, r["qlora_run_id"], r["lora_run_id"], None, r["holds"], None, min_steps)
        cases.append(
            (
                verdict,
                f"{r['compare_id']}: QLoRA {r['qlora_measured_bytes']:,} B vs LoRA "
                f"{r['lora_measured_bytes']:,} B, learning {r['qlora_learning']:+.4f} vs "
                f"{r['lora_learning']:+.4f} -> {why}",
            )
        )
    out.append(_rule("TP023", cases, min_steps=min_steps))
    cases = []
    for r in fv:
        verdict, why = _pair(
            steps,
            r["adapter_run_id"],
            r["full_run_id"],
            r["adapter_forgetting"] - r["full_forgetting"],
            r["lora_forgets_less"],
            noise_band,
            min_steps,
        )
        cases.append(
            (
                verdict,
                f"{r['compare_id']}: {r['adapter_method']} forgot "
                f"{r['adapter_forgetting']:+.4f} vs full {r['full_forgetting']:+.4f} nats "
                f"-> {why}",
            )
        )
    out.append(_rule("TP021", cases, noise_band=noise_band, min_steps=min_steps))
    far = [r for r in lv if r["far_domain"]]
    cases = []
    for r in far:
        verdict, why = _pair(
            steps,
            r["adapter_run_id"],
            r["full_run_id"],
            r["full_learning"] - r["adapter_learning"],
            r["full_learns_more"],
            noise_band,
            min_steps,
        )
        cases.append(
            (
                verdict,
                f"{r['compare_id']}: full learned {r['full_learning']:+.4f} vs "
                f"{r['adapter_method']} {r['adapter_learning']:+.4f} -> {why}",
            )
        )
    note = (
        ""
        if len(far) == len(lv)
        else (
            f"{len(lv) - len(far)} comparison pair(s) on near/moderate domains not counted (TP020 "
            "promises nothing there)"
        )
    )
    out.append(_rule("TP020", cases, note, noise_band=noise_band, min_steps=min_steps))
    cases = []
    for r in mv:
        ok = not r["out_of_memory"] and not r["memory_under_predicted"]
        if not ok:
            cases.append(
                (
                    False,
                    f"{r['run_id']} ({r['method']}): "
                    + (
                        "out of memory"
                        if r["out_of_memory"]
                        else f"like-for-like error {r['memory_error_comparable']:+.1%}"
                    ),
                )
            )
        else:
            cases.append((True, ""))
    rule = _rule("TP030", cases)
    rule["evidence"] = [e for e in rule["evidence"] if e]
    out.append(rule)
    cases = [
        (
            bool(r["within_2x"]),
            f"{r['compare_id']} ({r['model']}, {r['trials']} trials): best {r['best_learning_rate']:.3g} vs "
            f"advised {r['advised_learning_rate']:.3g} ({r['ratio']:.2g}x) -> "
            f"{'held' if r['within_2x'] else 'broken'}",
        )
        for r in lr
    ]
    out.append(_rule("TP040", cases))
    return out


def audit_distance(
    db: DBPath = None, *, con=None, noise_band: float = NOISE_BAND_NATS, min_steps: int = MIN_AUDIT_STEPS
) -> dict[str, Any]:
    """The measured-distance thresholds (docs/domain-distance.md) against the recorded
    LoRA/QLoRA-vs-full comparisons whose plans carry a measurement (`check --rules`, reported
    apart from the rules and not part of the gate: the thresholds are not yet fitted)."""
    own = con is None
    con = con or open_read(db)
    try:
        rows = _rows(con, DISTANCE_AUDIT_SQL)
        steps = dict(con.execute("SELECT run_id, steps FROM runs").fetchall())
    finally:
        if own:
            con.close()
    return _distance_rule(rows, steps, noise_band, min_steps)


DISTANCE_AUDIT_SQL = """
SELECT l.compare_id, l.adapter_method, l.adapter_run_id, l.full_run_id, l.adapter_learning,
       l.full_learning, d.measure_id, d.verdict, d.score
FROM audit_lora_vs_full_learning l
JOIN runs r ON r.run_id = l.adapter_run_id
JOIN distance_measurements d
  ON d.measure_id = plan_measure_id(r.plan_json)
ORDER BY l.compare_id, l.adapter_method
"""
"""Each LoRA/QLoRA-vs-full comparison pair whose adapter plan carries a measured distance
(advise --measure-distance), with that measurement's verdict."""


def _distance_rule(
    rows: list[dict[str, Any]], steps: dict[str, Any], band: float, min_steps: int
) -> dict[str, Any]:
    """The measured-distance thresholds against outcomes: far should precede LoRA falling short
    of full fine-tuning (full learned more by more than the noise band), near LoRA matching it
    (full not ahead by more than the band). Moderate promises neither and is not counted."""
    cases: list[tuple[Optional[bool], str]] = []
    skipped = 0
    for r in rows:
        if r["verdict"] not in ("near", "far"):
            skipped += 1
            continue
        short = [rid for rid in (r["adapter_run_id"], r["full_run_id"]) if (steps.get(rid) or 0) < min_steps]
        gap = r["full_learning"] - r["adapter_learning"]
        head = (
            f"{r['compare_id']}: measured {r['verdict']} (score {r['score']:.2f}, {r['measure_id']}); full "
            f"learned {r['full_learning']:+.4f} vs {r['adapter_method']} {r['adapter_learning']:+.4f}"
        )
        if short:
            cases.append((None, f"{head} -> inconclusive: {', '.join(short)} below {min_steps} steps"))
        elif r["verdict"] == "far" and abs(gap) < band:
            cases.append((None, f"{head} -> inconclusive: gap {gap:+.4f} nats inside the noise band ±{band}"))
        else:
            fell_short = gap >= band
            held = fell_short if r["verdict"] == "far" else not fell_short
            cases.append((held, f"{head} -> {'held' if held else 'broken'}"))
    note = f"{skipped} pair(s) measured moderate not counted (no promise there)" if skipped else ""
    return _rule("distance", cases, note, noise_band=band, min_steps=min_steps)


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)
