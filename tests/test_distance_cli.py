"""`tuneplan measure` and `tuneplan advise --measure-distance` end to end on a tiny Llama built
from a config (no download): the plan's evidence, the disagreement warning, the DuckDB row, the
input errors."""

from __future__ import annotations

import json

import duckdb
import pytest

from exec_fixtures import tiny_llama_dir, write_jsonl
from helpers import cli_captured

pytest.importorskip("transformers")

FAST = ["--tokens-per-batch", "8", "--micro-batches", "2", "--depths", "1", "--measure-seq-len", "64"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    model = tiny_llama_dir(root)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"convert the date {m} 5"},
                {"role": "assistant", "content": f"2021-{i + 1:02d}-05"},
            ]
        }
        for i, m in enumerate(["January", "February", "March", "April", "May", "June", "July", "August"])
    ]
    return model, write_jsonl(root / "train.jsonl", rows), root


def _rows(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT measure_id, source, declared, verdict, plan_hash, plan_model "
            "FROM distance_measurements ORDER BY measured_at"
        ).fetchall()
    finally:
        con.close()


def test_advise_measure_distance_sets_the_distance_and_records_it(setup, tmp_path):
    from tuneplan.base.planio import plan_hash, read_plan

    model, data, _ = setup
    db, out = tmp_path / "runs.duckdb", tmp_path / "plan.json"
    code, stdout, err = cli_captured(
        "advise",
        "--model",
        str(model),
        "--cpu",
        "--forgetting",
        "medium",
        "--data",
        str(data),
        "--measure-distance",
        *FAST,
        "--db",
        str(db),
        "-o",
        str(out),
        "--json",
    )
    assert code == 0, err
    plan = json.loads(out.read_text())
    ev = plan["inputs"]["distance"]
    assert ev["source"] == "measured" and ev["declared"] is None and ev["proxy"] is False
    assert plan["inputs"]["task"]["domain_distance"] == ev["measured"]
    assert ev["rank"]["micro_batches"] == 2 and ev["rank"]["tokens_per_batch"] == 8
    assert ev["rank"]["lora_rank"] == (plan["lora"]["rank"] if plan["lora"] else 16)
    assert len(ev["rank"]["layers"]) == 7 and ev["fit"]["target_tokens"] >= 16
    [(mid, source, declared, verdict, ph, plan_model)] = _rows(db)
    assert (mid, source, declared, verdict) == (ev["measure_id"], "measured", None, ev["measured"])
    assert ph == plan_hash(read_plan(out).plan)
    assert plan_model == plan["inputs"]["model"]["name"]


def test_a_declared_domain_is_kept_and_a_disagreement_warned(setup, tmp_path):
    model, data, _ = setup
    out = tmp_path / "plan.json"
    code, _, err = cli_captured(
        "advise",
        "--model",
        str(model),
        "--cpu",
        "--forgetting",
        "medium",
        "--domain",
        "far",
        "--data",
        str(data),
        "--measure-distance",
        *FAST,
        "--db",
        str(tmp_path / "r.duckdb"),
        "-o",
        str(out),
        "--json",
    )
    assert code == 0, err
    plan = json.loads(out.read_text())
    ev = plan["inputs"]["distance"]
    assert plan["inputs"]["task"]["domain_distance"] == "far"
    assert ev["source"] == "declared" and ev["declared"] == "far"
    warned = [w for w in plan["warnings"] if w.startswith("--domain far was declared")]
    assert bool(warned) == (ev["measured"] != "far")
    code, text, err = cli_captured(
        "advise",
        "--model",
        str(model),
        "--cpu",
        "--forgetting",
        "medium",
        "--data",
        str(data),
        "--measure-distance",
        *FAST,
        "--no-record",
    )
    assert code == 0, err
    assert "domain distance:" in text and "update rank:" in text


def test_measure_prints_and_records_and_the_json_validates(setup, tmp_path):
    from tuneplan.schemas import DistanceEvidence

    model, data, _ = setup
    db = tmp_path / "m.duckdb"
    code, out, err = cli_captured(
        "measure", "--model", str(model), "--data", str(data), *FAST, "--db", str(db), "--json"
    )
    assert code == 0, err
    ev = DistanceEvidence.model_validate(json.loads(out))
    assert ev.data == str(data) and ev.rank.lora_rank == 16
    [(mid, source, _declared, verdict, ph, _pm)] = _rows(db)
    assert (mid, source, verdict, ph) == (ev.measure_id, "measured", ev.measured, None)
    code, text, err = cli_captured(
        "measure", "--model", str(model), "--data", str(data), *FAST, "--no-record"
    )
    assert code == 0 and "domain distance:" in text and "update rank:" in text and "fit:" in text


