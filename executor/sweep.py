"""``tuneplan sweep``: spend the tuning budget on the levers — learning rate, rank, target modules.

Every variant is the plan's own ``inputs`` re-advised with the swept values pinned (so each one
gets a consistent memory estimate and fit), the plan's method pinned, and the plan's data kept.
All variants run through :func:`tuneplan.executor.runner.run_plan` on the same data, seed and step
budget. Each trial is recorded in the ``comparisons`` table with its axis and value (``tuneplan
compare`` is the same table with axis "method"); ``sweep_trials`` joins them to the runs.

The pick: the lowest eval loss among the succeeded trials whose forgetting (probe loss after -
before) stays within the user's tolerance (executor/check.py FORGETTING_THRESHOLDS); when none
does, the lowest eval loss overall, and the sweep says so. The tuned plan is the winning variant
with a decision (TP060 sweep-tuned) citing the sweep and its run ids.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tuneplan.base.errors import InputError, Problem
from tuneplan.base.planio import new_run_id
from tuneplan.schemas import Decision, Plan, RunResult

from .ledger.check import FORGETTING_THRESHOLDS
from .compare import _absolute_data, _mem, _new_result, _outcome, _warn

AXES = ("method", "learning_rate", "lora_rank", "target_modules")


@dataclass
class Trial:
    """One variant of the sweep and what its run gave."""

    values: dict[str, Any]
    """Axis -> value this trial took (only the swept axes)."""
    status: str = "not started"
    run_id: Optional[str] = None
    learning_rate: Optional[float] = None
    lora_rank: Optional[int] = None
    eval_loss_after: Optional[float] = None
    learning: Optional[float] = None
    forgetting: Optional[float] = None
    measured_bytes: Optional[int] = None
    tokens_per_second: Optional[float] = None
    wall_seconds: Optional[float] = None
    error: Optional[str] = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.values.items())


@dataclass
class Sweep:
    sweep_id: str
    axes: list[str]
    advised: dict[str, Any]
    """The advisor's own value on each swept axis (its plan without that pin)."""
    forgetting_tolerance: str
    max_steps: Optional[int]
    output_dir: str
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


# ----------------------------------------------------------------------------------- variants


def _readvise(plan: Plan, pins: dict[str, Any]) -> Plan:
    from tuneplan.advisor.engine import advise

    inputs = plan.inputs.model_copy(update={"pins": plan.inputs.pins.model_copy(update=pins)})
    v = advise(inputs)
    return v.model_copy(update={"data": plan.data, "trust_remote_code": plan.trust_remote_code})


def advised_values(plan: Plan, axes: list[str]) -> dict[str, Any]:
    """What the advisor itself picks on each axis for the plan's inputs (that pin removed)."""
    out: dict[str, Any] = {}
    for axis in axes:
        # the axes are Pins fields; the plan's method stays pinned unless method is the axis
        pins: dict[str, Any] = {"method": plan.method, axis: None}
        p = _readvise(plan, pins)
        if axis == "method":
            out[axis] = p.method
        elif axis == "learning_rate":
            out[axis] = p.training.learning_rate
        elif axis == "lora_rank":
            out[axis] = p.lora.rank if p.lora else None
        else:
            out[axis] = p.lora.target_modules if p.lora else None
    return out


def build_trials(plan: Plan, grid: dict[str, list[Any]]) -> list[tuple[dict[str, Any], Plan]]:
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
        out.append((values, _readvise(plan, pins)))
    return out


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


def _trial(values: dict[str, Any], plan: Plan, result: Optional[RunResult]) -> Trial:
    o = _outcome(plan.method, plan, result)
    t = Trial(
        values=values,
        status=o.status,
        run_id=o.run_id,
        learning_rate=plan.training.learning_rate,
        lora_rank=plan.lora.rank if plan.lora else None,
        learning=o.learning,
        forgetting=o.forgetting,
        measured_bytes=o.measured_bytes,
        tokens_per_second=o.tokens_per_second,
        wall_seconds=o.wall_seconds,
        error=o.error,
    )
    if result is not None:
        t.eval_loss_after = result.eval_loss_after
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
    # The winner's values become pins, so re-advising the tuned plan's inputs gives it back.
    return plan.model_copy(update={"decisions": [*plan.decisions, decision]})


