"""Rebuilding the ledger from run directories alone: ``tuneplan runs ingest`` (after a locked
database, on another machine, or to pool run directories from several people).

A run directory holds result.json, metrics.jsonl, plan.json and, when the run was one trial of
``tuneplan compare`` / ``tuneplan sweep``, trial.json; :func:`ingest` turns them back into the
``runs``, ``metrics``, ``plan_settings`` and ``comparisons`` rows :func:`record` would have written.

DuckDB only; never imports torch.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import duckdb

from tuneplan.schemas.run import RunResult

from .connect import DBPath, StoreError, _reason, _resolve, connect
from .record import TRIAL_FILE, _rollback, _upsert_comparison
from .rows import _read_plan_json, _replace_metrics, _row, _timestamp, _upsert_run, read_metrics_jsonl

__all__ = ["find_run_dirs", "ingest", "read_metrics_jsonl"]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (those holding result.json) under the given paths: a run directory
    itself, its result.json, or any parent directory searched recursively. Sorted and
    de-duplicated. Raises InputError naming every path that does not exist or holds no run."""
    from tuneplan.base.errors import InputError

    dirs, problems = _find_run_dirs(paths)
    if problems:
        raise InputError(problems)
    return dirs


def _find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list]:
    from tuneplan.base.errors import Problem

    found: dict[Path, None] = {}
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            problems.append(
                Problem(
                    str(raw),
                    "no such file or directory",
                    "give a run directory or a directory that contains runs",
                )
            )
            continue
        if path.is_file():
            if path.name == "result.json":
                found[path.parent.resolve()] = None
            else:
                problems.append(
                    Problem(
                        str(raw),
                        "not a run directory or result.json",
                        "give the run directory that holds result.json",
                    )
                )
            continue
        hits = sorted(p.parent.resolve() for p in path.rglob("result.json") if p.is_file())
        if not hits:
            problems.append(
                Problem(
                    str(raw),
                    "no result.json found in or below this directory",
                    "give a directory written by `tuneplan run`",
                )
            )
        for hit in hits:
            found[hit] = None
    return sorted(found), problems


def ingest(db: DBPath, paths: list[str | Path], *, notes: list[str] | None = None) -> list[str]:
    """Rebuild ``runs`` and ``metrics`` rows from run directories alone (result.json,
    metrics.jsonl and plan.json), replacing any existing rows of the same run_ids.

    ``paths`` may be run directories, result.json files, or parent directories (searched
    recursively). Every result.json is validated first; any problem raises InputError naming
    each bad path and nothing is written. The row's run_dir is where the files were found.
    Returns the ingested run_ids in directory order.

    Comparison and sweep trials come back too: each run directory's ``trial.json`` (written by
    :func:`~tuneplan.executor.ledger.record.record_comparison`), and for compare outputs written
    before that file existed, the ``comparison.json`` in the run directory's parent (its
    outcomes name their run_ids). A trial whose run was not ingested is left out.

    A run whose result.json still says "running" but whose process is gone (``process.json``:
    the pid no longer exists or was reused; executor/owner.py) is recorded as "interrupted"
    with the metrics it wrote, and its result.json is rewritten to match. One whose process is
    alive, or cannot be checked (another host), stays "running"; ``notes`` (when given)
    receives a line for each such decision.
    """
    from pydantic import ValidationError

    from tuneplan.base.errors import InputError, Problem, pydantic_problems

    dirs, problems = _find_run_dirs(paths)
    loaded: list[tuple[Path, RunResult]] = []
    for run_dir in dirs:
        path = run_dir / "result.json"
        try:
            loaded.append((run_dir, RunResult.model_validate_json(path.read_text("utf-8"))))
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, prefix=f"{path}:"))
        except (OSError, ValueError) as exc:
            problems.append(
                Problem(str(path), f"cannot read: {exc}", "restore the file or leave this directory out")
            )
    if problems:
        raise InputError(problems)
    trials = _trials(loaded, notes)
    for i, (run_dir, result) in enumerate(loaded):
        if result.status == "running":
            loaded[i] = (run_dir, _settle_running(run_dir, result, notes))

    con = connect(db)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            for run_dir, result in loaded:
                _upsert_run(con, _row(result, _read_plan_json(run_dir), run_dir=str(run_dir)))
                _replace_metrics(con, result.run_id, read_metrics_jsonl(run_dir / "metrics.jsonl"))
            for trial in trials:
                _upsert_comparison(con, trial)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise StoreError(f"ingest into {_resolve(db)} failed, nothing written: {_reason(exc)}") from exc
    finally:
        con.close()
    return [result.run_id for _, result in loaded]


