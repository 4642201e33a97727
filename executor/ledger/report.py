"""``tuneplan report``: figures and a Markdown report from the run database.

Writes into the output directory:
  memory.png               predicted vs measured peak memory per run, like-for-like (tensor
                           bytes: prediction less framework overhead, measurement less runtime),
                           with y = x
  learning_forgetting.png  learning (eval loss before - after) vs forgetting (probe loss after -
                           before) per run, coloured by method, with the tolerance thresholds
  loss_curves.png          training loss per optimizer step (metrics table), one line per run
  sweeps.png               eval loss after vs learning rate, vs LoRA rank (and vs target
                           modules when swept), one line per `tuneplan sweep` and value of its
                           other axes (sweep_trials view)
  eval_curves.png          eval loss (learning) and probe loss (forgetting) over optimizer steps
                           for runs evaluated during training (training.eval_every_steps), and
                           learning against forgetting step by step, best step starred (the
                           run_eval_steps view over the metrics rows)
  report.md                the figures, a per-run table with `tuneplan check` verdicts, and the
                           rule audit
matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .check import FORGETTING_THRESHOLDS, audit_rules, check_runs
from .connect import DBPath, default_db_path, open_read

FIGURES = ("memory.png", "learning_forgetting.png", "loss_curves.png", "sweeps.png", "eval_curves.png")
COLORS = {"full": "tab:red", "lora": "tab:blue", "qlora": "tab:green"}
MIB = 1024**2


def _rows(con, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _memory_figure(plt, runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    pts = []
    for r in runs:
        pred, meas = r["predicted_comparable_bytes"], r["measured_comparable_bytes"]
        if pred is not None and meas is not None and pred > 0 and meas > 0:
            pts.append((r["method"], pred, meas))
    if pts:
        for method in sorted({m for m, _, _ in pts}):
            sel = [p for p in pts if p[0] == method]
            ax.scatter(
                [p[1] / MIB for p in sel],
                [p[2] / MIB for p in sel],
                label=method,
                color=COLORS.get(method),
                alpha=0.8,
            )
        lo = min(min(p[1], p[2]) for p in pts) / MIB
        hi = max(max(p[1], p[2]) for p in pts) / MIB
        lo, hi = max(lo * 0.8, 1e-3), hi * 1.25
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x (exact)")
        ax.plot([lo, hi], [lo * 1.25, hi * 1.25], ":", color="gray", lw=1, label="25% under-prediction")
        from matplotlib.ticker import FormatStrFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no run with a measured peak")
    ax.set_xlabel("predicted peak, MiB (excl. framework overhead)")
    ax.set_ylabel("measured peak, MiB (excl. runtime)")
    ax.set_title("Memory: predicted vs measured")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _learning_figure(plt, checks: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    pts = [c for c in checks if c["learning"] is not None and c["forgetting"] is not None]
    if pts:
        for method in sorted({c["method"] for c in pts}):
            sel = [c for c in pts if c["method"] == method]
            ax.scatter(
                [c["forgetting"] for c in sel],
                [c["learning"] for c in sel],
                label=method,
                color=COLORS.get(method),
                alpha=0.8,
            )
        top = max(c["forgetting"] for c in pts)
        for level, limit in FORGETTING_THRESHOLDS.items():
            if limit <= max(top * 1.5, FORGETTING_THRESHOLDS["low"]):
                ax.axvline(limit, ls=":", color="gray", lw=1)
                ax.text(limit, ax.get_ylim()[1], f" {level}", fontsize=7, color="gray", va="top")
        ax.axhline(0, color="black", lw=0.5)
        ax.axvline(0, color="black", lw=0.5)
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no run measured learning and forgetting")
    ax.set_xlabel("forgetting: probe loss after - before (nats, lower is better)")
    ax.set_ylabel("learning: eval loss before - after (higher is better)")
    ax.set_title("Learning vs forgetting")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _loss_figure(plt, metrics: list[dict], methods: dict[str, str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_run: dict[str, list[dict]] = {}
    for m in metrics:
        if m["loss"] is not None:
            by_run.setdefault(m["run_id"], []).append(m)
    if by_run:
        for run_id, rows in sorted(by_run.items()):
            method = methods.get(run_id, "?")
            ax.plot(
                [r["step"] for r in rows],
                [r["loss"] for r in rows],
                marker="." if len(rows) < 30 else None,
                color=COLORS.get(method),
                alpha=0.8,
                label=f"{method} {run_id[-6:]}",
            )
        if len(by_run) <= 12:
            ax.legend(fontsize=7)
    else:
        _empty(ax, "no metrics recorded")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Loss curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _eval_curves_figure(plt, curves: dict[str, list[dict]], methods: dict[str, str], path: Path) -> None:
    """Learning (eval loss) and forgetting (probe loss) over optimizer steps, and the two against
    each other step by step (forgetting on x, learning on y: the learning-vs-forgetting curve), for
    runs evaluated during training (training.eval_every_steps; the run_eval_steps view), best
    step starred."""
    fig, (ax_e, ax_p, ax_lf) = plt.subplots(1, 3, figsize=(15, 4.2))
    if curves:
        for run_id, rows in sorted(curves.items()):
            color = COLORS.get(methods.get(run_id, "?"))
            label = f"{methods.get(run_id, '?')} {run_id[-6:]}"
            ev = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
            pr = [(r["step"], r["probe_loss"]) for r in rows if r.get("probe_loss") is not None]
            lf = [
                (r["forgetting"], r["learning"], r["step"])
                for r in rows
                if r.get("learning") is not None and r.get("forgetting") is not None
            ]
            if ev:
                ax_e.plot(*zip(*ev), marker=".", color=color, alpha=0.8, label=label)
                best = min(ev, key=lambda x: x[1])
                ax_e.scatter([best[0]], [best[1]], marker="*", s=120, color=color, zorder=3)
            if pr:
                ax_p.plot(*zip(*pr), marker=".", color=color, alpha=0.8, label=label)
            if lf:
                ax_lf.plot(
                    [x for x, _, _ in lf],
                    [y for _, y, _ in lf],
                    marker=".",
                    color=color,
                    alpha=0.8,
                    label=label,
                )
                for x, y, step in (lf[0], lf[-1]):
                    ax_lf.annotate(f"{step}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
                best_rows = [r for r in rows if r.get("is_best_step") and r.get("learning") is not None]
                for r in best_rows:
                    ax_lf.scatter(
                        [r["forgetting"]], [r["learning"]], marker="*", s=120, color=color, zorder=3
                    )
        if len(curves) <= 12:
            ax_e.legend(fontsize=7)
    else:
        for ax in (ax_e, ax_p, ax_lf):
            _empty(ax, "no run evaluated during training\n(training.eval_every_steps)")
    ax_e.set_title("Learning: eval loss over steps (star: best step)")
    ax_p.set_title("Forgetting: probe loss over steps")
    ax_lf.set_title("Learning vs forgetting, step by step")
    for ax in (ax_e, ax_p):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
    ax_lf.set_xlabel("forgetting (probe loss - before), nats")
    ax_lf.set_ylabel("learning (eval loss before - now), nats")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _curves(con) -> dict[str, list[dict]]:
    """Per-step eval/probe losses (and learning/forgetting) of runs evaluated during training: the
    run_eval_steps view over the ``metrics`` rows (an old database's runs: `tuneplan runs ingest`)."""
    out: dict[str, list[dict]] = {}
    for row in _rows(
        con,
        "SELECT run_id, step, eval_loss, probe_loss, step_learning AS learning, "
        "step_forgetting AS forgetting, is_best_step FROM run_eval_steps ORDER BY run_id, step",
    ):
        out.setdefault(row["run_id"], []).append(row)
    return out


SWEEP_PANELS = {
    "learning_rate": "learning rate",
    "lora_rank": "LoRA rank",
    "target_modules": "target modules",
    "method": "method",
}
"""The axes a sweep figure draws eval loss against (numeric: a log x axis; the rest categories)."""


def sweep_points(trials: list[dict], x: str) -> dict[str, list[tuple[Any, float]]]:
    """Eval loss after vs ``x`` per line: one line per sweep (compare_id) and value of its other
    swept axes, from rows shaped like the sweep_trials view (succeeded trials with an eval loss,
    of sweeps whose axis includes ``x``). Numeric x (learning rate, rank) comes from the run's
    own plan settings; a categorical x is the recorded value."""
    lines: dict[str, list[tuple[Any, float]]] = {}
    for t in trials:
        axes = (t.get("axis") or "").split(",")
        if t.get("status") != "succeeded" or t.get("eval_loss_after") is None or x not in axes:
            continue
        parts = dict(zip(axes, (t.get("value") or "").split(",")))
        xv = t.get(x) if x in ("learning_rate", "lora_rank") else parts.get(x)
        if xv is None:
            continue
        label = " ".join([str(t["compare_id"]), *(f"{k}={v}" for k, v in parts.items() if k != x)])
        lines.setdefault(label, []).append((xv, float(t["eval_loss_after"])))
    if x in ("learning_rate", "lora_rank"):
        for pts in lines.values():
            pts.sort()
    return lines


def sweep_figure(plt, trials: list[dict], path: Path, axes: list[str] | None = None) -> dict[str, dict]:
    """Eval loss after vs each axis (default: learning rate and LoRA rank, plus target modules
    when a sweep varied them), one panel each, one line per sweep (:func:`sweep_points`); returns
    the points as drawn, read back from the figure: {axis: {line label: [(x, eval loss)]}}."""
    if axes is None:
        swept = {a for t in trials for a in (t.get("axis") or "").split(",")}
        axes = ["learning_rate", "lora_rank"] + (["target_modules"] if "target_modules" in swept else [])
    fig, panels = plt.subplots(1, len(axes), figsize=(5.5 * len(axes), 4), squeeze=False)
    drawn: dict[str, dict] = {}
    for ax, x in zip(panels[0], axes):
        name = SWEEP_PANELS.get(x, x)
        lines = sweep_points(trials, x)
        for label, pts in sorted(lines.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
        ax.set_xlabel(name)
        ax.set_ylabel("eval loss after")
        ax.set_title(f"eval loss vs {name}")
        if lines:
            if x in ("learning_rate", "lora_rank"):
                ax.set_xscale("log", base=10 if x == "learning_rate" else 2)
            ax.legend(fontsize=7)
        else:
            _empty(ax, f"no {name} sweep recorded (tuneplan sweep)")
        drawn[x] = {
            str(line.get_label()): list(zip(line.get_xdata(), line.get_ydata())) for line in ax.get_lines()
        }
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _markdown(db_label: str, runs: list[dict], checked: dict, rules: list[dict]) -> str:
    s = checked["summary"]
    by_id = {c["run_id"]: c for c in checked["runs"]}
    lines = [
        "# tuneplan report",
        "",
        f"Database: `{db_label}`. {s['runs']} runs: {s['succeeded']} succeeded, {s['failed']} "
        f"failed, {s['interrupted']} interrupted, {s['running']} running. Verdicts (`tuneplan "
        f"check`): **{s['held']} held, {s['broken']} broken**."
        + (
            f" Mean |memory error| (like-for-like): {s['mean_abs_memory_error_comparable']:.1%}."
            if s["mean_abs_memory_error_comparable"] is not None
            else ""
        ),
        "",
        "## Runs",
        "",
        "| run | method | status | predicted MiB | measured MiB | like-for-like error | learning | forgetting "
        "| tok/s | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        c = by_id.get(r["run_id"], {})
        pred, meas = r["predicted_comparable_bytes"], r["measured_comparable_bytes"]
        verdict = c.get("verdict", "-")
        if c.get("reasons"):
            verdict += ": " + "; ".join(c["reasons"]).replace("|", "/")
        lines.append(
            f"| `{r['run_id']}` | {r['method']} | {r['status']} | "
            f"{_fmt(pred / MIB if pred is not None else None, '.2f')} | "
            f"{_fmt(meas / MIB if meas else None, '.2f')} | "
            f"{_fmt(r['memory_error_comparable'], '+.1%')} | {_fmt(c.get('learning'), '+.4f')} | "
            f"{_fmt(c.get('forgetting'), '+.4f')} | {_fmt(r['tokens_per_second'], ',.0f')} | {verdict} |"
        )
    lines += [
        "",
        "Memory is like-for-like, tensor bytes on both sides: predicted = the plan's peak less "
        "framework overhead (runtime / CUDA context, fragmentation); measured = the measured peak "
        "less its runtime (CPU: RSS before the model loaded; none on CUDA); like-for-like error = "
        "(predicted - measured) / measured; learning = eval loss before - after; forgetting = "
        "probe loss after - before (nats). Thresholds and verdict logic: docs/checks.md.",
        "",
        "## Rule audit",
        "",
        "| rule | promise | tested | held | status |",
        "|---|---|---:|---:|---|",
    ]
    for r in rules:
        lines.append(f"| {r['rule']} | {r['promise']} | {r['tested']} | {r['held']} | {r['status']} |")
    lines += [
        "",
        "## Memory: predicted vs measured",
        "",
        "![predicted vs measured peak memory](memory.png)",
        "",
        "## Learning vs forgetting",
        "",
        "![learning vs forgetting per method](learning_forgetting.png)",
        "",
        "## Loss curves",
        "",
        "![training loss per step](loss_curves.png)",
        "",
        "## Sweeps",
        "",
        "![eval loss vs learning rate and rank, per sweep](sweeps.png)",
        "",
        "## Learning vs forgetting over steps",
        "",
        "![eval and probe loss over optimizer steps](eval_curves.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(db: DBPath, out_dir: str | Path) -> list[Path]:
    """Write the figures and report.md into out_dir; returns the written paths. Reads only:
    raises NoDatabase when the database does not exist, SchemaOutdated when it is older."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    con = open_read(db)
    try:
        runs = _rows(
            con,
            "SELECT r.run_id, r.method, r.status, r.tokens_per_second, r.started_at, "
            "m.* EXCLUDE (run_id) FROM runs r JOIN run_memory_checks m USING (run_id) "
            "ORDER BY r.started_at NULLS LAST, run_id",
        )
        metrics = _rows(con, "SELECT run_id, step, loss FROM metrics ORDER BY run_id, step")
        curves = _curves(con)
        checked = check_runs(con=con)
        rules = audit_rules(con=con)
        trials = _rows(
            con,
            "SELECT t.compare_id, t.run_id, t.axis, t.value, r.status, r.eval_loss_after, s.learning_rate, "
            "s.lora_rank FROM sweep_trials t JOIN runs r USING (run_id) "
            "LEFT JOIN run_settings s USING (run_id) WHERE t.axis <> 'method'",
        )
    finally:
        con.close()
    _memory_figure(plt, runs, out / FIGURES[0])
    _learning_figure(plt, checked["runs"], out / FIGURES[1])
    _loss_figure(plt, metrics, {r["run_id"]: r["method"] for r in runs}, out / FIGURES[2])
    sweep_figure(plt, trials, out / FIGURES[3])
    _eval_curves_figure(plt, curves, {r["run_id"]: r["method"] for r in runs}, out / FIGURES[4])
    label = str(default_db_path() if db is None else Path(db).expanduser())
    md = out / "report.md"
    md.write_text(_markdown(label, runs, checked, rules), encoding="utf-8")
    return [out / f for f in FIGURES] + [md]