# -------------------------------------------------------------------------------------- figure


def write_figure(trials: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Eval loss vs learning rate (log axis) and, when ranks differ, vs rank; one PNG.
    ``trials`` are dicts with learning_rate, lora_rank, eval_loss_after, status."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ok = [t for t in trials if t.get("status") == "succeeded" and t.get("eval_loss_after") is not None]
    ranks = sorted({t["lora_rank"] for t in ok if t.get("lora_rank") is not None})
    lrs = sorted({t["learning_rate"] for t in ok})
    panels = 2 if len(ranks) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for r in ranks or [None]:
        pts = sorted((t["learning_rate"], t["eval_loss_after"]) for t in ok if t.get("lora_rank") == r)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"r={r}" if r else None)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("eval loss after")
    ax.set_title(title or "eval loss vs learning rate")
    if ranks and len(ranks) > 1:
        ax.legend()
        ax2 = axes[0][1]
        for lr in lrs:
            pts = sorted((t["lora_rank"], t["eval_loss_after"]) for t in ok if t["learning_rate"] == lr)
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"lr={lr:.3g}")
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("LoRA rank")
        ax2.set_ylabel("eval loss after")
        ax2.set_title("eval loss vs rank")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- run


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
) -> Sweep:
    """Run every variant of the grid; a failed trial does not stop the others. Raises InputError
    for bad input; on Ctrl-C the sweep so far is returned with ``interrupted`` set."""
    from tuneplan.base.planio import plan_to_json

    from .runner import load_plan

    if not grid:
        raise InputError.one(
            "--lr/--rank/--targets/--methods", "nothing to sweep", "give at least one axis, e.g. --lr band"
        )
    plan, plan_file, _ = load_plan(plan_path)
    plan = _absolute_data(plan, plan_file.parent if plan_file else None)
    if "learning_rate" in grid and grid["learning_rate"] == ["band"]:
        grid["learning_rate"] = parse_lr("band", plan)
    variants = build_trials(plan, grid)
    axes = list(grid)
    sweep_id = new_run_id("swp")
    out = Path(output_dir or Path("runs") / sweep_id).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tol = plan.inputs.task.forgetting_tolerance
    sw = Sweep(
        sweep_id=sweep_id,
        axes=axes,
        advised=advised_values(plan, axes),
        forgetting_tolerance=tol,
        max_steps=max_steps,
        output_dir=str(out.resolve()),
    )
    if runner is None:
        from .runner import run_plan as runner  # type: ignore[no-redef]
    axis_name = ",".join(axes)
    advised_text = ",".join(_store_value(sw.advised[a]) for a in axes)
    plans: list[Plan] = []
    for n, (values, v) in enumerate(variants):
        plans.append(v)
        vpath = out / f"plan-{n:02d}.json"
        vpath.write_text(plan_to_json(v), encoding="utf-8")
        if not v.feasible or not v.memory.fits:
            t = _trial(values, v, None)
            t.status, t.error = "skipped", "the advisor predicts it does not fit this hardware"
            sw.trials.append(t)
            _warn(f"sweep: skipping {t.label}: {t.error}")
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
            )
        except InputError:
            result = _new_result(out, before)
            if result is None:
                raise
        except KeyboardInterrupt:
            result = _new_result(out, before)
            sw.interrupted = True
        except Exception as exc:  # noqa: BLE001 - the runner recorded it; carry on with the rest
            result = _new_result(out, before)
            _warn(f"sweep: {values} failed: {type(exc).__name__}: {exc}")
        t = _trial(values, v, result)
        if result is None and sw.interrupted:
            t.status = "interrupted"
        sw.trials.append(t)
        if result is not None:
            _record(
                db,
                sweep_id,
                result.run_id,
                v.method,
                plan.method,
                tol,
                axis_name,
                ",".join(_store_value(values[a]) for a in axes),
                advised_text,
                result.run_dir,
            )
        if sw.interrupted:
            break
    sw.best, sw.sentence = pick_best(sw.trials, tol)
    if sw.best is not None:
        tuned = tuned_plan(plans[sw.best], sw)
        tpath = Path(write_plan) if write_plan else out / "plan-tuned.json"
        from tuneplan.base.fileio import write_text_atomic

        write_text_atomic(tpath, plan_to_json(tuned))
        sw.tuned_plan_path = str(tpath)
    try:
        rows = [
            {
                "learning_rate": t.learning_rate,
                "lora_rank": t.lora_rank,
                "status": t.status,
                "eval_loss_after": t.eval_loss_after,
            }
            for t in sw.trials
        ]
        sw.figure_path = str(write_figure(rows, out / "sweep.png", f"sweep {sweep_id}"))
    except Exception as exc:  # noqa: BLE001 - the figure is a convenience; the numbers are stored
        _warn(f"warning: could not draw the sweep figure: {exc}")
    (out / "sweep.json").write_text(json.dumps(as_dict(sw), indent=2, default=str) + "\n")
    return sw