def _settle_running(run_dir: Path, result: RunResult, notes: list[str] | None) -> RunResult:
    """A "running" result whose process is gone becomes "interrupted" (lost), with its metrics."""
    from tuneplan.base.fileio import write_text_atomic

    from tuneplan.executor import owner

    is_gone, why = owner.gone(run_dir)
    if not is_gone:
        if notes is not None:
            notes.append(f"{result.run_id}: left as running ({why})")
        return result
    metrics = read_metrics_jsonl(run_dir / "metrics.jsonl")
    lost = result.model_copy(deep=True)
    lost.status = "interrupted"
    lost.error = (
        f"lost: {why} (killed, e.g. SIGKILL or the out-of-memory killer, or crashed) "
        f"after {len(metrics)} steps; recorded by `tuneplan runs ingest` from the metrics so far"
    )
    lost.steps = len(metrics)
    lost.tokens = int(sum(int(m.get("tokens") or 0) for m in metrics))
    last = metrics[-1].get("elapsed_s") if metrics else None
    if last and lost.tokens:
        lost.tokens_per_second = lost.tokens / float(last)
    mfile = run_dir / "metrics.jsonl"
    ended = mfile.stat().st_mtime if mfile.exists() else (run_dir / "result.json").stat().st_mtime
    lost.finished_at = datetime.fromtimestamp(ended, timezone.utc).isoformat(timespec="seconds")
    try:
        write_text_atomic(run_dir / "result.json", lost.model_dump_json(indent=2), fsync=True)
    except OSError as exc:
        if notes is not None:
            notes.append(f"{result.run_id}: could not rewrite result.json ({exc}); the row says interrupted")
    if notes is not None:
        notes.append(f"{result.run_id}: recorded as interrupted (lost: {why}), {len(metrics)} steps")
    return lost


def _trials(loaded: list[tuple[Path, RunResult]], notes: list[str] | None) -> list[dict[str, Any]]:
    """The comparisons rows of the loaded run directories (trial.json, else the parent's
    comparison.json), keyed by (compare_id, run_id)."""
    run_ids = {result.run_id for _, result in loaded}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    parents: set[Path] = set()
    for run_dir, result in loaded:
        path = run_dir / TRIAL_FILE
        if path.is_file():
            try:
                item = json.loads(path.read_text("utf-8"))
                row = {
                    k: item.get(k)
                    for k in (
                        "compare_id",
                        "method",
                        "chosen_method",
                        "forgetting_tolerance",
                        "axis",
                        "value",
                        "advised_value",
                    )
                }
                row["run_id"] = result.run_id
                row["created_at"] = _timestamp(item.get("created_at")) or datetime.now(timezone.utc).replace(
                    tzinfo=None
                )
                if row["compare_id"] and row["method"]:
                    found[(row["compare_id"], row["run_id"])] = row
                    continue
            except (OSError, ValueError, AttributeError) as exc:
                if notes is not None:
                    notes.append(f"{result.run_id}: {path} unreadable ({exc}); its trial is not ingested")
        parents.add(run_dir.parent)
    for parent in sorted(parents):
        path = parent / "comparison.json"
        if not path.is_file():
            continue
        try:
            cmp = json.loads(path.read_text("utf-8"))
            created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).replace(tzinfo=None)
            for method, outcome in (cmp.get("outcomes") or {}).items():
                run_id = (outcome or {}).get("run_id")
                if run_id in run_ids and (cmp["compare_id"], run_id) not in found:
                    found[(cmp["compare_id"], run_id)] = {
                        "compare_id": cmp["compare_id"],
                        "run_id": run_id,
                        "method": method,
                        "chosen_method": cmp.get("advised_method"),
                        "forgetting_tolerance": cmp.get("forgetting_tolerance"),
                        "created_at": created,
                        "axis": "method",
                        "value": method,
                        "advised_value": cmp.get("advised_method"),
                    }
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            if notes is not None:
                notes.append(f"{path}: unreadable ({exc}); its comparison is not ingested")
    return list(found.values())
