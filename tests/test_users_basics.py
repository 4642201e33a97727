"""Small things users look for (issue 13): --version, quiet broken pipes, plans that mean the same
on another machine (portable model names and adapters, pinned --cpu hardware), and a 1-process
dry run that shows the command that really runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TUNEPLAN
from tuneplan.cli.main import main
from tuneplan.executor.portable import make_portable

ADVISE = ["advise", "--domain", "near", "--forgetting", "medium", "--json"]
TINY_CFG = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 4096,
}


def _plan(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main([*ADVISE, *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_version_prints_the_installed_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tuneplan {version('tuneplan')}"


@pytest.mark.parametrize("argv", [["models"], ["gpus", "--json"], ["rules"]])
def test_broken_pipe_ends_quietly(argv) -> None:
    # the reader closes after one line; the rest of the output hits a closed pipe
    proc = subprocess.Popen([*TUNEPLAN, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.strip()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 1)


def test_broken_pipe_in_a_shell_pipeline(tmp_path) -> None:
    r = subprocess.run(
        f"{sys.executable} -m tuneplan.cli models --json | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.stdout.splitlines()[0] == "["
    assert r.stderr == "", r.stderr


def test_cpu_plan_can_pin_name_memory_and_cores(capsys) -> None:
    plan = _plan(
        capsys,
        "--model",
        "SmolLM2-135M",
        "--cpu-name",
        "Xeon 8480",
        "--cpu-memory",
        "64",
        "--cpu-cores",
        "16",
    )
    hw = plan["inputs"]["hardware"]
    assert hw == {**hw, "kind": "cpu", "name": "Xeon 8480", "memory_bytes": 64 * 1024**3, "cores": 16}


def test_cpu_pins_report_every_bad_value_at_once(capsys) -> None:
    assert (
        main(
            [
                "advise",
                "--model",
                "SmolLM2-135M",
                "--domain",
                "near",
                "--forgetting",
                "medium",
                "--cpu-memory",
                "-1",
                "--cpu-cores",
                "0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--cpu-memory" in err and "--cpu-cores" in err


def test_local_model_name_is_not_an_absolute_path(tmp_path, monkeypatch, capsys) -> None:
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(TINY_CFG))
    monkeypatch.chdir(tmp_path)
    plan = _plan(capsys, "--model", str(model), "--gpu", "L4")
    assert plan["inputs"]["model"]["name"] == "models/tiny"
    assert not os.path.isabs(plan["inputs"]["model"]["source"].split(";")[0])
    # relative and ./ forms give the same committed name
    assert (
        _plan(capsys, "--model", "./models/tiny", "--gpu", "L4")["inputs"]["model"]["name"] == "models/tiny"
    )


def test_saved_adapter_names_the_plans_model_not_a_cache_path(tmp_path) -> None:
    art = tmp_path / "adapter"
    art.mkdir()
    snap = "/root/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/abc"
    (art / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": snap, "r": 8}))
    assert make_portable(art, "HuggingFaceTB/SmolLM2-135M") == ["adapter_config.json"]
    cfg = json.loads((art / "adapter_config.json").read_text())
    assert cfg == {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M", "r": 8}
    # already portable: nothing to change
    assert make_portable(art, "HuggingFaceTB/SmolLM2-135M") == []


def test_one_process_dry_run_shows_the_in_process_command(tmp_path, capsys) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                str(examples / "plan.json"),
                "--dry-run",
                "--max-steps",
                "3",
                "--db",
                str(tmp_path / "r.duckdb"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accelerate" not in out.split("# command")[1] and "strategy none" in out
    assert out.strip().splitlines()[-1] == (
        f"tuneplan run {examples / 'plan.json'} --db {tmp_path / 'r.duckdb'} --max-steps 3"
    )
    assert not (tmp_path / "r.duckdb").exists(), "a dry run writes nothing"
