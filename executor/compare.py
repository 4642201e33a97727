"""``tuneplan compare``: run the same task as full, LoRA and QLoRA side by side, and say whether
the evidence supports the advisor's pick for the user's forgetting tolerance.

Each variant is re-advised from the plan's own ``inputs`` with ``pins.method`` set, so it gets that
method's advised learning rate, rank, quantisation and memory settings; the plan's ``data`` is kept
(relative paths made absolute). Runs go through :func:`tuneplan.executor.runner.run_plan` with the
same data and step budget, and each is recorded in the ``comparisons`` table. The advisor's pick is
what it advises with the method pin removed. The judging logic is in :func:`judge` and
docs/checks.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tuneplan.base.errors import InputError
from tuneplan.base.planio import new_run_id
from tuneplan.schemas import METHODS, Plan, RunResult

from .ledger.check import FORGETTING_THRESHOLDS, LEARNING_MATCH_SHARE
from .ledger.memory_compare import framework_overhead_of, like_for_like, relative_error

GIB = 1024**3
NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


@dataclass
class Outcome:
    """What one method's run gave."""

    method: str
    status: str
    """succeeded | failed | interrupted | running | skipped (not run) | not started (input error)."""
    run_id: Optional[str] = None
    run_dir: Optional[str] = None
    predicted_bytes: Optional[int] = None
    predicted_comparable_bytes: Optional[int] = None
    """The prediction less its framework overhead: predicted tensor bytes (memory_compare.py)."""
    measured_bytes: Optional[int] = None
    """The measured peak (MeasuredMemory.peak_bytes)."""
    measured_comparable_bytes: Optional[int] = None
    """The measured peak less its runtime_bytes: measured tensor bytes (memory_compare.py)."""
    learning: Optional[float] = None
    """eval_loss_before - eval_loss_after (positive: learned)."""
    forgetting: Optional[float] = None
    """forgetting_loss_after - forgetting_loss_before (positive: forgot), nats."""
    tokens_per_second: Optional[float] = None
    wall_seconds: Optional[float] = None
    error: Optional[str] = None

    @property
    def memory_error(self) -> Optional[float]:
        """Like-for-like (predicted - measured) / measured on tensor bytes (memory_compare.py)."""
        return relative_error(self.predicted_comparable_bytes, self.measured_comparable_bytes)


@dataclass
class Comparison:
    compare_id: str
    advised_method: str
    plan_method: str
    forgetting_tolerance: str
    domain_distance: str
    output_dir: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    verdict: str = "undecided"
    sentence: str = ""
    interrupted: bool = False


# ------------------------------------------------------------------------------------ variants


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


def _absolute_data(plan: Plan, plan_dir: Optional[Path]) -> Plan:
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


def build_variants(
    plan: Plan, methods: list[str], calibration: Optional[dict[str, float]] = None
) -> tuple[str, dict[str, Plan]]:
    """(the advisor's unpinned pick, {method: plan re-advised with pins.method = method})."""
    from tuneplan.advisor.engine import advise

    inputs = plan.inputs
    unpinned = inputs.model_copy(update={"pins": inputs.pins.model_copy(update={"method": None})})
    advised = advise(unpinned, calibration=calibration).method
    variants = {}
    for m in methods:
        pinned = inputs.model_copy(update={"pins": inputs.pins.model_copy(update={"method": m})})
        v = advise(pinned, calibration=calibration)
        variants[m] = v.model_copy(update={"data": plan.data, "trust_remote_code": plan.trust_remote_code})
    return advised, variants


# ------------------------------------------------------------------------------------- judging


