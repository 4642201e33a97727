"""`tuneplan advise / validate / explain / models / gpus / schema` as a user runs them."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import tuneplan


def tp(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return tuneplan(*args, cwd=cwd)


BASE = [
    "advise",
    "--model",
    "Llama-3.1-8B",
    "--gpu",
    "A100-80GB",
    "--domain",
    "near",
    "--forgetting",
    "medium",
]


def test_advise_json_is_the_plan_alone(tmp_path) -> None:
    r = tp(*BASE, "--json", "-o", str(tmp_path / "plan.json"))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["method"] == "lora" and plan["feasible"] is True
    assert json.loads((tmp_path / "plan.json").read_text()) == plan
    for key in (
        "schema_version",
        "tuneplan_version",
        "training",
        "lora",
        "quantization",
        "memory",
        "alternatives",
        "distributed",
        "decisions",
        "warnings",
        "inputs",
        "data",
    ):
        assert key in plan
    assert {a["method"] for a in plan["alternatives"]} == {"full", "qlora"}
    for comp in (
        "weights",
        "quantization_constants",
        "adapter_weights",
        "gradients",
        "optimizer_states",
        "activations",
        "logits_and_loss",
        "framework_overhead",
    ):
        assert comp in plan["memory"]["breakdown"]
    assert all(d["source"] for d in plan["decisions"])
    v = tp("validate", str(tmp_path / "plan.json"))
    assert v.returncode == 0 and "valid plan" in v.stdout


def test_advise_for_people_shows_all_three_methods_with_bars() -> None:
    r = tp(*BASE)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for word in ("Full FT", "LoRA", "QLoRA", "Rules that fired", "TP023", "█"):
        assert word in out
    assert "Method: LoRA" in out


def test_infeasible_exit_3_still_writes_plan(tmp_path) -> None:
    r = tp(
        "advise",
        "--model",
        "Llama-3.1-405B",
        "--gpu",
        "T4",
        "--domain",
        "near",
        "--forgetting",
        "medium",
        "-o",
        str(tmp_path / "p.json"),
    )
    assert r.returncode == 3, r.stderr
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["feasible"] is False and plan["ways_out"]
    assert "Ways out" in r.stdout


def test_bad_input_lists_every_problem_with_flags() -> None:
    r = tp(
        "advise",
        "--model",
        "llama-3.1-8",
        "--gpu",
        "A100-90GB",
        "--domain",
        "near",
        "--forgetting",
        "medium",
        "--seq-len",
        "5",
        "--lora-rank",
        "0",
        "--json",
    )
    assert r.returncode == 2
    assert r.stdout == ""
    err = r.stderr
    for flag in ("--model", "--gpu", "--seq-len", "--lora-rank"):
        assert flag in err, err
    assert "Llama-3.1-8B" in err  # closest name suggested
    assert "fix:" in err


def test_missing_required_task_fields_named() -> None:
    r = tp("advise", "--model", "gpt2", "--cpu")
    assert r.returncode == 2
    assert "--domain" in r.stderr and "--forgetting" in r.stderr


def test_argparse_errors_exit_2() -> None:
    r = tp("advise", "--domain", "nearby")
    assert r.returncode == 2 and "--domain" in r.stderr


def test_pins_stay_with_warning() -> None:
    r = tp(*BASE, "--method", "full", "--json")
    plan = json.loads(r.stdout)
    assert plan["method"] == "full" and plan["lora"] is None
    assert any("--method full pinned" in w for w in plan["warnings"])


def test_explain_and_rules() -> None:
    r = tp("explain", "tp020")
    assert r.returncode == 0
    assert "Why:" in r.stdout and "When not:" in r.stdout and "Biderman" in r.stdout
    bad = tp("explain", "TP999")
    assert bad.returncode == 2 and "TP020" in bad.stderr
    listing = tp("rules")
    assert "TP001" in listing.stdout and "TP047" in listing.stdout


def test_validate_reports_json_paths(tmp_path) -> None:
    good = json.loads(tp(*BASE, "--json").stdout)
    good["training"]["learning_rate"] = -1
    good["method"] = "prefix-tuning"
    good["surprise"] = 1
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(good))
    r = tp("validate", str(p))
    assert r.returncode == 2
    for path in ("training.learning_rate", "method", "surprise"):
        assert path in r.stderr
    (tmp_path / "broken.json").write_text("{not json")
    r = tp("validate", str(tmp_path / "broken.json"))
    assert r.returncode == 2 and "broken.json:1" in r.stderr
    r = tp("validate", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_models_gpus_schema() -> None:
    m = tp("models", "--json")
    names = {x["name"] for x in json.loads(m.stdout)}
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in names and len(names) >= 31
    g = tp("gpus")
    assert "H100" in g.stdout and "T4" in g.stdout
    s = tp("schema")
    assert json.loads(s.stdout)["title"] == "Plan"


@pytest.mark.parametrize("flags", [["--cpu"], ["--gpu-memory", "24"], ["--params", "7B", "--gpu", "L4"]])
def test_hardware_and_model_variants(flags) -> None:
    base = ["advise", "--domain", "near", "--forgetting", "low", "--json", "--seq-len", "512"]
    if "--params" not in flags:
        base += ["--model", "SmolLM2-135M-Instruct"]
    r = tp(*base, *flags)
    assert r.returncode in (0, 3), r.stderr
    assert json.loads(r.stdout)["inputs"]["hardware"]["kind"] in ("cpu", "gpu")


def test_bad_choices_reported_with_every_other_problem() -> None:
    """A misspelt choice does not stop validation at the first flag: all problems come at once."""
    r = tp(
        "advise",
        "--model",
        "qwen-7",
        "--gpu-memory",
        "-3",
        "--domain",
        "far",
        "--forgetting",
        "sometimes",
        "--method",
        "adapter",
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "4 problems" in r.stderr
    for flag in ("--model", "--gpu-memory", "--forgetting", "--method"):
        assert flag in r.stderr
    assert "'low', 'medium' or 'high'" in r.stderr and "Qwen/Qwen2.5-7B" in r.stderr
