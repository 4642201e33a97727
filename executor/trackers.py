"""`tuneplan run --report-to tensorboard|wandb|mlflow`: the run's metrics, also sent to experiment
trackers through accelerate's tracker classes (accelerate.tracking). Optional extras: nothing is
required and nothing is sent anywhere unless asked. The DuckDB row stays the source of truth.

Where each one writes (main process only; a multi-process run's other ranks open none):

* tensorboard: ``<run_dir>/tensorboard/<run_id>/`` event files.
* wandb: project ``$WANDB_PROJECT`` or "tuneplan", run name = the run id, files under
  ``<run_dir>/wandb/`` unless ``$WANDB_DIR`` is set. The mode is W&B's own (``$WANDB_MODE``, or
  the login): ``WANDB_MODE=offline`` writes locally only, for a later ``wandb sync``. Its console
  capture is off and its own terminal lines are silenced; the run directory (offline) or URL
  (online) is one of the run's notes.
* mlflow: experiment ``$MLFLOW_EXPERIMENT_NAME`` or "tuneplan", run name = the run id, in a local
  file store ``<run_dir>/mlruns`` unless ``$MLFLOW_TRACKING_URI`` names another. MLflow 3 keeps
  the file store behind ``MLFLOW_ALLOW_FILE_STORE=true`` (set here when not set; its sqlite
  default needs SQLAlchemy and ~15 s of migrations per new database). MLflow's usage telemetry is
  off unless ``$MLFLOW_DISABLE_TELEMETRY`` says otherwise.

A tracker that cannot start (W&B without a login and not offline, an unreachable MLflow server:
one retry, seconds rather than MLflow's minutes) is a warning on the terminal and a note in the
run's record; the run goes on without it. One that
fails mid-run stops logging with a note; the run is never lost over a tracker."""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from tuneplan.base.errors import InputError, Problem

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""--report-to name -> the module it needs."""

PROJECT = "tuneplan"
"""The W&B project and MLflow experiment when the environment names none."""


def parse_report_to(value: Optional[str]) -> list[str]:
    """Names from a comma list; InputError for unknown or not-installed ones (before anything starts)."""
    if not value:
        return []
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    problems = []
    for n in names:
        if n not in TRACKERS:
            problems.append(Problem("--report-to", f"unknown tracker {n!r}", f"use {', '.join(TRACKERS)}"))
        elif importlib.util.find_spec(TRACKERS[n]) is None:
            problems.append(
                Problem(
                    "--report-to",
                    f"{n} is not installed",
                    f"pip install 'tuneplan[trackers]' (or pip install {_package(n)})",
                )
            )
    if problems:
        raise InputError(problems)
    return list(dict.fromkeys(names))


def _package(name: str) -> str:
    return "mlflow-skinny" if name == "mlflow" else name


def _tracker(name: str, run_dir: Path, run_id: str):
    """The accelerate tracker for ``name``, not started."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    if name == "tensorboard":
        return TensorBoardTracker(run_id, run_dir / "tensorboard")
    if name == "wandb":
        import wandb

        kwargs: dict[str, Any] = {
            "name": run_id,
            "settings": wandb.Settings(console="off", silent=True),
        }
        if not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(run_dir)
        # accelerate passes its first argument to wandb.init as the project
        return WandBTracker(os.environ.get("WANDB_PROJECT") or PROJECT, **kwargs)
    return MLflowTracker(experiment_name=PROJECT, run_name=run_id)


def _where(name: str, t) -> Optional[str]:
    """Where a started tracker's data is, for the run's notes."""
    if name == "wandb":
        run = t.run
        if run.settings.mode in ("offline", "dryrun"):
            d = Path(run.dir).parent
            return f"--report-to wandb: offline run in {d} (upload it with `wandb sync {d}`)"
        return f"--report-to wandb: {run.url or run.name}"
    if name == "mlflow":
        import mlflow

        uri = mlflow.get_tracking_uri()
        return f"--report-to mlflow: run {t.active_run.info.run_id} in {uri}"
    return None


_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""While an MLflow tracker starts, unless set: one retry, 10 s per request. MLflow's defaults (7
retries with backoff, 120 s) take about 4 minutes to give up on a server that is not there."""


@contextmanager
def _fail_fast(name: str) -> Iterator[None]:
    unset = [k for k in _QUICK if name == "mlflow" and k not in os.environ]
    os.environ.update({k: _QUICK[k] for k in unset})
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)


class Trackers:
    """The opened trackers of one run (main process only)."""

    def __init__(self, names: list[str], run_dir: Path, run_id: str, config: dict) -> None:
        from .runlog import refresh

        self.notes: list[str] = []
        self.trackers: list = []
        self._set_mlflow_uri = False
        if "mlflow" in names:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        run_dir = Path(run_dir)
        for n in names:
            t = None
            try:
                importlib.import_module(TRACKERS[n])
                refresh()  # the library's own loggers: console handlers raised, records to run.log
                if n == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
                    import mlflow

                    # process-wide (and exported to MLFLOW_TRACKING_URI): unset again in finish()
                    mlflow.set_tracking_uri((run_dir / "mlruns").absolute().as_uri())
                    self._set_mlflow_uri = True
                t = _tracker(n, run_dir, run_id)
                with _fail_fast(n):
                    t.start()
                refresh()
                t.store_init_configuration(config)
                where = _where(n, t)
            except Exception as exc:  # noqa: BLE001 - a tracker never loses the run
                note = (
                    f"--report-to: {n} could not start ({type(exc).__name__}: {exc}); "
                    "the run goes on without it"
                )
                print(f"warning: {note}", file=sys.stderr, flush=True)
                self.notes.append(note)
                self._close(t)
                continue
            self.trackers.append(t)
            if where:
                self.notes.append(where)

    def log(self, record: dict) -> None:
        values = {
            k: v
            for k, v in record.items()
            if k != "step"
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and not (isinstance(v, float) and math.isnan(v))
        }
        for t in list(self.trackers):
            try:
                t.log(values, step=int(record["step"]))
            except Exception as exc:  # noqa: BLE001 - a tracker never loses the run
                self.notes.append(f"--report-to: {t.name} stopped logging ({type(exc).__name__}: {exc})")
                self.trackers.remove(t)
                self._close(t)

    def finish(self) -> None:
        for t in self.trackers:
            try:
                t.finish()
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"--report-to: {t.name} did not finish cleanly ({exc})")
        self.trackers = []
        if self._set_mlflow_uri:
            import mlflow

            mlflow.set_tracking_uri(None)  # the next run in this process picks its own again
            self._set_mlflow_uri = False

    @staticmethod
    def _close(t) -> None:
        """A tracker that failed: end what it started, quietly."""
        if t is None:
            return
        try:
            if getattr(t, "name", "") == "mlflow":
                import mlflow

                mlflow.end_run("FAILED")
            elif getattr(t, "run", None) is not None or hasattr(t, "writer"):
                t.finish()
        except Exception:  # noqa: BLE001 - already reported
            pass