def judge(pick: str, tolerance: str, outcomes: dict[str, Outcome]) -> tuple[str, str]:
    """("supported" | "not supported" | "undecided", one sentence). docs/checks.md states the logic:

    the pick must have succeeded, learned (learning > 0) and kept forgetting within the tolerance's
    threshold; then, against whichever comparators succeeded:
      full  -> it learned at least as much as every other method (the reason to pay its cost);
      lora/qlora, low tolerance -> it forgot no more than full fine-tuning (TP021);
      lora/qlora, medium/high   -> it learned >= 80 % of what full learned (LoRA matches, TP023);
      qlora -> also >= 80 % of LoRA's learning with a lower measured peak than LoRA (TP023).
    """
    name = NAMES.get(pick, pick)
    limit = FORGETTING_THRESHOLDS.get(tolerance)
    head = f"the advisor's pick of {name} for {tolerance} forgetting tolerance"
    ok = {m: o for m, o in outcomes.items() if o.status == "succeeded" and o.learning is not None}
    if pick not in ok:
        why = (
            "was not part of the comparison"
            if pick not in outcomes
            else f"run did not succeed ({outcomes[pick].status})"
        )
        return "undecided", f"The evidence cannot judge {head}: its {name} {why}."
    p = ok[pick]
    good: list[str] = []
    bad: list[str] = []
    untested: list[str] = []
    if p.learning > 0:
        good.append(f"{name} learned ({p.learning:+.3f} eval loss)")
    else:
        bad.append(f"{name} did not learn ({p.learning:+.3f} eval loss)")
    if p.forgetting is not None and limit is not None:
        if p.forgetting <= limit:
            good.append(f"forgot {p.forgetting:+.3f} nats, within the {tolerance} limit of {limit}")
        else:
            bad.append(f"forgot {p.forgetting:+.3f} nats, beyond the {tolerance} limit of {limit}")

    def need(m: str) -> Optional[Outcome]:
        if m in ok:
            return ok[m]
        untested.append(f"{NAMES[m]} did not {'run' if m not in outcomes else 'succeed'}")
        return None

    if pick == "full":
        others = [ok[m] for m in ok if m != "full"]
        if not others:
            untested.append("no other method succeeded")
        else:
            best = max(others, key=lambda o: o.learning)
            if p.learning >= best.learning:
                good.append(f"learned most ({p.learning:+.3f} vs {NAMES[best.method]} {best.learning:+.3f})")
            else:
                bad.append(f"{NAMES[best.method]} learned more ({best.learning:+.3f} vs {p.learning:+.3f})")
    else:
        full = need("full")
        if full is not None:
            if tolerance == "low":
                if p.forgetting is None or full.forgetting is None:
                    untested.append("forgetting was not measured")
                elif p.forgetting <= full.forgetting:
                    good.append(
                        f"forgot no more than full fine-tuning ({p.forgetting:+.3f} vs "
                        f"{full.forgetting:+.3f} nats)"
                    )
                else:
                    bad.append(
                        f"forgot more than full fine-tuning ({p.forgetting:+.3f} vs "
                        f"{full.forgetting:+.3f} nats)"
                    )
            elif full.learning > 0 and p.learning < LEARNING_MATCH_SHARE * full.learning:
                bad.append(
                    f"learned under {LEARNING_MATCH_SHARE:.0%} of full fine-tuning "
                    f"({p.learning:+.3f} vs {full.learning:+.3f})"
                )
            else:
                good.append(
                    f"learned at least {LEARNING_MATCH_SHARE:.0%} of full fine-tuning "
                    f"({p.learning:+.3f} vs {full.learning:+.3f})"
                )
        if pick == "qlora":
            lora = need("lora")
            if lora is not None:
                matches = p.learning >= (
                    LEARNING_MATCH_SHARE * lora.learning if lora.learning > 0 else lora.learning
                )
                less = (p.measured_bytes or 0) < (lora.measured_bytes or 0)
                text = (
                    f"({p.learning:+.3f} vs {lora.learning:+.3f} learning, "
                    f"{_mem(p.measured_bytes)} vs {_mem(lora.measured_bytes)})"
                )
                if matches and less:
                    good.append(f"matched LoRA with less memory {text}")
                else:
                    bad.append(f"did not match LoRA with less memory {text}")
    tail = f" (not tested: {'; '.join(untested)})" if untested else ""
    if bad:
        return "not supported", f"The evidence does not support {head}: {'; '.join(bad)}{tail}."
    return "supported", f"The evidence supports {head}: {'; '.join(good)}{tail}."


# ------------------------------------------------------------------------------------- running


