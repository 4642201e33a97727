"""examples/ci/ (issue 13): the GitHub Actions workflow's own steps, parsed from it, run in a scratch
repository: validate, lockfile check, dry-run the GPU plan, run the CI-sized plan, report, gate on
`check --strict`, and the artefacts it uploads exist. The GitLab file must list the same commands.

The scratch repository commits a CI-sized plan for the tiny local Llama (tests/exec_fixtures.py)
instead of the embedded SmolLM2, so the run takes seconds on a shared CPU; the commands are the
workflow's, unchanged."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exec_fixtures import overfit_rows, tiny_llama_dir, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"


def _github_steps() -> tuple[dict, list[dict]]:
    wf = yaml.safe_load((CI / "github-actions.yml").read_text())
    (job,) = wf["jobs"].values()
    return job, job["steps"]


def _commands(run: str) -> list[str]:
    return [line.strip() for line in run.strip().splitlines() if line.strip()]


def test_gitlab_file_lists_the_same_commands() -> None:
    job, steps = _github_steps()
    github = [c for s in steps if "run" in s and s.get("id") != "install" for c in _commands(s["run"])]
    install = _commands(next(s for s in steps if s.get("id") == "install")["run"])
    gitlab = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["tuneplan"]
    assert gitlab["script"] == github
    assert gitlab["before_script"] == install
    uploads = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert gitlab["artifacts"]["paths"] == _commands(uploads["with"]["path"])
    assert {k: v for k, v in gitlab["variables"].items() if k != "GITHUB_STEP_SUMMARY"} == job["env"]


@pytest.mark.slow
def test_workflow_steps_run_in_a_scratch_repository(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "plans").mkdir(parents=True)
    (repo / "data").mkdir()
    shutil.copy(CI / "plans" / "gpu.json", repo / "plans" / "gpu.json")
    rows = overfit_rows(8)
    write_jsonl(repo / "data" / "train.jsonl", rows)
    write_jsonl(repo / "data" / "eval.jsonl", rows)
    tiny = tiny_llama_dir(repo)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
        "TUNEPLAN_CACHE": str(tmp_path / "cache"),
    }
    env.pop("TUNEPLAN_DB", None)
    job, steps = _github_steps()
    env.update({k: str(v) for k, v in job["env"].items()})
    # the repository's CI-sized plan, written the way the workflow's header says
    subprocess.run(
        [
            "tuneplan",
            "advise",
            "--model",
            tiny.name,
            "--cpu",
            "--cpu-name",
            "ci",
            "--cpu-memory",
            "7",
            "--cpu-cores",
            "2",
            "--domain",
            "near",
            "--forgetting",
            "high",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--max-steps",
            "3",
            "--learning-rate",
            "0.01",
            "--method",
            "full",
            "--data",
            "data/train.jsonl",
            "--eval-data",
            "data/eval.jsonl",
            "-o",
            "plans/ci.json",
        ],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    for step in steps:
        if "run" not in step or step.get("id") == "install":
            continue
        r = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, f"step {step['name']!r} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        if step["name"].startswith("dry-run"):
            assert "accelerate" in r.stdout and "--num_processes 2" in r.stdout
        if step["name"].startswith("gate"):
            assert r.stdout.startswith("### ✅ tuneplan check: 1 of 1 runs held")
    uploads = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    for pattern in _commands(uploads["with"]["path"]):
        assert glob.glob(str(repo / pattern)), f"artefact {pattern} was not produced"
    assert "tuneplan check" in (tmp_path / "step-summary.md").read_text()
    assert not (repo / "runs").exists(), "the dry run wrote nothing"
