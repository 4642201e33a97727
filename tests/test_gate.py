"""`tuneplan check --strict`, the CI gate: it cannot pass on no evidence. Zero runs, a failed
run, NaN/inf losses (in the result or in metrics), a broken verdict and (with --rules) a broken
audit each exit 1 with the reason on stderr; audits count a comparison pair only with the
minimum steps and outside the noise band (inconclusive otherwise); --run/--plan/--since."""

from __future__ import annotations

import json

import pytest

from test_check import record_run
from tuneplan.executor import ledger as store
from tuneplan.executor.ledger import check
from helpers import cli


def strict(db, *extra) -> tuple[int, str]:
    import io
    import sys

    err = io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        code = cli("check", "--db", str(db), "--strict", "--json", *extra)
    finally:
        sys.stderr = old
    return code, err.getvalue()


def test_empty_database_fails_the_gate(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    store.connect(db).close()
    code, err = strict(db)
    assert code == 1 and "no runs to judge" in err
    assert cli("check", "--db", str(db)) == 0  # without --strict it only reports


def test_healthy_run_passes(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    record_run(db, tmp_path / "runs", "ok1")
    code, err = strict(db)
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (
            dict(
                status="failed",
                measured=None,
                eval_losses=None,
                probe_losses=None,
                error="RuntimeError: boom",
            ),
            "is failed, not succeeded",
        ),
        (dict(status="interrupted"), "is interrupted, not succeeded"),
        (dict(eval_losses=(2.0, float("nan"))), "non-finite loss (NaN or inf): eval_loss_after"),
        (dict(probe_losses=(3.0, float("inf"))), "forgetting_loss_after"),
        (dict(eval_losses=(float("-inf"), 1.0)), "eval_loss_before"),
        (dict(metrics=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": float("nan")}]), "1 metrics row(s)"),
        (dict(measured=1400), "under-predicted"),
    ],
)
def test_each_failure_fails_the_gate(tmp_path, kwargs, fragment):
    db = tmp_path / "runs.duckdb"
    record_run(db, tmp_path / "runs", "good")
    record_run(db, tmp_path / "runs", "bad", **kwargs)
    code, err = strict(db)
    assert code == 1 and fragment in err and "run bad" in err and "run good" not in err
    # filtered to the good run, the gate passes
    assert strict(db, "--run", "goo")[0] == 0


def test_non_finite_is_shown_in_the_verdict(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    record_run(db, tmp_path / "runs", "nan", eval_losses=(2.0, float("nan")))
    (run,) = check.check_runs(db)["runs"]
    assert run["verdict"] == "broken" and run["non_finite"] == ["eval_loss_after"]


def _comparison(db, root, cid, steps, full_probe, lora_probe):
    for method, probe in (("full", full_probe), ("lora", lora_probe)):
        rid = f"{cid}-{method}"
        record_run(
            db,
            root,
            rid,
            method=method,
            steps=steps,
            probe_losses=(3.0, probe),
            tolerance="high",
            predicted=2000,
            measured=1900,
        )
        store.record_comparison(db, cid, rid, method, "lora", "high")


def test_broken_audit_fails_with_rules_and_short_runs_are_inconclusive(tmp_path):
    db = tmp_path / "runs.duckdb"
    root = tmp_path / "runs"
    _comparison(db, root, "short", 5, 3.10, 3.40)  # LoRA forgot more, but only 5 steps
    rules = {r["rule"]: r for r in check.audit_rules(db)}
    tp021 = rules["TP021"]
    assert tp021["status"] == "inconclusive" and tp021["inconclusive"] == 1
    assert tp021["min_steps"] == check.MIN_AUDIT_STEPS and tp021["noise_band_nats"] == 0.02
    assert "ran 5 steps (minimum 20)" in tp021["evidence"][0]
    assert strict(db, "--rules")[0] == 0
    _comparison(db, root, "noise", 50, 3.10, 3.11)  # inside the noise band
    tp021 = {r["rule"]: r for r in check.audit_rules(db)}["TP021"]
    assert tp021["status"] == "inconclusive" and any("noise band" in e for e in tp021["evidence"])
    _comparison(db, root, "real", 50, 3.10, 3.40)  # enough steps, well outside the band
    tp021 = {r["rule"]: r for r in check.audit_rules(db)}["TP021"]
    assert (tp021["status"], tp021["tested"], tp021["broken"]) == ("broken", 1, 1)
    code, err = strict(db, "--rules")
    assert code == 1 and "rule TP021 audit is broken" in err
    assert strict(db)[0] == 0  # without --rules the runs themselves held
    # a wider band makes it inconclusive again
    rules = {r["rule"]: r for r in check.audit_rules(db, noise_band=0.5)}
    assert rules["TP021"]["status"] == "inconclusive"


def test_filters(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    root = tmp_path / "runs"
    record_run(
        db,
        root,
        "a-old",
        started_at="2025-01-01T10:00:00Z",
        status="failed",
        measured=None,
        error="RuntimeError: x",
    )
    record_run(db, root, "b-new", started_at="2025-03-01T10:00:00Z", plan_hash="ab" * 8)
    assert strict(db)[0] == 1
    assert strict(db, "--since", "2025-02-01")[0] == 0
    assert strict(db, "--since", "2025-02-01T00:00:00+02:00")[0] == 0
    assert strict(db, "--plan", "ab" * 8)[0] == 0
    assert strict(db, "--plan", "cd" * 8)[0] == 1  # matched nothing: no evidence
    assert strict(db, "--run", "a-", "--run", "b-")[0] == 1
    capsys.readouterr()
    code = cli("check", "--db", str(db), "--run", "b-", "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["run_id"] for r in out["runs"]] == ["b-new"]
    # a plan file is matched by its hash
    plan_file = root / "b-new" / "plan.json"
    code, _ = strict(db, "--plan", str(plan_file))
    assert code == 1  # its real hash is not "abab...", so no run matched
    assert cli("check", "--db", str(db), "--since", "yesterday") == 2
    assert "--since" in capsys.readouterr().err
    assert cli("check", "--db", str(db), "--plan", "nope") == 2
    assert "--plan" in capsys.readouterr().err
