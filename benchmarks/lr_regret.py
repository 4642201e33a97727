"""Learning-rate regret of the advisor (TP040) on the example task, and the sweep that measures it.

Run: .venv/bin/python benchmarks/lr_regret.py [--plan examples/plan.json] [--max-steps 20]
                                               [--points 5] [--db PATH] [--output DIR]

`tuneplan sweep` runs the plan (the example task on the embedded SmolLM2-135M-Instruct, LoRA) at
`--points` learning rates 3x apart centred on the advised rate (5 points: LR/9, LR/3, LR, 3·LR,
9·LR), all on the same data, seed and step budget. Printed: the eval loss after each trial, the
best rate, and the regret = eval loss at the advised rate - the best eval loss, in nats (0 when
the advised rate is the best of the grid). The baseline is the sweep's own best, measured in the
same run. Set TUNEPLAN_EVAL_BATCHES to shorten evaluations (the figure is then noisier).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default=str(ROOT / "examples" / "plan.json"))
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--db", default=None, help="run database (default: a temporary one)")
    ap.add_argument("--output", default=None, help="where the trials go (default: a temporary dir)")
    args = ap.parse_args(argv)

    import tempfile

    from tuneplan.executor import sweep
    from tuneplan.executor.runner import load_plan

    plan, _, _ = load_plan(args.plan)
    advised = plan.training.learning_rate
    half = args.points // 2
    grid = [float(f"{advised * 3.0**k:.3g}") for k in range(-half, args.points - half)]
    tmp = Path(tempfile.mkdtemp(prefix="lr-regret-"))
    db = args.db or str(tmp / "runs.duckdb")
    out = args.output or str(tmp / "sweep")
    t0 = time.perf_counter()
    sw = sweep.run_sweep(
        args.plan, {"learning_rate": grid}, max_steps=args.max_steps, db=db, output_dir=out, progress=False
    )
    wall = time.perf_counter() - t0
    print(
        f"lr_regret: {plan.inputs.model.name}, {plan.method}, {args.max_steps} steps per trial, "
        f"batch {plan.training.per_device_batch_size * plan.training.gradient_accumulation_steps}, "
        f"seq {plan.training.seq_len}; sweep {sw.sweep_id} in {wall:.0f} s"
    )
    losses: dict[float, float] = {}
    for t in sw.trials:
        lr = t.values["learning_rate"]
        mark = " (advised)" if lr == advised else ""
        loss = "-" if t.eval_loss_after is None else f"{t.eval_loss_after:.4f}"
        print(f"  lr {lr:<10.3g} eval loss {loss:>8}  {t.status}{mark}")
        if t.status == "succeeded" and t.eval_loss_after is not None:
            losses[lr] = t.eval_loss_after
    if advised not in losses or not losses:
        print("regret: not measured (the advised trial did not succeed)", file=sys.stderr)
        return 1
    best = min(losses, key=losses.__getitem__)
    regret = losses[advised] - losses[best]
    print(
        f"advised {advised:.3g}: eval loss {losses[advised]:.4f}; best {best:.3g}: {losses[best]:.4f}; "
        f"regret {regret:.4f} nats (best/advised = {best / advised:.3g}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
