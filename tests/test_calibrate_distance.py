"""`tuneplan calibrate` refits the measured-distance thresholds from recorded outcomes: real
distance_measurements rows and LoRA-vs-full comparisons recorded through the record functions;
"not enough data" below the minimum; the best-threshold search itself."""

from __future__ import annotations

import pytest

from exec_fixtures import make_plan
from helpers import cli_captured
from test_check import record_run
from test_distance_cli import _evidence

from tuneplan.executor import ledger
from tuneplan.executor.distance.record import record_measurement
from tuneplan.executor.ledger import distance_fit


def record_pair(db, root, cid: str, rank_share: float, hi: float, lora_drop: float, *, steps: int = 50):
    """A measurement and a LoRA-vs-full comparison of plans carrying it: full learns 0.5 nats,
    LoRA `lora_drop`."""
    ev = _evidence(rank_share, hi, f"dm-{cid}")
    record_measurement(db, ev, plan_model="tiny")
    for method, drop in (("full", 0.5), ("lora", lora_drop)):
        plan = make_plan(method, "tiny")
        plan = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={"distance": ev})})
        rid = f"{cid}-{method}"
        record_run(db, root, rid, method=method, plan=plan, eval_losses=(2.0, 2.0 - drop), steps=steps)
        ledger.record_comparison(db, cid, rid, method, "lora", "medium")
    return ev


# rank share (as asked of _evidence, which rounds it to whole ranks), high-loss share, LoRA's
# drop (full: 0.5): LoRA falls short from a rank share of about 0.04 on, below the documented
# far threshold of 0.05 - the refit should move it down.
PAIRS = [
    ("a", 0.01, 0.10, 0.49),  # matched
    ("b", 0.015, 0.20, 0.50),  # matched
    ("c", 0.02, 0.15, 0.495),  # matched
    ("d", 0.03, 0.20, 0.20),  # fell short
    ("e", 0.035, 0.25, 0.10),  # fell short
    ("f", 0.06, 0.50, 0.05),  # fell short
    ("g", 0.08, 0.30, 0.15),  # fell short
]


def test_calibrate_proposes_thresholds_that_separate_the_outcomes(tmp_path):
    db = tmp_path / "runs.duckdb"
    evs = [record_pair(db, tmp_path, cid, r, hi, drop) for cid, r, hi, drop in PAIRS]
    record_pair(db, tmp_path, "short", 0.2, 0.9, 0.0, steps=5)  # under the audit's 20 steps
    f = distance_fit.fit(db)
    assert (f.pairs, f.fell_short, f.matched, f.inconclusive, f.enough) == (7, 4, 3, 1, True)
    # today's verdicts say far only for f and g: d and e are missed
    assert [ev.measured for ev in evs].count("far") == 2 and f.verdict_agree == 5
    rank = next(s for s in f.signals if s.column == "mean_rank_90_share")
    assert (rank.current, rank.agree_current) == (0.05, 5)
    # the midpoint between the highest share that matched and the lowest that fell short (as
    # recorded: c and d); every pair right
    shares = [ev.rank.mean_rank_90_share for ev in evs]
    assert max(shares[:3]) < min(shares[3:])
    cut = (max(shares[:3]) + min(shares[3:])) / 2
    assert rank.proposed == pytest.approx(cut) and rank.agree_proposed == 7 and cut < 0.05
    assert rank.moderate_proposed == pytest.approx(cut / 2)
    score = next(s for s in f.signals if s.column == "score")
    assert score.agree_proposed >= score.agree_current and score.agree_proposed == 7
    pilot = next(s for s in f.signals if s.column == "pilot_share")
    assert pilot.proposed is None and pilot.cases == 0  # no measurement had a pilot

    code, out, err = cli_captured("calibrate", "--db", str(db))
    text = out + err
    assert "distance thresholds (docs/domain-distance.md defaults v1): 7 conclusive" in text
    assert "4 fell short" in text and "3 matched" in text and "1 under 20 steps not counted" in text
    assert f"update rank (mean rank90 share), far at >=: 0.05 -> {cut:g}" in text
    assert "agrees with 5/7 -> 7/7 pairs" in text
    assert "the recorded verdicts (far = falls short) agree with 5/7" in text
    assert "pilot share, far below 0.5: not enough data (0 pairs carry it)" in text
    assert "proposed, not applied" in text


def test_calibrate_says_not_enough_data(tmp_path):
    db = tmp_path / "runs.duckdb"
    for cid, r, hi, drop in PAIRS[:3]:  # three pairs, all matched
        record_pair(db, tmp_path, cid, r, hi, drop)
    f = distance_fit.fit(db)
    assert (f.pairs, f.enough) == (3, False)
    _, out, err = cli_captured("calibrate", "--db", str(db))
    assert "not enough data: the refit needs at least 6 conclusive pairs" in out + err
    assert "->" not in "\n".join(distance_fit.lines(f))


@pytest.mark.parametrize(
    "cases, current, direction, expected",
    [
        ([(0.1, False), (0.2, False), (0.4, True), (0.5, True)], 0.45, ">=", (0.3, 4)),
        # ties between equally good cuts go to the one nearest the current threshold
        ([(0.1, False), (0.9, True)], 0.45, ">=", (0.45, 2)),
        # pilot share: low share predicts falling short
        ([(0.2, True), (0.3, True), (0.7, False), (0.9, False)], 0.8, "<", (0.5, 4)),
    ],
)
def test_best_threshold(cases, current, direction, expected):
    t, agree = distance_fit.best_threshold(cases, current, direction)
    assert (round(t, 6), agree) == expected
