"""``tuneplan sweep``: spend the tuning budget on the levers — method, learning rate, rank, target
modules. ``tuneplan compare`` is this sweep over the one axis ``method`` (executor/compare.py adds
only its verdict on the advisor's pick).

Every variant is the plan's own ``inputs`` re-advised with the swept values pinned (so each one
gets a consistent memory estimate and fit; calibrated plans keep their calibration factors), the
plan's method pinned unless method is the axis, and the plan's data kept (relative paths made
absolute). All variants run through :func:`tuneplan.executor.runner.run_plan` on the same data,
seed and step budget; a failed trial does not stop the others. Each trial is recorded in the
``comparisons`` table with its axis, value and the advisor's own value on that axis;
``sweep_trials`` shows them (axis, value, advised value), joined to the runs with ``USING (run_id)``.

The pick: the lowest eval loss among the succeeded trials whose forgetting (probe loss after -
before) stays within the user's tolerance (ledger/check.py FORGETTING_THRESHOLDS); when none
does, the lowest eval loss overall, and the sweep says so. The tuned plan is the winning variant
with a decision (TP060 sweep-tuned) citing the sweep and its run ids.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tuneplan.base.errors import InputError, Problem
from tuneplan.base.planio import new_run_id
from tuneplan.schemas import METHODS, Decision, Plan, RunResult

from .ledger.check import FORGETTING_THRESHOLDS
from .ledger.memory_compare import framework_overhead_of, like_for_like, relative_error

AXES = ("method", "learning_rate", "lora_rank", "target_modules")
GIB = 1024**3


@dataclass
class Trial:
    """One variant of a sweep (or one method of a comparison) and what its run gave."""

    values: dict[str, Any] = field(default_factory=dict)
    """Axis -> value this trial took (only the swept axes)."""
    method: str = ""
    status: str = "not started"
    """succeeded | failed | interrupted | running | skipped (not run) | not started (input error)."""
    run_id: Optional[str] = None
    run_dir: Optional[str] = None
    learning_rate: Optional[float] = None
    lora_rank: Optional[int] = None
    eval_loss_after: Optional[float] = None
    learning: Optional[float] = None
    """eval_loss_before - eval_loss_after (positive: learned)."""
    forgetting: Optional[float] = None
    """forgetting_loss_after - forgetting_loss_before (positive: forgot), nats."""
    predicted_bytes: Optional[int] = None
    predicted_comparable_bytes: Optional[int] = None
    """The prediction less its framework overhead: predicted tensor bytes (memory_compare.py)."""
    measured_bytes: Optional[int] = None
    """The measured peak (MeasuredMemory.peak_bytes)."""
    measured_comparable_bytes: Optional[int] = None
    """The measured peak less its runtime_bytes: measured tensor bytes (memory_compare.py)."""
    tokens_per_second: Optional[float] = None
    wall_seconds: Optional[float] = None
    error: Optional[str] = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.values.items())

    @property
    def memory_error(self) -> Optional[float]:
        """Like-for-like (predicted - measured) / measured on tensor bytes (memory_compare.py)."""
        return relative_error(self.predicted_comparable_bytes, self.measured_comparable_bytes)


@dataclass
class Sweep:
    sweep_id: str
    axes: list[str]
    advised: dict[str, Any]
    """The advisor's own value on each swept axis (its plan without that pin)."""
    forgetting_tolerance: str
    max_steps: Optional[int]
    output_dir: str
    plan_method: str = ""
    domain_distance: str = ""
    trials: list[Trial] = field(default_factory=list)
    best: Optional[int] = None
    """Index of the picked trial in ``trials``."""
    sentence: str = ""
    tuned_plan_path: Optional[str] = None
    figure_path: Optional[str] = None
    interrupted: bool = False


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "+".join(v)
    return str(v)