def _record(db, sweep_id, run_id, method, plan_method, tol, axis, value, advised, run_dir=None) -> None:
    try:
        from .ledger import record_comparison

        record_comparison(
            db,
            sweep_id,
            run_id,
            method,
            plan_method,
            tol,
            axis=axis,
            value=value,
            advised_value=advised,
            run_dir=run_dir,
        )
    except Exception as exc:  # noqa: BLE001 - the run itself is recorded
        _warn(f"warning: could not record run {run_id} in sweep {sweep_id}: {exc}")


def as_dict(sw: Sweep) -> dict:
    return asdict(sw)


def exit_code(sw: Sweep) -> int:
    """0 all trials succeeded, 1 any failed or was skipped, 130 interrupted."""
    if sw.interrupted:
        return 130
    return 0 if sw.trials and all(t.status == "succeeded" for t in sw.trials) else 1


def print_sweep(sw: Sweep, console=None) -> None:
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False, highlight=False)
    table = Table(
        title=escape(
            f"sweep {sw.sweep_id} over {', '.join(sw.axes)} ({sw.forgetting_tolerance} forgetting tolerance)"
        ),
        title_justify="left",
    )
    for name in ("trial", "status", "eval loss", "learning", "forgetting", "peak mem", "tok/s", "run"):
        table.add_column(
            name, justify="left" if name in ("trial", "status", "run") else "right", no_wrap=True
        )
    for i, t in enumerate(sw.trials):
        marks = []
        if i == sw.best:
            marks.append("best")
        if all(_fmt_value(t.values[a]) == _fmt_value(sw.advised.get(a)) for a in sw.axes):
            marks.append("advised")
        label = t.label + (f" ({', '.join(marks)})" if marks else "")
        table.add_row(
            escape(label),
            escape(t.status),
            "-" if t.eval_loss_after is None else f"{t.eval_loss_after:.4f}",
            "-" if t.learning is None else f"{t.learning:+.4f}",
            "-" if t.forgetting is None else f"{t.forgetting:+.4f}",
            _mem(t.measured_bytes),
            "-" if t.tokens_per_second is None else f"{t.tokens_per_second:,.0f}",
            escape(t.run_id or "-"),
        )
    console.print(table)
    console.print(escape(sw.sentence), soft_wrap=True)
    if sw.tuned_plan_path:
        console.print(escape(f"tuned plan: {sw.tuned_plan_path}"), soft_wrap=True)
    if sw.figure_path:
        console.print(escape(f"figure: {sw.figure_path}"), soft_wrap=True)
