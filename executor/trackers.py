"""`tuneplan run --report-to tensorboard|wandb|mlflow`: the run's metrics, also sent to experiment
trackers through accelerate's tracker classes (accelerate.tracking). Optional extras: nothing is
required and nothing is sent anywhere unless asked. TensorBoard and MLflow write under the run
directory (``tensorboard/``, ``mlruns/``, local files); W&B follows its own settings (WANDB_MODE).
The DuckDB row stays the source of truth; a tracker failing mid-run is a note, never a lost run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError, Problem

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""--report-to name -> the module it needs."""


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
                    f"pip install 'tuneplan[trackers]' (or pip install {TRACKERS[n]})",
                )
            )
    if problems:
        raise InputError(problems)
    return list(dict.fromkeys(names))


class Trackers:
    """The opened trackers of one run (main process only)."""

    def __init__(self, names: list[str], run_dir: Path, run_id: str, config: dict) -> None:
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

        self.notes: list[str] = []
        self.trackers = []
        for n in names:
            if n == "tensorboard":
                t = TensorBoardTracker(run_id, Path(run_dir) / "tensorboard")
            elif n == "wandb":
                t = WandBTracker(run_id)
            else:
                t = MLflowTracker(
                    experiment_name="tuneplan", logging_dir=str(Path(run_dir) / "mlruns"), run_name=run_id
                )
            t.start()
            t.store_init_configuration(config)
            self.trackers.append(t)

    def log(self, record: dict) -> None:
        values = {
            k: v
            for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
        }
        for t in list(self.trackers):
            try:
                t.log(values, step=int(record["step"]))
            except Exception as exc:  # noqa: BLE001 - a tracker never loses the run
                self.notes.append(f"--report-to: {t.name} stopped logging ({type(exc).__name__}: {exc})")
                self.trackers.remove(t)

    def finish(self) -> None:
        for t in self.trackers:
            try:
                t.finish()
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"--report-to: {t.name} did not finish cleanly ({exc})")
        self.trackers = []
