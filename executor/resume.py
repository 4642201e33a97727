"""`tuneplan run --resume RUN_DIR|latest`: find the run, check it can be resumed, before anything
is touched. Every problem is an InputError (exit 2) naming it and the fix; nothing is written
until the run's plan, data, model and newest checkpoint have all been checked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError

from .checkpoint import newest_checkpoint, verify

RESUMABLE = ("interrupted", "failed")


@dataclass
class Prior:
    """A run about to be resumed."""

    run_dir: Path
    result: object
    """Its RunResult as last written."""
    checkpoint: Path
    manifest: dict

    @property
    def step(self) -> int:
        return int(self.manifest["step"])

    def max_steps(self, asked: Optional[int]) -> Optional[int]:
        """The run's own total steps (an interrupted `--max-steps N` run resumes to N): its LR
        schedule is built on them, so another count would not continue the same run."""
        planned = self.manifest.get("total_steps")
        if planned is None:  # a checkpoint from before total_steps was recorded
            return asked
        if asked is not None and asked != planned:
            raise InputError.one(
                "--max-steps",
                f"run {self.result.run_id} was started for {planned} steps (its learning-rate "
                f"schedule is built on them); {asked} would not continue the same run",
                f"omit --max-steps (or pass {planned}) to finish it, or start a new run",
            )
        return int(planned)

    def check_plan(self, phash: str) -> None:
        """The plan given (or the run's own) must be the plan the run and checkpoint were made for."""
        if phash != self.result.plan_hash:
            raise InputError.one(
                "PLAN",
                f"this plan (hash {phash}) is not the plan of run {self.result.run_id} "
                f"(hash {self.result.plan_hash})",
                f"omit PLAN to resume with {self.run_dir / 'plan.json'}, or start a new run",
            )
        verify(self.checkpoint, phash)

    def resumed_result(self, fresh):
        """The run's result, running again, its resume recorded; ``fresh`` supplies this attempt's
        hardware and versions."""
        from tuneplan.schemas.run import Resume

        old = self.result
        res = old.model_copy(deep=True)
        res.resumes.append(
            Resume(
                resumed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                from_step=self.step,
                checkpoint=str(self.checkpoint),
                previous_status=old.status,
                previous_error=old.error,
            )
        )
        res.status, res.error, res.finished_at, res.stop_reason = "running", None, None, None
        res.hardware, res.versions = fresh.hardware, fresh.versions
        res.num_processes, res.strategy = fresh.num_processes, fresh.strategy
        return res

    def truncate_metrics(self) -> None:
        """metrics.jsonl keeps the steps up to the checkpoint (later ones are trained again)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line)["step"]) <= self.step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        from tuneplan.base.fileio import write_text_atomic

        write_text_atomic(path, "".join(k + "\n" for k in kept), fsync=True)


def _read_result(run_dir: Path):
    from pydantic import ValidationError

    from tuneplan.schemas.run import RunResult

    path = run_dir / "result.json"
    try:
        return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError.one(
            "--resume",
            f"{run_dir} has no result.json: not a run directory",
            "pass a directory written by `tuneplan run`, or --resume latest",
        ) from None
    except (OSError, ValueError, ValidationError) as exc:
        raise InputError.one(
            "--resume",
            f"{path} is unreadable ({type(exc).__name__})",
            "`tuneplan runs ingest` can rebuild it, then resume",
        ) from None


def resumable_runs(output_dir: Optional[str]) -> list[Path]:
    """Run directories under output_dir that are interrupted/failed with a checkpoint, newest first."""
    from .runner import DEFAULT_OUTPUT_DIR

    root = Path(output_dir or DEFAULT_OUTPUT_DIR).expanduser()
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if not (d / "result.json").is_file() or newest_checkpoint(d) is None:
                continue
            try:
                r = json.loads((d / "result.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if r.get("status") in RESUMABLE:
                found.append((r.get("started_at") or "", d))
    return [d for _, d in sorted(found, reverse=True)]


def resolve_resume(resume: str, plan, output_dir: Optional[str], *, check_status: bool = True) -> Prior:
    """The run to resume and its newest checkpoint, checked (InputError otherwise). Workers of a
    multi-process resume pass check_status=False: the launcher checked, and rank 0 may already
    have marked the run running."""
    if resume == "latest":
        runs = resumable_runs(output_dir)
        if not runs:
            raise InputError.one(
                "--resume latest",
                f"no interrupted run with a checkpoint under {output_dir or 'runs'}",
                "pass --output DIR where the runs are, or a RUN_DIR",
            )
        run_dir = runs[0]
    else:
        run_dir = Path(resume).expanduser()
        if not run_dir.is_dir():
            raise InputError.one(
                "--resume",
                f"run directory {run_dir} does not exist",
                "pass a directory written by `tuneplan run` (see `tuneplan runs`), or --resume latest",
            )
    run_dir = run_dir.resolve()
    result = _read_result(run_dir)
    if check_status and result.status not in RESUMABLE:
        why = (
            "it already succeeded"
            if result.status == "succeeded"
            else "it is still running (or died without being recorded: `tuneplan runs ingest` marks it)"
        )
        raise InputError.one(
            "--resume",
            f"run {result.run_id} cannot be resumed: {why}",
            "start a new run with `tuneplan run PLAN`",
        )
    ckpt = newest_checkpoint(run_dir)
    if ckpt is None:
        raise InputError.one(
            "--resume",
            f"run {result.run_id} has no complete checkpoint in {run_dir}/checkpoints",
            "start a new run (set training.save_every_steps to checkpoint as it goes)",
        )
    manifest = verify(ckpt, result.plan_hash)
    if plan is None and not (run_dir / "plan.json").is_file():
        raise InputError.one("--resume", f"{run_dir}/plan.json is missing", "pass the run's PLAN as well")
    return Prior(run_dir=run_dir, result=result, checkpoint=ckpt, manifest=manifest)
