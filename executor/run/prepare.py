"""Stage 1, prepare: the validated plan, its data, the model's directory, the run's id and
directory, and the RunResult that says "running" — everything checked before anything exists,
then the directory and its first files created in one critical section."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from tuneplan.base.errors import InputError
from tuneplan.base.fileio import write_text_atomic
from tuneplan.base.planio import LoadedPlan, new_run_id, plan_hash, read_plan
from tuneplan.schemas import Plan, RunResult, tuneplan_version

from .. import data as D
from .. import owner
from ..signals import Recorded, RunSignals, pause

DEFAULT_OUTPUT_DIR = "runs"
_VERSIONED = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Installed versions of the training stack and tuneplan (distribution metadata; nothing imported)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["tuneplan"] = tuneplan_version()
    return out


def read_once(plan: "Plan | LoadedPlan | str | Path") -> LoadedPlan:
    """The plan as read by base/planio.py's one reader; a LoadedPlan passes through unread."""
    return plan if isinstance(plan, LoadedPlan) else read_plan(plan)


def load_plan(
    plan: "Plan | LoadedPlan | str | Path",
    *,
    trust_remote_code: bool = False,
) -> tuple[Plan, Optional[Path], Optional[str]]:
    """Return (plan, its file or None, the file's text or None); InputError for unreadable/invalid
    (base/planio.py: directories, invalid UTF-8, deep nesting, unknown schema versions).

    ``plan.trust_remote_code`` is replaced by ``trust_remote_code`` — the command line's
    ``--trust-remote-code``, never the plan file (executor/remote_code.py); when that changes the
    field the text is None, so a run directory's plan.json records the value really used."""
    from ..remote_code import effective_plan

    loaded = read_once(plan)
    effective = effective_plan(loaded.plan, trust_remote_code)
    return effective, loaded.path, (loaded.text if effective is loaded.plan else None)


@dataclass
class Prepared:
    """What the later stages need, all of it checked."""

    plan: Plan
    plan_text: Optional[str]
    """The plan file's exact text (written to the run directory byte for byte), or None."""
    phash: str
    run_id: str
    run_dir: Path
    result: RunResult
    """The RunResult as it starts: status "running"."""
    where: str
    """The field that named the training data (--data or data.train_path), for messages."""
    train_rows: list
    eval_rows: list
    probe: str
    model_dir: Path
    max_steps: Optional[int]
    tracker_names: list[str]
    prior: Any = None
    """The run being resumed (executor/resume.py Prior), or None."""
    copy_text: Optional[str] = None
    """The text of the run directory's plan.json as this run wrote it (None when resuming: the
    directory's copy is then the one recorded); the ledger records it without reading the file."""
    substitutions: list[str] = field(default_factory=list)

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "metrics.jsonl"


