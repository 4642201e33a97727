"""tuneplan calibrate: factors fitted from hand-made runs reduce the memory error, land in
calibration.json in the advisor's format, and `tuneplan advise --calibrated` uses them."""

from __future__ import annotations

import json

import pytest

from exec_fixtures import make_plan
from test_check import record_run
from tuneplan.advisor.calibration import load_factors
from tuneplan.cli.main import main as tuneplan_main
from tuneplan.executor import ledger as store
from tuneplan.executor.ledger import calibrate
from tuneplan.executor.compare import build_variants
from tuneplan.schemas import load_plan_dict
from helpers import cli

ADVISE = [
    "advise",
    "--model",
    "meta-llama/Llama-3.2-1B",
    "--gpu",
    "A100-80GB",
    "--domain",
    "near",
    "--forgetting",
    "low",
    "--seq-len",
    "512",
    "--json",
]


def advise_json(capsys, *extra: str) -> dict:
    capsys.readouterr()
    code = tuneplan_main(ADVISE + list(extra))
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def parts(plan):
    b = plan.memory.breakdown
    states = b.weights + b.quantization_constants + b.adapter_weights + b.gradients + b.optimizer_states
    return states, b.activations + b.logits_and_loss


@pytest.fixture
def runs_db(tmp_path, capsys):
    """Runs of the advised LoRA plan and its full/QLoRA variants on CUDA whose measured peaks are
    model states + `scale` x the activation-like terms (scale about 0.5)."""
    base = load_plan_dict(advise_json(capsys))
    _, variants = build_variants(base, ["full", "lora", "qlora"])
    db = tmp_path / "cal" / "runs.duckdb"
    for method, plan in variants.items():
        states, act = parts(plan)
        for j, scale in enumerate((0.5, 0.52)):
            record_run(
                db,
                tmp_path / "runs",
                f"{method}-{j}",
                method=method,
                plan=plan,
                predicted=plan.memory.per_device_bytes,
                measured=int(states + scale * act),
                device="cuda",
            )
    # runs that cannot be used are skipped with a reason
    record_run(db, tmp_path / "runs", "failed", status="failed", measured=None, error="x")
    hand = make_plan("lora", "tiny")  # hand-made plan whose memory settings cannot be re-estimated
    hand = hand.model_copy(
        update={
            "memory": hand.memory.model_copy(
                update={"settings": hand.memory.settings.model_copy(update={"lora_rank": None})}
            )
        }
    )
    record_run(db, tmp_path / "runs", "cpu-no-acts", device="cpu", plan=hand)
    return db


def test_fit_reduces_error_and_writes_calibration_json(runs_db, capsys):
    assert cli("calibrate", "--db", str(runs_db)) == 0
    out = capsys.readouterr().out
    assert "before" in out and "after" in out
    data = json.loads((runs_db.parent / "calibration.json").read_text())
    factors = data["factors"]["cuda|llama"]
    assert set(factors) == {"activations", "logits_and_loss"}
    assert 0.45 < factors["activations"] < 0.55 and factors["activations"] == factors["logits_and_loss"]
    meta = data["keys"]["cuda|llama"]
    assert meta["runs"] == data["runs_used"] == 6
    assert meta["mean_abs_error_after"] < meta["mean_abs_error_before"] / 5
    assert data["mean_abs_error_after"] < data["mean_abs_error_before"]
    assert data["fitted_at"] and {s["run_id"] for s in data["skipped"]} == {"cpu-no-acts"}
    assert f"{data['mean_abs_error_before']:.1%}" in out and f"{data['mean_abs_error_after']:.1%}" in out


def test_advise_calibrated_uses_the_factors(runs_db, capsys):
    assert cli("calibrate", "--db", str(runs_db)) == 0
    plain = advise_json(capsys)
    cal = advise_json(capsys, "--calibrated", "--db", str(runs_db))
    assert "TP050" not in [d["rule"] for d in plain["decisions"]]
    tp050 = [d for d in cal["decisions"] if d["rule"] == "TP050"]
    assert tp050 and tp050[0]["name"] == "calibrated-estimate"
    assert cal["inputs"]["calibrated"] is True
    assert cal["memory"]["per_device_bytes"] < plain["memory"]["per_device_bytes"]
    assert cal["memory"]["breakdown"]["activations"] < plain["memory"]["breakdown"]["activations"]
    assert cal["memory"]["breakdown"]["weights"] == plain["memory"]["breakdown"]["weights"]
    assert cal["memory"]["calibration_factor"] < 1
    plan = load_plan_dict(plain)
    assert load_factors(str(runs_db), plan.inputs)["activations"] == pytest.approx(
        json.loads((runs_db.parent / "calibration.json").read_text())["factors"]["cuda|llama"]["activations"]
    )


def test_weighted_median_fit_never_worse_than_uncalibrated():
    class S:
        def __init__(self, measured, states, act):
            self.measured, self.states, self.act = measured, states, act

    samples = [S(1000, 400, 1000), S(2000, 500, 1000), S(1500, 600, 2000), S(900, 850, 300)]

    def err(f):
        return sum(abs(s.states + f * s.act - s.measured) / s.measured for s in samples)

    f = calibrate.fit_factor(samples)
    assert err(f) <= err(1.0)
    assert all(err(f) <= err(f + d) + 1e-12 for d in (-0.05, -0.01, 0.01, 0.05))
    assert calibrate.fit_factor([S(100, 200, 50)]) == 0.0  # clamped: factors must be >= 0


def test_calibrate_without_runs_or_db(tmp_path, capsys):
    assert cli("calibrate", "--db", str(tmp_path / "missing.duckdb")) == 2
    empty = tmp_path / "empty.duckdb"
    store.connect(empty).close()
    assert cli("calibrate", "--db", str(empty)) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "calibration.json").exists()


def test_cpu_runtime_bytes_are_taken_out_of_the_measurement(tmp_path, capsys):
    """CPU peaks include the process runtime (MeasuredMemory.runtime_bytes); the fit compares
    tensor bytes with tensor bytes, so the factor is what the activations scale by, unbiased."""
    base = load_plan_dict(advise_json(capsys))
    est = calibrate._estimate(base, "cpu")
    states = sum(getattr(est.breakdown, t) for t in calibrate.STATE_TERMS)
    act = sum(getattr(est.breakdown, t) for t in calibrate.ACTIVATION_TERMS)
    runtime = int(0.2 * act)  # large enough that leaving it in would move the factor to ~0.7
    db = tmp_path / "cal" / "runs.duckdb"
    for j, scale in enumerate((0.5, 0.52)):
        record_run(
            db,
            tmp_path / "runs",
            f"cpu-{j}",
            method=base.method,
            plan=base,
            predicted=base.memory.per_device_bytes,
            device="cpu",
            measured=int(states + scale * act) + runtime,
            runtime=runtime,
        )
    result = calibrate.fit(db)
    assert list(result.keys) == ["cpu|llama"] and not result.skipped
    assert 0.49 < result.keys["cpu|llama"].factors["activations"] < 0.53
    assert result.keys["cpu|llama"].mean_abs_error_after < 0.02
