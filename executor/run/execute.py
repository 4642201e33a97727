"""run_plan: validate a plan and its inputs, train, measure, and record the run.

Run directory `<output_dir or ./runs>/<run_id>/`:
  plan.json      the plan as given
  metrics.jsonl  one JSON object per optimizer step (step, loss, lr, grad_norm, tokens, trained_tokens,
                 positions, elapsed_s; eval_loss and probe_loss on evaluated steps)
  checkpoints/   resumable checkpoints (executor/checkpoint.py): step-<N>/, the last K kept
  result.json    the RunResult, rewritten atomically at start, and at the end whatever happens
  adapter/       PEFT adapter (lora, qlora) or model/ full weights (full), with the tokenizer
The run is also recorded in DuckDB through tuneplan.executor.ledger; when that fails, result.json
still holds everything and `tuneplan runs ingest` recovers the row.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional


from tuneplan.base.errors import InputError
from tuneplan.base.fileio import write_text_atomic
from tuneplan.base.planio import new_run_id, plan_hash  # noqa: F401 - plan_hash re-exported
from tuneplan.schemas import Plan, RunResult, tuneplan_version

from . import data as D
from . import owner
from .models import resolve_model_dir
from .signals import Recorded, RecordingFailed, RunInterrupted, RunSignals, no_space, pause

DEFAULT_OUTPUT_DIR = "runs"
_VERSIONED = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_plan(plan: "Plan | str | Path", *, trust_remote_code: bool = False,
              ) -> tuple[Plan, Optional[Path], Optional[str]]:
    """Return (plan, its file or None, the file's text or None); InputError for unreadable/invalid
    (executor/preflight.py: directories, invalid UTF-8, deep nesting, unknown schema versions).

    ``plan.trust_remote_code`` is replaced by ``trust_remote_code`` — the command line's
    ``--trust-remote-code``, never the plan file (executor/remote_code.py); when that changes the
    field the text is None, so a run directory's plan.json records the value really used."""
    from .preflight import load_plan_file
    from .remote_code import effective_plan

    loaded, path, text = load_plan_file(plan)
    effective = effective_plan(loaded, trust_remote_code)
    return effective, path, (text if effective is loaded else None)


def _data_file(value: str, where: str, plan_dir: Optional[Path]) -> Path:
    """A data path as given, or relative to the plan's directory when only that exists."""
    p = Path(value).expanduser()
    if not p.exists() and plan_dir is not None and not p.is_absolute() and (plan_dir / p).exists():
        p = plan_dir / p
    return D.check_data_path(p, where)


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["tuneplan"] = tuneplan_version()
    return out



def _record(db: Optional[str], result: RunResult, metrics: list[dict],
            recorded: Optional[Recorded] = None) -> Optional[str]:
    """Land the run in DuckDB; never lose it when the store is missing or fails.
    Returns None when the row was written, else why not (also noted in ``recorded``)."""
    try:
        from tuneplan.executor import ledger as store
    except ImportError as exc:
        error = f"run database unavailable ({exc})"
    else:
        try:
            store.record(db, result, metrics=metrics)
            return None
        except Exception as exc:  # the run itself is safe in result.json
            error = _os_reason(exc) if no_space(exc) else f"{type(exc).__name__}: {exc}"
    if recorded is not None:
        recorded.db_error = error
    print(f"warning: recording run {result.run_id} ({result.status}) in the database failed: {error}; "
          f"it is saved in {result.run_dir}/result.json and `tuneplan runs ingest {result.run_dir}` "
          "will recover it", file=sys.stderr)
    return error


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class _Progress:
    """A rich progress bar on a TTY, plain log lines on stderr otherwise."""

    def __init__(self, total: int, enabled: Optional[bool]):
        self.total = total
        self.fancy = sys.stderr.isatty() if enabled is None else enabled
        self.every = max(1, total // 10)
        self.tokens = 0
        self.bar = None
        if self.fancy:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"), TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("train", total=total, loss="-", tps="-")
            self.bar.start()

    def log(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def step(self, m: dict) -> None:
        """Show one optimizer step."""
        self.tokens += m["tokens"]
        tps = self.tokens / m["elapsed_s"] if m["elapsed_s"] > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=m["step"], loss=f"{m['loss']:.4f}", tps=f"{tps:,.0f}")
        elif m["step"] % self.every == 0 or m["step"] == self.total:
            print(f"step {m['step']}/{self.total}  loss {m['loss']:.4f}  lr {m['lr']:.3g}  "
                  f"grad_norm {m['grad_norm']:.3g}  {tps:,.0f} tok/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop the bar."""
        if self.bar is not None:
            self.bar.stop()


def run_plan(plan: "Plan | str | Path", *, data: Optional[str] = None, db: Optional[str] = None,
             output_dir: Optional[str] = None, max_steps: Optional[int] = None,
             progress: Optional[bool] = None, model_path: Optional[str] = None,
             trust_remote_code: bool = False, resume: Optional[str] = None,
             report_to: Optional[str] = None) -> RunResult:
    """Execute a plan on real weights and return its RunResult.

    Everything is validated before anything is created (InputError: plan, data files and rows,
    model location, --max-steps). SIGINT / SIGTERM are handled from the first line to after the
    last write (executor/signals.py): the run ends as "interrupted" and :class:`RunInterrupted`
    (a KeyboardInterrupt) says what was recorded; a signal before the run directory exists
    creates nothing. Any other exception ends the run as "failed" and propagates. In every case
    result.json and the database row hold the outcome and the metrics so far; when the final
    write itself fails (full disk, locked database) a succeeded run raises
    :class:`RecordingFailed` naming what is missing. ``trust_remote_code`` is the command line's
    ``--trust-remote-code``; the plan's field never turns it on (executor/remote_code.py).

    ``resume`` (a run directory, or "latest": the newest resumable run under the output
    directory) continues that run, same id, from its newest checkpoint (executor/checkpoint.py);
    ``plan`` may then be None (the run's plan.json is used) and must otherwise be the same plan.
    """
    signals = RunSignals().install()
    recorded = Recorded()
    try:
        return _run_plan(plan, data=data, db=db, output_dir=output_dir, max_steps=max_steps,
                         progress=progress, model_path=model_path, signals=signals, recorded=recorded,
                         trust_remote_code=trust_remote_code, resume=resume, report_to=report_to)
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise RunInterrupted(str(exc) or "interrupted", recorded) from None
    except Exception as exc:
        try:
            exc.recorded = recorded  # type: ignore[attr-defined]
        except AttributeError:
            pass
        raise
    finally:
        signals.restore()


def _run_plan(plan, *, data, db, output_dir, max_steps, progress, model_path,
              signals: RunSignals, recorded: Recorded, trust_remote_code: bool = False,
              resume: Optional[str] = None, report_to: Optional[str] = None) -> RunResult:
    pause("preflight", signals)
    from .trackers import parse_report_to

    tracker_names = parse_report_to(report_to)
    prior = None
    if resume is not None:
        from .distributed import active as _in_worker
        from .resume import resolve_resume

        prior = resolve_resume(resume, plan, output_dir, check_status=_in_worker() is None)
        plan = plan if plan is not None else prior.run_dir / "plan.json"
        data = data or prior.result.data_path
    if max_steps is not None and max_steps < 1:
        raise InputError.one("--max-steps", f"must be at least 1, got {max_steps}", "pass a positive number")
    from .preflight import preflight

    checked = preflight(plan, data=data, model_path=model_path)
    from .remote_code import effective_plan

    plan_obj = effective_plan(checked.plan, trust_remote_code)
    plan_text = checked.plan_text if plan_obj is checked.plan else None
    if prior is not None:
        prior.check_plan(plan_hash(plan_obj))
    spec = plan_obj.data
    where = "--data" if data else "data.train_path"
    train_path, train_read, eval_read = checked.train_path, checked.train_read, checked.eval_read
    probe = D.probe_text(spec.probe_path if spec else None)
    if eval_read is None:
        train_rows, eval_rows = D.split_eval(train_read.rows, spec.eval_fraction if spec else 0.1,
                                             plan_obj.training.seed)
    else:
        train_rows, eval_rows = train_read.rows, eval_read.rows
    model_dir = checked.model_dir or resolve_model_dir(plan_obj.inputs.model.name, model_path)
    from .distributed import active as _active_dist

    dist = _active_dist()  # set only inside a `tuneplan run --num-processes N` worker
    main_rank = dist is None or dist.is_main

    phash = plan_hash(plan_obj)
    run_id = new_run_id(seed=phash)
    if dist is not None:  # the launcher chose the id and made the directory
        run_id = os.environ.get("TUNEPLAN_RUN_ID") or run_id
    run_dir = Path(output_dir or DEFAULT_OUTPUT_DIR).expanduser() / run_id
    if prior is not None:
        run_id, run_dir = prior.result.run_id, prior.run_dir
    metrics_file = run_dir / "metrics.jsonl"

    import torch

    from .measure import MemoryMeter, count_params, describe_device, runtime_baseline_bytes
    from .models import load_model, pick_device
    from .train import EVAL_MAX_BATCHES, TrainState, evaluate, total_steps, train

    device = dist.device if dist is not None else pick_device()
    task = plan_obj.inputs.task
    result = RunResult(
        run_id=run_id, status="running", plan_hash=phash, method=plan_obj.method,
        model=plan_obj.inputs.model.name, hardware=describe_device(device), started_at=_utc_now(),
        run_dir=str(run_dir.expanduser().absolute()), predicted_peak_bytes=plan_obj.memory.per_device_bytes,
        predicted_fits=plan_obj.memory.fits, forgetting_tolerance=task.forgetting_tolerance,
        domain_distance=task.domain_distance, versions=_versions(),
        trust_remote_code=plan_obj.trust_remote_code, data_path=str(train_path.resolve()),
    )
    if dist is not None:
        result.num_processes, result.strategy = dist.world_size, dist.strategy
    if prior is not None:
        result = prior.resumed_result(result)
    result.packing = plan_obj.training.packing
    substitutions: list[str] = []
    if train_read.skipped or (eval_read and eval_read.skipped):
        skipped = train_read.skipped + (eval_read.skipped if eval_read else 0)
        first = ", ".join(train_read.skipped_where + (eval_read.skipped_where if eval_read else []))
        substitutions.append(f"data: skipped {skipped} bad rows (skip_bad_rows; first: {first})")
    result.substitutions = list(substitutions)

    state = TrainState()
    trackers = None
    meter = None
    bar = None
    t_wall = time.perf_counter()
    try:
        with signals.critical():  # the directory, its first files and the "running" row, all or none
            if prior is not None and main_rank:
                prior.truncate_metrics()
            run_dir.mkdir(parents=True, exist_ok=dist is not None or prior is not None)
            recorded.run_dir = result.run_dir
            pause("created", signals)
            if main_rank:
                owner.write(run_dir)
                if prior is None:
                    (run_dir / "plan.json").write_text(
                        plan_text if plan_text is not None else plan_obj.model_dump_json(indent=2))
                metrics_file.touch()
                write_text_atomic(run_dir / "result.json", result.model_dump_json(indent=2), fsync=True)
                recorded.result_status = "running"
                if _record(db, result, [], recorded) is None:
                    recorded.db_status = "running"
        pause("started", signals)
        from transformers import set_seed

        set_seed(plan_obj.training.seed)
        runtime_bytes = runtime_baseline_bytes()  # RSS before the model: the runtime part of a CPU peak
        loaded = load_model(plan_obj, model_dir, device)
        substitutions += loaded.substitutions
        model, tok, t = loaded.model, loaded.tokenizer, plan_obj.training
        result.trainable_params, result.total_params = count_params(model)
        train_ex, notes = D.encode_rows(train_rows, tok, t.seq_len)
        substitutions += [f"data: {n}" for n in notes]
        if not train_ex:
            raise InputError.one(where, f"no training row has a trained token within seq_len={t.seq_len}",
                                 "raise training.seq_len or shorten the prompts")
        if t.packing:
            n_before = len(train_ex)
            train_ex = D.pack(train_ex, t.seq_len)
            substitutions.append(f"data: packed {n_before} sequences into {len(train_ex)} of at most "
                                 f"{t.seq_len} tokens (position ids reset per example)")
            if t.attention != "flash" and loaded.model.config._attn_implementation != "flash_attention_2":
                substitutions.append("packing: with sdpa/eager attention packed examples attend to earlier "
                                     "ones in their sequence (only flash_attention_2 separates them)")
        n_train = len(train_ex)
        if dist is not None:  # each rank trains on its interleaved share; steps agree on all ranks
            from .distributed import shard

            if n_train < dist.world_size:
                raise InputError.one(where, f"{n_train} training sequences for {dist.world_size} processes",
                                     "give at least one sequence per process")
            n_train = -(-n_train // dist.world_size)
            train_ex = shard(train_ex, dist.rank, dist.world_size)
        eval_ex, _ = D.encode_rows(eval_rows, tok, t.seq_len)
        probe_ex = D.probe_examples(tok, t.seq_len, probe)
        bs = t.per_device_batch_size
        for name, exs in (("eval", eval_ex), ("probe", probe_ex)):
            if len(exs) > EVAL_MAX_BATCHES * bs:
                substitutions.append(f"{name}: loss over the first {EVAL_MAX_BATCHES * bs} of {len(exs)} "
                                     f"sequences (cap: {EVAL_MAX_BATCHES} batches of {bs})")
        result.substitutions = list(substitutions)

        def _eval(exs):
            return evaluate(model, exs, batch_size=bs, pad_id=tok.pad_token_id, device=device,
                            autocast_dtype=loaded.precision.autocast_dtype)

        steps = total_steps(t, n_train, max_steps)
        bar = _Progress(steps, progress if main_rank else False)
        if not main_rank:  # rank 0 reports for the job
            bar.log = bar.step = lambda *a, **k: None
        bar.log(f"run {run_id}: {plan_obj.method} on {result.model} ({result.hardware}), {steps} steps, "
                f"{len(train_ex)} train / {len(eval_ex)} eval sequences")
        if prior is None:
            bar.log("evaluating before training (eval and probe loss)")
            result.eval_loss_before = _eval(eval_ex)
            result.forgetting_loss_before = _eval(probe_ex)
        else:
            bar.log(f"resuming from {prior.checkpoint.name} (step {prior.step}); the before-training "
                    "evaluation is kept from the first attempt")
        meter = MemoryMeter(model, device, runtime_bytes=runtime_bytes)

        if tracker_names and main_rank:
            from .trackers import Trackers

            trackers = Trackers(tracker_names, run_dir, run_id, {
                "method": plan_obj.method, "model": result.model, "plan_hash": phash,
                **{k: v for k, v in t.model_dump().items() if isinstance(v, (int, float, str, bool))}})
        with metrics_file.open("a", encoding="utf-8") if main_rank else open(os.devnull, "w") as mf:
            def on_step(m: dict) -> None:
                mf.write(json.dumps(m) + "\n")
                mf.flush()
                if trackers is not None:
                    trackers.log(m)
                bar.step(m)
                if m["step"] == 1:
                    pause("training", signals)

            train_kw = {"dist": dist} if dist is not None else {}
            substitutions += train(loaded, train_ex, t, steps=steps, meter=meter, state=state, on_step=on_step,
                                   run_dir=run_dir, plan_hash=phash,
                                   resume_from=prior.checkpoint if prior is not None else None,
                                   evaluate_fn=lambda: (_eval(eval_ex), _eval(probe_ex)), signals=signals,
                                   **train_kw)
        result.measured = meter.result() if dist is None else dist.measured_max(meter.result(), state.wrapped_model)
        meter.close()
        substitutions += meter.notes()
        bar.log("evaluating after training (eval and probe loss)")
        result.eval_loss_after = _eval(eval_ex)
        result.forgetting_loss_after = _eval(probe_ex)
        art = run_dir / ("model" if plan_obj.method == "full" else "adapter")
        bar.log(f"saving the {'model' if plan_obj.method == 'full' else 'adapter'} to {art}")
        if dist is not None:  # a collective for sharded models; rank 0 writes
            dist.save_pretrained(state.wrapped_model or model, art)
        else:
            model.save_pretrained(str(art), safe_serialization=True)
        if main_rank:
            tok.save_pretrained(str(art))
            from .portable import make_portable

            make_portable(art, plan_obj.inputs.model.name)
            result.artifact_path = str(art.resolve())
            result.artifact_bytes = _dir_bytes(art)
        result.status = "succeeded"
    except KeyboardInterrupt as exc:
        result.status = "interrupted"
        result.error = f"KeyboardInterrupt: {exc or 'interrupted'}"
        raise
    except BaseException as exc:
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        if device.type == "cuda" and isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        raise
    finally:
        with signals.critical():  # the final result.json and row; a signal now waits for both
            if bar is not None:
                bar.close()
            if meter is not None and result.measured is None and state.steps:
                result.measured = meter.result()
            result.steps = state.steps
            result.tokens = state.tokens
            result.tokens_per_second = state.tokens / state.train_seconds if state.train_seconds > 0 else None
            result.wall_seconds = round(time.perf_counter() - t_wall, 3)
            result.finished_at = _utc_now()
            result.substitutions = substitutions
            _training_outcome(result, state)
            if trackers is not None:
                trackers.finish()
                substitutions += trackers.notes
                result.substitutions = substitutions
            if main_rank and recorded.run_dir is not None and run_dir.is_dir():
                _final_write(db, run_dir, result, state.metrics, recorded, signals)
    if main_rank and (recorded.result_status != result.status or recorded.db_status != result.status):
        missing = [] if recorded.result_status == result.status else [
            f"result.json ({recorded.result_error or 'not written'})"]
        if recorded.db_status != result.status:
            missing.append(f"the database row ({recorded.db_error or 'not written'})")
        full = " - no space left on device" if any("no space left" in m.lower() for m in missing) else ""
        raise RecordingFailed(f"run {run_id} {result.status} but could not be recorded{full}: "
                              f"{'; '.join(missing)}. {recorded.describe()}", recorded, result)
    return result


def _training_outcome(result: RunResult, state) -> None:
    """Checkpoint, padding, best-step and stop fields of the result, from the loop's state."""
    ck = state.checkpointer
    if ck is not None:
        result.checkpoints_saved += ck.saved
        if ck.seconds:
            result.checkpoint_seconds = round(sum(ck.seconds) / len(ck.seconds), 3)
        if ck.last_bytes is not None:
            result.checkpoint_bytes = ck.last_bytes
    from .checkpoint import newest_checkpoint

    newest = newest_checkpoint(Path(result.run_dir))
    result.checkpoint_dir = str(newest) if newest is not None else None
    if state.positions:
        result.padding_fraction = round(max(0.0, 1 - state.tokens / state.positions), 4)
        if state.train_seconds > 0:
            result.padded_tokens_per_second = state.positions / state.train_seconds
    result.best_step, result.best_eval_loss = state.best_step, state.best_eval_loss
    result.early_stopped = state.early_stopped
    if state.stop_reason:
        result.stop_reason = state.stop_reason
    elif result.status == "failed" and result.error and "checkpoint at step" in result.error:
        result.stop_reason = result.error


def _final_write(db, run_dir: Path, result: RunResult, metrics: list[dict], recorded: Recorded,
                 signals: RunSignals) -> None:
    """Write the final result.json, then the database row; note in ``recorded`` what landed."""
    try:
        write_text_atomic(run_dir / "result.json", result.model_dump_json(indent=2), fsync=True)
        recorded.result_status, recorded.result_error = result.status, None
    except OSError as exc:
        recorded.result_error = _os_reason(exc)
        print(f"warning: could not write {run_dir}/result.json: {recorded.result_error}", file=sys.stderr)
    pause("final", signals)
    error = _record(db, result, metrics, recorded)
    if error is None:
        recorded.db_status, recorded.db_error = result.status, None
    pause("recorded", signals)


def _os_reason(exc: BaseException) -> str:
    if no_space(exc):
        return f"no space left on device ({exc})"
    return f"{type(exc).__name__}: {exc}"