def _mem(value) -> str:
    """Bytes with a unit that keeps small (CPU, tiny-model) peaks readable."""
    if value is None:
        return "-"
    if value < GIB:
        return f"{value / 1024**2:,.1f} MiB"
    return f"{value / GIB:,.2f} GiB"


def _outcome(method: str, plan: Plan, result: Optional[RunResult]) -> Outcome:
    m = result.measured if result is not None else None
    lfl = like_for_like(
        plan.memory.per_device_bytes,
        framework_overhead_of(plan),
        m.peak_bytes if m else None,
        m.runtime_bytes if m else 0,
    )
    o = Outcome(
        method=method,
        status=result.status if result else "not started",
        predicted_bytes=plan.memory.per_device_bytes,
        predicted_comparable_bytes=lfl.predicted_comparable_bytes,
    )
    if result is None:
        return o
    o.run_id, o.run_dir, o.error = result.run_id, result.run_dir, result.error
    o.measured_bytes = lfl.measured_bytes
    o.measured_comparable_bytes = lfl.measured_comparable_bytes
    if result.eval_loss_before is not None and result.eval_loss_after is not None:
        o.learning = result.eval_loss_before - result.eval_loss_after
    if result.forgetting_loss_before is not None and result.forgetting_loss_after is not None:
        o.forgetting = result.forgetting_loss_after - result.forgetting_loss_before
    o.tokens_per_second, o.wall_seconds = result.tokens_per_second, result.wall_seconds
    return o


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


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_comparison(
    plan_path: str | Path,
    methods: list[str],
    *,
    max_steps: Optional[int] = None,
    db: Optional[str] = None,
    output_dir: Optional[str] = None,
    data: Optional[str] = None,
    model_path: Optional[str] = None,
    progress: Optional[bool] = None,
    runner: Optional[Callable[..., RunResult]] = None,
    trust_remote_code: bool = False,
) -> Comparison:
    """Run every method's variant of the plan; a failed run does not stop the others. Raises
    InputError for a bad plan (or when every variant failed input validation). On Ctrl-C the
    comparison so far is returned with ``interrupted`` set."""
    from .runner import load_plan

    plan, plan_file, _ = load_plan(plan_path, trust_remote_code=trust_remote_code)
    plan = _absolute_data(plan, plan_file.parent if plan_file else None)
    calibration = None
    if plan.inputs.calibrated:
        from tuneplan.advisor.calibration import load_factors

        try:
            calibration = load_factors(db, plan.inputs)
        except InputError as exc:
            _warn(
                f"warning: the plan was calibrated, but its factors cannot be loaded ({exc.problems[0]});"
                " variants use the uncalibrated estimator"
            )
    advised, variants = build_variants(plan, methods, calibration)
    compare_id = new_run_id("cmp")
    out = Path(output_dir or Path("runs") / compare_id).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    task = plan.inputs.task
    cmp = Comparison(
        compare_id=compare_id,
        advised_method=advised,
        plan_method=plan.method,
        forgetting_tolerance=task.forgetting_tolerance,
        domain_distance=task.domain_distance,
        output_dir=str(out.resolve()),
    )
    if runner is None:
        from .runner import run_plan as runner  # type: ignore[no-redef]
    from tuneplan.base.planio import plan_to_json

    input_errors: list[InputError] = []
    for m in methods:
        v = variants[m]
        vpath = out / f"plan-{m}.json"
        vpath.write_text(plan_to_json(v), encoding="utf-8")
        if not v.feasible or not v.memory.fits:
            o = _outcome(m, v, None)
            o.status, o.error = "skipped", "the advisor predicts it does not fit this hardware"
            cmp.outcomes[m] = o
            _warn(f"compare: skipping {m}: {o.error}")
            continue
        before = {p.name for p in out.iterdir() if p.is_dir()}
        result: Optional[RunResult] = None
        try:
            # --trust-remote-code reaches each variant's run only from the command line.
            trust = {"trust_remote_code": True} if trust_remote_code else {}
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
                o = _outcome(m, v, None)
                o.error = exc.render()
                cmp.outcomes[m] = o
                _warn(f"compare: {m} did not start:\n{exc.render()}")
                continue
        except KeyboardInterrupt:
            result = _new_result(out, before)
            cmp.interrupted = True
        except Exception as exc:  # noqa: BLE001 - recorded by the runner; carry on with the rest
            result = _new_result(out, before)
            _warn(f"compare: {m} failed: {type(exc).__name__}: {exc}")
        o = _outcome(m, v, result)
        if result is None and cmp.interrupted:
            o.status = "interrupted"
        cmp.outcomes[m] = o
        if result is not None:
            _record(db, compare_id, result.run_id, m, advised, task.forgetting_tolerance, result.run_dir)
        if cmp.interrupted:
            break
    if input_errors and len(input_errors) == len(methods):
        raise input_errors[0]
    cmp.verdict, cmp.sentence = judge(advised, task.forgetting_tolerance, cmp.outcomes)
    (out / "comparison.json").write_text(json.dumps(_as_dict(cmp), indent=2, default=str) + "\n")
    return cmp