def test_measure_and_advise_input_errors_exit_2(setup, tmp_path, monkeypatch):
    model, data, root = setup
    code, _, err = cli_captured(
        "advise", "--model", str(model), "--cpu", "--forgetting", "medium", "--measure-distance"
    )
    assert code == 2 and "--measure-distance" in err and "--data" in err
    code, _, err = cli_captured("measure", "--model", str(model))
    assert code == 2 and "--reference" in err
    code, _, err = cli_captured("measure", "--model", str(model), "--reference", "poetry", "--no-record")
    assert code == 2 and "--reference" in err and "date" in err
    code, _, err = cli_captured("measure", "--model", str(model), "--data", str(data), "--micro-batches", "0")
    assert code == 2 and "--micro-batches" in err
    # a proxy of another family is refused
    other = root / "not-llama"
    other.mkdir(exist_ok=True)
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    code, _, err = cli_captured(
        "advise",
        "--model",
        str(model),
        "--cpu",
        "--forgetting",
        "medium",
        "--data",
        str(data),
        "--measure-distance",
        "--proxy-model",
        str(other),
        *FAST,
    )
    assert code == 2 and "--proxy-model" in err and "same family" in err


def test_a_proxy_of_the_same_family_is_used_and_said(setup, tmp_path):
    model, data, _ = setup
    out = tmp_path / "plan.json"
    code, _, err = cli_captured(
        "advise",
        "--model",
        str(model),
        "--cpu",
        "--forgetting",
        "medium",
        "--data",
        str(data),
        "--measure-distance",
        "--proxy-model",
        str(model),
        *FAST,
        "--db",
        str(tmp_path / "r.duckdb"),
        "-o",
        str(out),
        "--json",
    )
    assert code == 0, err
    plan = json.loads(out.read_text())
    assert plan["inputs"]["distance"]["proxy"] is True
    assert any("measured on the proxy" in w for w in plan["warnings"])


def _evidence(verdict_rank_share: float, hi: float, measure_id: str):
    from tuneplan.executor.distance.evidence import to_evidence
    from tuneplan.executor.distance.measure import LayerSpectrum, Measurement

    layer = LayerSpectrum(
        "model.layers.0.mlp.down_proj",
        "mlp",
        0,
        100,
        100,
        [1.0] * round(verdict_rank_share * 100 / 0.9 + 0.5) + [0.0] * 10,
    )
    m = Measurement(
        model="tiny",
        model_dir="/x",
        device="cpu",
        load="fp32",
        rows=8,
        target_tokens=64,
        micro_batches=2,
        tokens_per_batch=32,
        seq_len=64,
        target_loss=1.0,
        probe_loss=2.0,
        high_loss_share=hi,
        layers=[layer],
    )
    return to_evidence(
        m, data_label="train.jsonl", declared=None, proxy=False, lora_rank=8, measure_id=measure_id
    )


def test_check_rules_audits_the_measured_distance_against_comparisons(tmp_path):
    """A measured-far pair where LoRA fell short holds; a measured-near pair where it fell short breaks."""
    from test_check import record_run

    from exec_fixtures import make_plan
    from tuneplan.executor import ledger
    from tuneplan.executor.distance.record import record_measurement
    from tuneplan.executor.ledger import check

    db = tmp_path / "runs.duckdb"
    far, near = _evidence(0.2, 0.6, "dm-far"), _evidence(0.01, 0.1, "dm-near")
    assert (far.measured, near.measured) == ("far", "near")
    for cid, ev in (("c-far", far), ("c-near", near)):
        record_measurement(db, ev, plan_model="tiny")
        for method, losses in (("full", (2.0, 1.5)), ("lora", (2.0, 1.9))):
            plan = make_plan(method, "tiny")
            plan = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={"distance": ev})})
            rid = f"{cid}-{method}"
            record_run(db, tmp_path, rid, method=method, plan=plan, eval_losses=losses, measured=None)
            ledger.record_comparison(db, cid, rid, method, "lora", "medium")
    d = check.audit_distance(db)
    assert (d["tested"], d["held"], d["broken"], d["status"]) == (2, 1, 1, "mixed")
    assert any("c-far: measured far" in e and e.endswith("held") for e in d["evidence"])
    assert any("c-near: measured near" in e and e.endswith("broken") for e in d["evidence"])
    code, out, err = cli_captured("check", "--db", str(db), "--rules")
    assert code == 0, err
    assert "distance mixed" in out and "1/2 held" in out
    code, out, _ = cli_captured("check", "--db", str(db), "--rules", "--json")
    assert json.loads(out)["distance"]["status"] == "mixed"