def prepare(
    plan,
    *,
    data: Optional[str],
    output_dir: Optional[str],
    max_steps: Optional[int],
    model_path: Optional[str],
    trust_remote_code: bool,
    resume: Optional[str],
    report_to: Optional[str],
    ctx,
) -> Prepared:
    """Every check that can fail on bad input, before anything is created (InputError, Infeasible)."""
    from ..preflight import preflight
    from ..remote_code import effective_plan
    from ..trackers import parse_report_to

    tracker_names = parse_report_to(report_to)
    prior = None
    if resume is not None:
        from ..resume import resolve_resume

        # Workers of a multi-process resume: the launcher checked, rank 0 may have marked it running.
        prior = resolve_resume(resume, plan, output_dir, check_status=not ctx.distributed)
        plan = plan if plan is not None else prior.run_dir / "plan.json"
        data = data or prior.result.data_path
    if max_steps is not None and max_steps < 1:
        raise InputError.one("--max-steps", f"must be at least 1, got {max_steps}", "pass a positive number")
    if prior is not None:
        max_steps = prior.max_steps(max_steps)
    checked = preflight(read_once(plan), data=data, model_path=model_path)
    plan_obj = effective_plan(checked.plan, trust_remote_code)
    phash = plan_hash(plan_obj)
    if prior is not None:
        prior.check_plan(phash)
    spec = plan_obj.data
    train_read, eval_read = checked.train_read, checked.eval_read
    if eval_read is None:
        train_rows, eval_rows = D.split_eval(
            train_read.rows, spec.eval_fraction if spec else 0.1, plan_obj.training.seed
        )
    else:
        train_rows, eval_rows = train_read.rows, eval_read.rows
    if checked.model_dir is not None:
        model_dir = checked.model_dir
    else:
        from ..models import resolve_model_dir

        model_dir = resolve_model_dir(plan_obj.inputs.model.name, model_path)
    run_id, run_dir = _run_id_and_dir(phash, output_dir, prior, ctx)
    result = _starting_result(plan_obj, phash, run_id, run_dir, checked.train_path, prior, ctx)
    prepared = Prepared(
        plan=plan_obj,
        plan_text=checked.plan_text if plan_obj is checked.plan else None,
        phash=phash,
        run_id=run_id,
        run_dir=run_dir,
        result=result,
        where="--data" if data else "data.train_path",
        train_rows=train_rows,
        eval_rows=eval_rows,
        probe=D.probe_text(spec.probe_path if spec else None),
        model_dir=model_dir,
        max_steps=max_steps,
        tracker_names=tracker_names,
        prior=prior,
    )
    if train_read.skipped or (eval_read and eval_read.skipped):
        skipped = train_read.skipped + (eval_read.skipped if eval_read else 0)
        first = ", ".join(train_read.skipped_where + (eval_read.skipped_where if eval_read else []))
        prepared.substitutions.append(f"data: skipped {skipped} bad rows (skip_bad_rows; first: {first})")
    result.substitutions = list(prepared.substitutions)
    return prepared


def _run_id_and_dir(phash: str, output_dir: Optional[str], prior, ctx) -> tuple[str, Path]:
    if prior is not None:
        return prior.result.run_id, prior.run_dir
    run_id = new_run_id(seed=phash)
    if ctx.distributed:  # the launcher chose the id and made the directory
        from ..distributed import ENV_RUN_ID

        run_id = os.environ.get(ENV_RUN_ID) or run_id
    return run_id, Path(output_dir or DEFAULT_OUTPUT_DIR).expanduser() / run_id


def _starting_result(
    plan: Plan, phash: str, run_id: str, run_dir: Path, train_path: Path, prior, ctx
) -> RunResult:
    from ..measure import describe_device

    task = plan.inputs.task
    result = RunResult(
        run_id=run_id,
        status="running",
        plan_hash=phash,
        method=plan.method,
        model=plan.inputs.model.name,
        hardware=describe_device(ctx.device),
        started_at=utc_now(),
        run_dir=str(run_dir.expanduser().absolute()),
        predicted_peak_bytes=plan.memory.per_device_bytes,
        predicted_fits=plan.memory.fits,
        forgetting_tolerance=task.forgetting_tolerance,
        domain_distance=task.domain_distance,
        versions=versions(),
        trust_remote_code=plan.trust_remote_code,
        data_path=str(train_path.resolve()),
    )
    if ctx.distributed:
        result.num_processes, result.strategy = ctx.world_size, ctx.strategy
    if prior is not None:
        result = prior.resumed_result(result)
    result.packing = plan.training.packing
    return result


def create_run_dir(p: Prepared, ctx, db: Optional[str], signals: RunSignals, recorded: Recorded) -> None:
    """The directory, its first files (owner, plan.json, metrics.jsonl, result.json "running") and
    the "running" row: all or none (a signal waits for the end of the section)."""
    from .finish import record

    with signals.critical():
        if p.prior is not None and ctx.is_main:
            p.prior.truncate_metrics()
        p.run_dir.mkdir(parents=True, exist_ok=ctx.distributed or p.prior is not None)
        recorded.run_dir = p.result.run_dir
        pause("created", signals)
        if not ctx.is_main:
            return
        owner.write(p.run_dir)
        if p.prior is None:
            p.copy_text = p.plan_text if p.plan_text is not None else p.plan.model_dump_json(indent=2)
            (p.run_dir / "plan.json").write_text(p.copy_text)
        p.metrics_file.touch()
        write_text_atomic(p.run_dir / "result.json", p.result.model_dump_json(indent=2), fsync=True)
        recorded.result_status = "running"
        if record(db, p.result, [], recorded, p.copy_text) is None:
            recorded.db_status = "running"
