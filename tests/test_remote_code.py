"""A model directory's own Python runs only with an explicit --trust-remote-code on the command
line: never from the plan field, never in validate or --dry-run (the FSDP dry run reads the
model's config too). The model directory here ships configuration_evil.py and modeling_evil.py
that write a marker file when they are executed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.advisor.estimator import estimate
from tuneplan.cli.main import main as tuneplan_main
from tuneplan.schemas import Distributed, GPUHardware
from helpers import cli

GIB = 1024**3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("models"))


def evil_model(tiny: Path, root: Path) -> tuple[Path, Path]:
    """A copy of the tiny Llama whose config maps AutoConfig / AutoModelForCausalLM to Python
    files in the directory; importing either writes the marker. Returns (model dir, marker)."""
    model = root / "evil-model"
    shutil.copytree(tiny, model)
    marker = root / "REMOTE_CODE_RAN"
    (model / "configuration_evil.py").write_text(
        "from pathlib import Path\n"
        f"with open({str(marker)!r}, 'a') as f:\n    f.write('configuration\\n')\n"
        "from transformers import LlamaConfig\n\n\n"
        "class EvilConfig(LlamaConfig):\n    pass\n"
    )
    (model / "modeling_evil.py").write_text(
        "from pathlib import Path\n"
        f"with open({str(marker)!r}, 'a') as f:\n    f.write('modeling\\n')\n"
        "from transformers import LlamaForCausalLM\n"
        "from .configuration_evil import EvilConfig\n\n\n"
        "class EvilForCausalLM(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
    }
    (model / "config.json").write_text(json.dumps(cfg, indent=2))
    return model, marker


@pytest.fixture
def setup(tiny, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    model, marker = evil_model(tiny, tmp_path)
    data = write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    plan = make_plan(
        "lora", str(model), train_path=str(data), training={"max_steps": 1, "per_device_batch_size": 2}
    )
    plan = plan.model_copy(update={"trust_remote_code": True})  # the plan file asks for it
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json(indent=2))
    return tmp_path, model, marker, path


def _only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_plan_field_alone_never_runs_model_code(setup, capsys, monkeypatch):
    root, model, marker, plan_path = setup
    # validate: accepted, with a warning that the field has no effect
    assert tuneplan_main(["validate", str(plan_path)]) == 0
    assert "trust_remote_code is true, which has no effect" in capsys.readouterr().err
    # --dry-run, in-process (1 process) and the FSDP launcher path that reads the model config,
    # even with the flag: a dry run never allows it
    assert cli("run", str(plan_path), "--dry-run", "--trust-remote-code") == 0
    fsdp = make_plan("full", str(model), train_path=str(root / "train.jsonl"))
    fsdp.distributed = Distributed(num_processes=2, strategy="fsdp")
    fsdp.inputs.hardware = GPUHardware(name="NVIDIA H100 80GB", memory_bytes=80 * GIB, count=2)
    # the memory block priced for the device the plan now names (the pre-flight re-checks it)
    fsdp.memory = estimate(
        fsdp.inputs.model,
        fsdp.memory.settings,
        capacity_bytes=80 * GIB,
        device="cuda",
        headroom_fraction=fsdp.memory.headroom_fraction,
    )
    fsdp_path = root / "fsdp.json"
    fsdp_path.write_text(fsdp.model_copy(update={"trust_remote_code": True}).model_dump_json())
    assert cli("run", str(fsdp_path), "--dry-run") == 0
    assert cli("run", str(fsdp_path), "--dry-run", "--trust-remote-code") == 0
    out = capsys.readouterr().out
    assert "LlamaDecoderLayer" in out  # the config was read, without its Python
    assert not marker.exists()
    # a real run: the plan's field is ignored (warning), the run succeeds on the built-in class
    db = root / "runs.duckdb"
    assert cli("run", str(plan_path), "--db", str(db), "--output", str(root / "runs")) == 0
    err = capsys.readouterr().err
    assert "trust_remote_code: true" in err and "ignored" in err and "--trust-remote-code" in err
    assert not marker.exists()
    run_dir = _only_run_dir(root / "runs")
    assert json.loads((run_dir / "result.json").read_text())["trust_remote_code"] is False
    assert json.loads((run_dir / "plan.json").read_text())["trust_remote_code"] is False
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT trust_remote_code FROM runs").fetchall() == [(False,)]
    con.close()
    # merge without the flag: the run's plan.json cannot turn it on either
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    assert cli("merge", str(run_dir), "--out", str(root / "merged")) == 0
    assert seen == [False] and not marker.exists()
    assert (root / "merged" / "config.json").is_file()


def test_flag_allows_it_loudly_and_is_recorded(setup, capsys):
    root, model, marker, plan_path = setup
    plan = json.loads(plan_path.read_text())
    plan["trust_remote_code"] = False  # the flag alone, whatever the plan says
    plan_path.write_text(json.dumps(plan))
    db = root / "runs.duckdb"
    assert (
        cli("run", str(plan_path), "--db", str(db), "--output", str(root / "runs"), "--trust-remote-code")
        == 0
    )
    err = capsys.readouterr().err
    assert "WARNING: --trust-remote-code" in err and "WILL RUN" in err and str(model) in err
    assert marker.exists() and "modeling" in marker.read_text()  # it really ran
    run_dir = _only_run_dir(root / "runs")
    assert json.loads((run_dir / "result.json").read_text())["trust_remote_code"] is True
    assert json.loads((run_dir / "plan.json").read_text())["trust_remote_code"] is True
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT trust_remote_code FROM runs").fetchall() == [(True,)]
    con.close()


def test_compare_passes_the_flag_only_from_the_command_line(setup):
    from tuneplan.executor.compare import run_comparison

    root, _, _, plan_path = setup
    calls = []

    def runner(plan_path, **kwargs):
        calls.append(kwargs.get("trust_remote_code", False))
        raise RuntimeError("stop here")

    for flag in (False, True):
        run_comparison(
            str(plan_path),
            ["lora"],
            output_dir=str(root / f"cmp-{flag}"),
            db=str(root / "c.duckdb"),
            runner=runner,
            trust_remote_code=flag,
        )
    assert calls == [False, True]