def _store_value(v: Any) -> str:
    """A trial's value as the comparisons table stores it (rates to 6 significant figures)."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "+".join(v)
    return str(v)


def _mem(value: Optional[int]) -> str:
    """Bytes with a unit that keeps small (CPU, tiny-model) peaks readable."""
    if value is None:
        return "-"
    if value < GIB:
        return f"{value / 1024**2:,.1f} MiB"
    return f"{value / GIB:,.2f} GiB"


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ parsing


def parse_lr(text: str, plan: Plan) -> list[float]:
    """ "band" -> the plan's sweep band (LR/3, LR, 3·LR); "a,b,c" -> those rates (0 < lr < 1)."""
    if text.strip().lower() == "band":
        band = plan.training.learning_rate_band
        if not band:
            lr = plan.training.learning_rate
            band = [float(f"{x:.3g}") for x in (lr / 3, lr, 3 * lr)]
        return list(band)
    out: list[float] = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise InputError.one(
                "--lr", f"{part!r} is not a number", "use band or e.g. 1e-4,3e-4,1e-3"
            ) from None
        if not 0 < v < 1:
            raise InputError.one("--lr", f"{v:g} is outside (0, 1)", "learning rates are in (0, 1)")
        out.append(v)
    if len(set(out)) != len(out):
        raise InputError.one("--lr", f"a rate is repeated in {text!r}", "name each once")
    return out


def parse_ranks(text: str) -> list[int]:
    try:
        out = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError.one("--rank", f"{text!r} is not a list of integers", "use e.g. 8,16,64") from None
    if not out or any(r < 1 or r > 4096 for r in out) or len(set(out)) != len(out):
        raise InputError.one(
            "--rank", f"{text!r}: ranks must be distinct integers in 1..4096", "use e.g. 8,16,64"
        )
    return out


def parse_targets(text: str) -> list[list[str]]:
    """ "attention,all-linear" -> [["attention"], ["all-linear"]]; "q_proj+v_proj" is one set."""
    out = [[t for t in part.split("+") if t] for part in text.split(",") if part.strip()]
    if not out:
        raise InputError.one("--targets", "no target set given", "use e.g. attention,all-linear")
    return out


def parse_methods(text: str) -> list[str]:
    """ "full,lora,qlora" -> ["full", "lora", "qlora"]; InputError on unknown or repeated names."""
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise InputError.one(
            "--methods",
            f"unknown method(s) {bad}" if bad else "no method given",
            "use a comma-separated subset of full,lora,qlora",
        )
    if len(set(methods)) != len(methods):
        raise InputError.one("--methods", f"a method is repeated in {text!r}", "name each once")
    return methods


# ----------------------------------------------------------------------------------- variants


def absolute_data(plan: Plan, plan_dir: Optional[Path]) -> Plan:
    """The plan with relative data paths made absolute (cwd first, then the plan's directory, as
    the runner resolves them), so variants written elsewhere read the same files."""
    if plan.data is None:
        return plan
    updates = {}
    for key in ("train_path", "eval_path", "probe_path"):
        value = getattr(plan.data, key)
        if not value or Path(value).expanduser().is_absolute():
            continue
        p = Path(value).expanduser()
        if not p.exists() and plan_dir is not None and (plan_dir / p).exists():
            p = plan_dir / p
        updates[key] = str(p.resolve())
    return plan.model_copy(update={"data": plan.data.model_copy(update=updates)}) if updates else plan


def _readvise(plan: Plan, pins: dict[str, Any], calibration: Optional[dict[str, float]] = None) -> Plan:
    from tuneplan.advisor.engine import advise

    inputs = plan.inputs.model_copy(update={"pins": plan.inputs.pins.model_copy(update=pins)})
    v = advise(inputs, calibration=calibration)
    return v.model_copy(update={"data": plan.data, "trust_remote_code": plan.trust_remote_code})


def advised_values(
    plan: Plan, axes: list[str], calibration: Optional[dict[str, float]] = None
) -> dict[str, Any]:
    """What the advisor itself picks on each axis for the plan's inputs (that pin removed)."""
    out: dict[str, Any] = {}
    for axis in axes:
        # the axes are Pins fields; the plan's method stays pinned unless method is the axis
        p = _readvise(plan, {"method": plan.method, axis: None}, calibration)
        if axis == "method":
            out[axis] = p.method
        elif axis == "learning_rate":
            out[axis] = p.training.learning_rate
        elif axis == "lora_rank":
            out[axis] = p.lora.rank if p.lora else None
        else:
            out[axis] = p.lora.target_modules if p.lora else None
    return out


