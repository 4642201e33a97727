"""Table-driven rule cases: tests/rules/<RULE_ID>.yaml, each rule both ways.

A case gives advisor inputs (as the CLI would), whether the rule fires, and optional expectations
on the resulting plan (dotted paths), on warnings and on the rule's message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuneplan.advisor import RULES, advise, run_rules
from tuneplan.advisor.inputs import Answers, build_inputs

CASES_DIR = Path(__file__).parent / "rules"
ANSWER_KEYS = {"model", "params", "gpu", "gpu_memory", "cpu", "gpus", "nodes"}
DATA_KEYS = {"data", "eval_data"}  # paths relative to the repository root
TASK_KEYS = {
    "domain_distance",
    "forgetting_tolerance",
    "domain_label",
    "regime",
    "seq_len",
    "batch_size",
    "dataset_tokens",
    "needs_fresh_facts",
}
PIN_KEYS = {
    "method",
    "lora_rank",
    "lora_alpha",
    "target_modules",
    "precision",
    "gradient_checkpointing",
    "optimizer",
    "attention",
    "learning_rate",
    "max_steps",
    "lora_dropout",
    "kbit_upcast",
    "activation_offload",
    "loss_chunk_size",
}
ALIASES = {"domain": "domain_distance", "forgetting": "forgetting_tolerance"}
CALIBRATION_KEY = "calibration"  # factors as `tuneplan calibrate` writes them (advise --calibrated)


def answers_from(case_input: dict) -> Answers:
    """Build Answers from a YAML case's `input` mapping (CLI-like keys)."""
    a = Answers()
    for key, value in case_input.items():
        key = ALIASES.get(key, key)
        if key == CALIBRATION_KEY:
            continue  # not an answer: passed to run_rules/advise (calibration_from)
        if key in ANSWER_KEYS:
            setattr(a, key, value)
        elif key in DATA_KEYS:
            setattr(a, key, str(Path(__file__).resolve().parents[1] / value))
        elif key in TASK_KEYS:
            a.task[key] = value
        elif key in PIN_KEYS:
            a.pins[key] = value
        else:
            raise KeyError(f"unknown case input key {key!r}")
    return a


def calibration_from(case_input: dict) -> dict[str, float] | None:
    """The case's calibration factors (component -> multiplier), or None."""
    return case_input.get(CALIBRATION_KEY)


def dig(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def load_cases():
    out = []
    for path in sorted(CASES_DIR.glob("TP*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for case in doc["cases"]:
            out.append(pytest.param(doc["rule"], case, id=f"{doc['rule']}-{case['name']}"))
    return out


@pytest.mark.parametrize("rule_id,case", load_cases())
def test_rule_case(rule_id: str, case: dict) -> None:
    inputs = build_inputs(answers_from(case["input"]))
    calibration = calibration_from(case["input"])
    _, decisions = run_rules(inputs, calibration=calibration)
    fired = {d.rule: d for d in decisions}
    assert (rule_id in fired) == case["fires"], (
        f"{rule_id} {'did not fire' if case['fires'] else 'fired'}; fired: {list(fired)}"
    )
    if "message_contains" in case:
        assert case["message_contains"] in fired[rule_id].message
    if "expect" in case or "warns" in case or "no_warning" in case:
        plan = advise(inputs, calibration=calibration).model_dump(mode="json")
        for path, want in case.get("expect", {}).items():
            got = dig(plan, path)
            if isinstance(want, float):
                assert got == pytest.approx(want), path
            else:
                assert got == want, f"{path}: {got!r} != {want!r}"
        for text in [case["warns"]] if isinstance(case.get("warns"), str) else case.get("warns", []):
            assert any(text in w for w in plan["warnings"]), (
                f"no warning containing {text!r}: {plan['warnings']}"
            )
        if "no_warning" in case:
            assert not any(case["no_warning"] in w for w in plan["warnings"])


def test_every_rule_has_cases_both_ways() -> None:
    """Conditional rules: a case where they fire and one where they don't. Rules that always fire
    (they set a value every plan needs) declare it and show contrasting outcomes."""
    for r in RULES:
        path = CASES_DIR / f"{r.id}.yaml"
        assert path.exists(), f"missing {path}"
        doc = yaml.safe_load(path.read_text())
        assert doc["rule"] == r.id and doc["name"] == r.name
        fires = [c["fires"] for c in doc["cases"]]
        if doc.get("always_fires"):
            assert all(fires) and len(fires) >= 2
            outcomes = {
                repr(sorted(c.get("expect", {}).items())) + c.get("message_contains", "")
                for c in doc["cases"]
            }
            assert len(outcomes) >= 2, f"{r.id}: cases must show different outcomes"
        else:
            assert True in fires and False in fires, f"{r.id} needs cases both ways"


def test_rule_docstrings_and_registry() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids)), "duplicate rule ids"
    assert ids == sorted(ids), "registry order follows ids"
    for r in RULES:
        doc = r.doc
        for part in ("Why:", "When not:", "Source:"):
            assert part in doc, f"{r.id} docstring lacks {part}"
        assert r.source and r.name == r.name.lower()


def test_explain_tp050_prints_the_calibration_rule() -> None:
    """The calibration decision is a registered rule (it was hand-appended by the engine once)."""
    import subprocess
    import sys

    tuneplan = Path(sys.executable).with_name("tuneplan")  # the installed entry point
    r = subprocess.run([str(tuneplan), "explain", "TP050"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("TP050 calibrated-estimate")
    assert "Why:" in r.stdout and "When not:" in r.stdout and "tuneplan calibrate" in r.stdout


@pytest.mark.parametrize(
    "case_input",
    [
        {"model": "Llama-3.1-8B", "gpu": "A100-80GB", "domain": "near", "forgetting": "medium"},
        {"model": "Llama-3.1-70B", "gpu": "H100-80GB", "gpus": 8, "domain": "far", "forgetting": "high"},
        {
            "model": "Llama-3.1-8B",
            "gpu": "RTX4060Ti-16GB",
            "domain": "near",
            "forgetting": "medium",
            "seq_len": 131072,
            "batch_size": 1,
        },  # TP031: shorter sequences
        {"model": "Llama-3.1-405B", "gpu": "RTX-4090", "domain": "near", "forgetting": "medium"},  # TP032
    ],
)
def test_plan_memory_is_the_fit_the_memory_rule_chose(case_input: dict) -> None:
    """The Draft carries the fit TP030/TP031/TP032 found; the plan states that estimate, and the
    rule's message quotes the same bytes."""
    from tuneplan.advisor.rules._base import gib

    inputs = build_inputs(answers_from(case_input))
    d, decisions = run_rules(inputs)
    assert d.fit is not None and d.fit.estimate.method == d.method
    plan = advise(inputs)
    assert plan.memory == d.fit.estimate
    memory_rule = next(x for x in decisions if x.rule in ("TP030", "TP031", "TP032"))
    assert gib(plan.memory.per_device_bytes) in memory_rule.message
    assert plan.training.per_device_batch_size == d.fit.micro_batch
    assert plan.training.gradient_checkpointing == d.fit.gradient_checkpointing