def _record(db, compare_id, run_id, method, advised, tolerance, run_dir=None) -> None:
    try:
        from .ledger import record_comparison

        record_comparison(db, compare_id, run_id, method, advised, tolerance, run_dir=run_dir)
    except Exception as exc:  # noqa: BLE001 - the runs themselves are recorded
        _warn(f"warning: could not record run {run_id} in comparison {compare_id}: {exc}")


def _as_dict(cmp: Comparison) -> dict:
    from dataclasses import asdict

    d = asdict(cmp)
    for m, o in cmp.outcomes.items():
        d["outcomes"][m]["memory_error"] = o.memory_error
    return d


def exit_code(cmp: Comparison) -> int:
    """0 all ran and succeeded, 1 any failed or was skipped, 130 interrupted."""
    if cmp.interrupted:
        return 130
    return 0 if all(o.status == "succeeded" for o in cmp.outcomes.values()) else 1


def print_comparison(cmp: Comparison, console=None) -> None:
    """The side-by-side table and the one-sentence verdict."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False, highlight=False)
    table = Table(
        title=escape(
            f"comparison {cmp.compare_id} ({cmp.domain_distance} domain, "
            f"{cmp.forgetting_tolerance} forgetting tolerance)"
        ),
        title_justify="left",
    )
    for name in (
        "method",
        "status",
        "alloc pred",
        "mem meas",
        "mem err",
        "learning",
        "forgetting",
        "tok/s",
        "wall s",
        "run",
    ):
        table.add_column(
            name, justify="left" if name in ("method", "status", "run") else "right", no_wrap=True
        )
    styles = {"succeeded": "green", "failed": "red", "interrupted": "yellow"}
    for m, o in cmp.outcomes.items():
        label = m + (" (advised)" if m == cmp.advised_method else "")
        st = f"[{styles[o.status]}]{o.status}[/]" if o.status in styles else escape(o.status)
        err = o.memory_error
        table.add_row(
            escape(label),
            st,
            _mem(o.predicted_comparable_bytes),
            _mem(o.measured_comparable_bytes),
            "-" if err is None else f"{err * 100:+.1f}%",
            "-" if o.learning is None else f"{o.learning:+.4f}",
            "-" if o.forgetting is None else f"{o.forgetting:+.4f}",
            "-" if o.tokens_per_second is None else f"{o.tokens_per_second:,.0f}",
            "-" if o.wall_seconds is None else f"{o.wall_seconds:.1f}",
            escape(o.run_id or "-"),
        )
    console.print(table)
    console.print(
        "like-for-like memory, tensor bytes on both sides: mem pred = the plan's "
        "prediction less framework overhead (runtime / CUDA context, fragmentation); "
        "mem meas = the measured peak less its runtime (CPU: RSS before the model "
        "loaded; none on CUDA); mem err = (pred - meas) / meas; learning = eval loss before - after (higher is better); "
        "forgetting = probe loss after - before, nats (lower is better)",
        soft_wrap=True,
    )
    if cmp.plan_method != cmp.advised_method:
        console.print(
            escape(
                f"note: the plan ran {cmp.plan_method} (pinned); the advisor's own pick "
                f"is {cmp.advised_method}"
            )
        )
    console.print(escape(cmp.sentence), soft_wrap=True)