def build_trials(
    plan: Plan, grid: dict[str, list[Any]], calibration: Optional[dict[str, float]] = None
) -> list[tuple[dict[str, Any], Plan]]:
    """Every combination of the grid's values, each as (values, re-advised plan)."""
    axes = list(grid)
    problems: list[Problem] = []
    if plan.method == "full" and "method" not in grid and ({"lora_rank", "target_modules"} & set(grid)):
        problems.append(
            Problem(
                "--rank/--targets",
                "the plan is full fine-tuning: it has no rank or targets",
                "sweep --lr, or advise a LoRA plan",
            )
        )
    if problems:
        raise InputError(problems)
    out = []
    for combo in itertools.product(*(grid[a] for a in axes)):
        values = dict(zip(axes, combo))
        method = values.get("method", plan.method)
        pins: dict[str, Any] = {"method": method}
        if "learning_rate" in values:
            pins["learning_rate"] = values["learning_rate"]
        if method != "full":
            if "lora_rank" in values:
                pins["lora_rank"] = values["lora_rank"]
            if "target_modules" in values:
                pins["target_modules"] = values["target_modules"]
        elif "lora_rank" in values or "target_modules" in values:
            continue
        out.append((values, _readvise(plan, pins, calibration)))
    return out


def _calibration(plan: Plan, db: Optional[str]) -> Optional[dict[str, float]]:
    """The calibration factors a calibrated plan was advised with (None: uncalibrated)."""
    if not plan.inputs.calibrated:
        return None
    from tuneplan.advisor.calibration import load_factors

    try:
        return load_factors(db, plan.inputs)
    except InputError as exc:
        _warn(
            f"warning: the plan was calibrated, but its factors cannot be loaded ({exc.problems[0]});"
            " variants use the uncalibrated estimator"
        )
        return None


def _variant_file(out: Path, axes: list[str], values: dict[str, Any], n: int) -> Path:
    """plan-NN.json; plan-<method>.json when the only axis is the method (as compare names them)."""
    return out / (f"plan-{values['method']}.json" if axes == ["method"] else f"plan-{n:02d}.json")


# -------------------------------------------------------------------------------------- judging


def pick_best(trials: list[Trial], tolerance: str) -> tuple[Optional[int], str]:
    """(index of the trial with the lowest eval loss within the forgetting tolerance, sentence)."""
    ok = [
        (i, t)
        for i, t in enumerate(trials)
        if t.status == "succeeded" and t.eval_loss_after is not None and math.isfinite(t.eval_loss_after)
    ]
    if not ok:
        return None, "No trial succeeded with an eval loss: nothing to pick."
    limit = FORGETTING_THRESHOLDS.get(tolerance)
    within = [(i, t) for i, t in ok if limit is None or t.forgetting is None or t.forgetting <= limit]
    pool = within or ok
    i, best = min(pool, key=lambda it: it[1].eval_loss_after)  # type: ignore[arg-type, return-value]
    forg = "" if best.forgetting is None else f", forgetting {best.forgetting:+.4f} nats"
    if within:
        tol = f" within the {tolerance} forgetting tolerance ({limit:g} nats)" if limit is not None else ""
        return i, (
            f"Best: {best.label} (eval loss {best.eval_loss_after:.4f}{forg}){tol}, "
            f"of {len(ok)} succeeded trials."
        )
    return i, (
        f"Best: {best.label} (eval loss {best.eval_loss_after:.4f}{forg}), but no trial kept "
        f"forgetting within the {tolerance} tolerance ({limit:g} nats): weigh it before using it."
    )


def trial_of(values: dict[str, Any], plan: Plan, result: Optional[RunResult]) -> Trial:
    """The Trial of variant ``plan`` (on ``values``) from its run's result (None: not run)."""
    m = result.measured if result is not None else None
    lfl = like_for_like(
        plan.memory.per_device_bytes,
        framework_overhead_of(plan),
        m.peak_bytes if m else None,
        m.runtime_bytes if m else 0,
    )
    t = Trial(
        values=values,
        method=plan.method,
        status=result.status if result else "not started",
        learning_rate=plan.training.learning_rate,
        lora_rank=plan.lora.rank if plan.lora else None,
        predicted_bytes=plan.memory.per_device_bytes,
        predicted_comparable_bytes=lfl.predicted_comparable_bytes,
    )
    if result is None:
        return t
    t.run_id, t.run_dir, t.error = result.run_id, result.run_dir, result.error
    t.eval_loss_after = result.eval_loss_after
    t.measured_bytes = lfl.measured_bytes
    t.measured_comparable_bytes = lfl.measured_comparable_bytes
    if result.eval_loss_before is not None and result.eval_loss_after is not None:
        t.learning = result.eval_loss_before - result.eval_loss_after
    if result.forgetting_loss_before is not None and result.forgetting_loss_after is not None:
        t.forgetting = result.forgetting_loss_after - result.forgetting_loss_before
    t.tokens_per_second, t.wall_seconds = result.tokens_per_second, result.wall_seconds
    return t


def tuned_plan(plan: Plan, sweep: Sweep) -> Plan:
    """The winning variant with a decision citing the sweep's evidence (its run ids)."""
    runs = ", ".join(
        f"{t.label}: {t.run_id or t.status}"
        + (f" eval {t.eval_loss_after:.4f}" if t.eval_loss_after is not None else "")
        for t in sweep.trials
    )
    advised = ", ".join(f"{k} {_fmt_value(v)}" for k, v in sweep.advised.items())
    steps = f"{sweep.max_steps} steps" if sweep.max_steps else "the plan's steps"
    msg = (
        f"Tuned by sweep {sweep.sweep_id} over {', '.join(sweep.axes)} ({len(sweep.trials)} trials, "
        f"same data, seed and {steps}; the advisor had {advised}). {sweep.sentence} Trials: {runs}."
    )
    decision = Decision(
        rule="TP060",
        name="sweep-tuned",
        message=msg,
        source=f"tuneplan sweep {sweep.sweep_id} (runs in DuckDB: sweep_trials)",
    )
    # The winner's values are pins of its inputs, so re-advising the tuned plan gives it back.
    return plan.model_copy(update={"decisions": [*plan.decisions, decision]})


# -------------------------------------------------------------------------------------- figure


def figure_rows(trials: list[Trial], axes: list[str], sweep_id: str) -> list[dict[str, Any]]:
    """The trials as the rows ``report`` reads from ``sweep_trials`` (one figure code for both)."""
    return [
        {
            "compare_id": sweep_id,
            "axis": ",".join(axes),
            "value": ",".join(_store_value(t.values[a]) for a in axes),
            "method": t.method,
            "learning_rate": t.learning_rate,
            "lora_rank": t.lora_rank,
            "status": t.status,
            "eval_loss_after": t.eval_loss_after,
        }
        for t in trials
    ]


def write_figure(trials: list[Trial], axes: list[str], sweep_id: str, path: Path) -> Path:
    """Eval loss vs each swept axis, one panel each (ledger/report.py sweep_figure, the code
    ``tuneplan report`` draws sweeps.png with), one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .ledger.report import sweep_figure

    sweep_figure(plt, figure_rows(trials, axes, sweep_id), path, axes=axes)
    return path


# ----------------------------------------------------------------------------------------- run


def _new_result(out: Path, before: set[str]) -> Optional[RunResult]:
    """The RunResult of the run directory that appeared under `out` since `before`."""
    for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in before):
        f = d / "result.json"
        if f.is_file():
            try:
                return RunResult.model_validate_json(f.read_text("utf-8"))
            except (OSError, ValueError):
                continue
    return None


def run_sweep(
    plan_path: str | Path,
    grid: dict[str, list[Any]],
    *,
    max_steps: Optional[int] = None,
    db: Optional[str] = None,
    output_dir: Optional[str] = None,
    data: Optional[str] = None,
    model_path: Optional[str] = None,
    progress: Optional[bool] = None,
    write_plan: Optional[str] = None,
    runner: Optional[Callable[..., RunResult]] = None,
    trust_remote_code: bool = False,
    id_prefix: str = "swp",
    kind: str = "sweep",
) -> Sweep:
    """Run every variant of the grid; a failed trial does not stop the others. Raises InputError
    for bad input (or when every trial failed input validation); on Ctrl-C the sweep so far is
    returned with ``interrupted`` set. ``kind`` names it in messages (compare: "compare")."""
    from tuneplan.base.fileio import write_text_atomic
    from tuneplan.base.planio import plan_to_json

    from .runner import load_plan

    if not grid:
        raise InputError.one(
            "--lr/--rank/--targets/--methods", "nothing to sweep", "give at least one axis, e.g. --lr band"
        )
    plan, plan_file, _ = load_plan(plan_path, trust_remote_code=trust_remote_code)
    plan = absolute_data(plan, plan_file.parent if plan_file else None)
    if "learning_rate" in grid and grid["learning_rate"] == ["band"]:
        grid["learning_rate"] = parse_lr("band", plan)
    calibration = _calibration(plan, db)
    variants = build_trials(plan, grid, calibration)
    axes = list(grid)
    sweep_id = new_run_id(id_prefix)
    out = Path(output_dir or Path("runs") / sweep_id).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tol = plan.inputs.task.forgetting_tolerance
    sw = Sweep(
        sweep_id=sweep_id,
        axes=axes,
        advised=advised_values(plan, axes, calibration),
        forgetting_tolerance=tol,
        max_steps=max_steps,
        output_dir=str(out.resolve()),
        plan_method=plan.method,
        domain_distance=plan.inputs.task.domain_distance,
    )
    if runner is None:
        from .runner import run_plan as runner  # type: ignore[no-redef]
    # --trust-remote-code reaches each variant's run only from the command line.
    trust = {"trust_remote_code": True} if trust_remote_code else {}
    axis_name = ",".join(axes)
    advised_text = ",".join(_store_value(sw.advised[a]) for a in axes)
    chosen = sw.advised.get("method", plan.method)
    plans: list[Plan] = []
    input_errors: list[InputError] = []
    for n, (values, v) in enumerate(variants):
        plans.append(v)
        vpath = _variant_file(out, axes, values, n)
        vpath.write_text(plan_to_json(v), encoding="utf-8")
        label = ", ".join(_fmt_value(x) for x in values.values())
        if not v.feasible or not v.memory.fits:
            t = trial_of(values, v, None)
            t.status, t.error = "skipped", "the advisor predicts it does not fit this hardware"
            sw.trials.append(t)
            _warn(f"{kind}: skipping {label}: {t.error}")
            continue
        before = {p.name for p in out.iterdir() if p.is_dir()}
        result: Optional[RunResult] = None
        try:
            result = runner(
                str(vpath),
                data=data,
                db=db,
                output_dir=str(out),
                max_steps=max_steps,
                progress=progress,
                model_path=model_path,
                **trust,
            )
        except InputError as exc:
            result = _new_result(out, before)
            if result is None:
                input_errors.append(exc)
                t = trial_of(values, v, None)
                t.error = exc.render()
                sw.trials.append(t)
                _warn(f"{kind}: {label} did not start:\n{exc.render()}")
                continue
        except KeyboardInterrupt:
            result = _new_result(out, before)
            sw.interrupted = True
        except Exception as exc:  # noqa: BLE001 - the runner recorded it; carry on with the rest
            result = _new_result(out, before)
            _warn(f"{kind}: {label} failed: {type(exc).__name__}: {exc}")
        t = trial_of(values, v, result)
        if result is None and sw.interrupted:
            t.status = "interrupted"
        sw.trials.append(t)
        if result is not None:
            value = ",".join(_store_value(values[a]) for a in axes)
            _record(db, sweep_id, result, v.method, chosen, tol, axis_name, value, advised_text)
        if sw.interrupted:
            break
    if input_errors and len(input_errors) == len(variants):
        raise input_errors[0]
    sw.best, sw.sentence = pick_best(sw.trials, tol)
    if sw.best is not None:
        tpath = Path(write_plan) if write_plan else out / "plan-tuned.json"
        write_text_atomic(tpath, plan_to_json(tuned_plan(plans[sw.best], sw)))
        sw.tuned_plan_path = str(tpath)
    try:  # a sweep over the method alone (compare) draws none: its table is the picture
        if set(axes) - {"method"}:
            sw.figure_path = str(write_figure(sw.trials, axes, sweep_id, out / "sweep.png"))
    except Exception as exc:  # noqa: BLE001 - the figure is a convenience; the numbers are stored
        _warn(f"warning: could not draw the sweep figure: {exc}")
    (out / "sweep.json").write_text(json.dumps(as_dict(sw), indent=2, default=str) + "\n")
    return sw


def _record(db, sweep_id, result, method, chosen, tol, axis, value, advised) -> None:
    try:
        from .ledger import record_comparison

        record_comparison(
            db,
            sweep_id,
            result.run_id,
            method,
            chosen,
            tol,
            axis=axis,
            value=value,
            advised_value=advised,
            run_dir=result.run_dir,
        )
    except Exception as exc:  # noqa: BLE001 - the run itself is recorded
        _warn(f"warning: could not record run {result.run_id} in {sweep_id}: {exc}")


def trial_dict(t: Trial) -> dict[str, Any]:
    return {**asdict(t), "memory_error": t.memory_error}


def as_dict(sw: Sweep) -> dict:
    return {**asdict(sw), "trials": [trial_dict(t) for t in sw.trials]}


def exit_code(sw: Any) -> int:
    """0 all trials succeeded, 1 any failed or was skipped, 130 interrupted (a Sweep or a
    Comparison: anything with ``trials`` and ``interrupted``)."""
    if sw.interrupted:
        return 130
    return 0 if sw.trials and all(t.status == "succeeded" for t in sw.trials) else 1


# ---------------------------------------------------------------------------------------- print

MEMORY_LEGEND = (
    "like-for-like memory, tensor bytes on both sides: mem pred = the plan's "
    "prediction less framework overhead (runtime / CUDA context, fragmentation); "
    "mem meas = the measured peak less its runtime (CPU: RSS before the model "
    "loaded; none on CUDA); mem err = (pred - meas) / meas; learning = eval loss before - after "
    "(higher is better); forgetting = probe loss after - before, nats (lower is better)"
)


def print_trials(
    trials: list[Trial],
    *,
    title: str,
    axes: list[str],
    advised: dict[str, Any],
    best: Optional[int],
    notes: list[str],
    console=None,
) -> None:
    """The trials side by side (one row each, the advised and the best marked), then ``notes``."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False, highlight=False)
    table = Table(title=escape(title), title_justify="left")
    head = ", ".join(axes)
    for name in (
        head,
        "status",
        "eval loss",
        "learning",
        "forgetting",
        "mem pred",
        "mem meas",
        "mem err",
        "tok/s",
        "wall s",
        "run",
    ):
        table.add_column(name, justify="left" if name in (head, "status", "run") else "right", no_wrap=True)
    styles = {"succeeded": "green", "failed": "red", "interrupted": "yellow"}
    for i, t in enumerate(trials):
        label = ", ".join(_fmt_value(t.values.get(a)) for a in axes)
        if all(_fmt_value(t.values.get(a)) == _fmt_value(advised.get(a)) for a in axes):
            label += " (advised)"
        if i == best:
            label += " (best)"
        err = t.memory_error
        table.add_row(
            escape(label),
            f"[{styles[t.status]}]{t.status}[/]" if t.status in styles else escape(t.status),
            "-" if t.eval_loss_after is None else f"{t.eval_loss_after:.4f}",
            "-" if t.learning is None else f"{t.learning:+.4f}",
            "-" if t.forgetting is None else f"{t.forgetting:+.4f}",
            _mem(t.predicted_comparable_bytes),
            _mem(t.measured_comparable_bytes),
            "-" if err is None else f"{err * 100:+.1f}%",
            "-" if t.tokens_per_second is None else f"{t.tokens_per_second:,.0f}",
            "-" if t.wall_seconds is None else f"{t.wall_seconds:.1f}",
            escape(t.run_id or "-"),
        )
    console.print(table)
    console.print(MEMORY_LEGEND, soft_wrap=True)
    for note in notes:
        console.print(escape(note), soft_wrap=True)


def print_sweep(sw: Sweep, console=None) -> None:
    notes = [sw.sentence]
    if sw.tuned_plan_path:
        notes.append(f"tuned plan: {sw.tuned_plan_path}")
    if sw.figure_path:
        notes.append(f"figure: {sw.figure_path}")
    print_trials(
        sw.trials,
        title=f"sweep {sw.sweep_id} over {', '.join(sw.axes)} ({sw.forgetting_tolerance} forgetting tolerance)",
        axes=sw.axes,
        advised=sw.advised,
        best=sw.best,
        notes=notes,
        console=console,
    )
