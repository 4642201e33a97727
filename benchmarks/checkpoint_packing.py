"""Cost of a checkpoint and packed vs padded throughput, on the embedded model and the example data.

Run: .venv/bin/python benchmarks/checkpoint_packing.py [--plan examples/plans/lora.json]
     [--seq-len 512] [--rows 256] [--ckpt-steps 4]

Three `run_plan` runs of the plan (LoRA on SmolLM2-135M by default), interleaved in one process so
machine noise hits all alike:
  padded       packing off: each micro-batch padded to its longest row (the baseline)
  packed       training.packing on at --seq-len: several rows per sequence (position ids reset)
  padded+ckpt  packing off, --ckpt-steps steps, a checkpoint after every step but the last
               (accelerate save_state + sha256 manifest, written atomically)
padded and packed train on the same first --rows rows of examples/data/train.jsonl for one epoch,
so they train the same tokens and the steps differ. The example rows are ~60 tokens, so packing
matters only at a seq_len well above a row (the plan's own 72 fits one row per sequence).

Printed: seconds and bytes per checkpoint save (and the plan's checkpoint_bytes estimate); for
padded and packed: steps, tokens trained, tokens/s (real tokens per training second, what the run
records) and padded tokens/s (all batch positions), the padding share, and a steady-state tokens/s
that leaves out step 1 and the steps the CPU memory meter profiled (torch.profiler slows them; the
padded run profiles every step whose batch is longer than any before).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _profiled_steps(result) -> set[int]:
    """Steps the CPU memory meter profiled, from the run's substitution note."""
    for note in result.substitutions:
        m = re.search(r"measured on step\(s\) ([\d, ]+)", note)
        if m:
            return {int(x) for x in m.group(1).replace(" ", "").split(",") if x}
    return set()


def _steady_tokens_per_second(run_dir: Path, skip: set[int]) -> tuple[float, int]:
    """Real tokens / seconds over the steps not in ``skip`` (and not step 1), from metrics.jsonl."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    tokens = seconds = 0.0
    used = 0
    prev = 0.0
    for r in rows:
        dt, prev = r["elapsed_s"] - prev, r["elapsed_s"]
        if r["step"] == 1 or r["step"] in skip or "eval_loss" in r:
            continue
        tokens += r["tokens"]
        seconds += dt
        used += 1
    return (tokens / seconds if seconds > 0 else float("nan")), used


def _at_seq_len(plan, seq_len: int):
    """The plan advised again for ``seq_len`` (its memory block must match what runs: preflight
    re-estimates it), the method, learning rate, checkpointing and batch pinned as planned."""
    from tuneplan.advisor import advise

    i = plan.inputs
    pins = i.pins.model_copy(
        update={
            "method": plan.method,
            "learning_rate": plan.training.learning_rate,
            "gradient_checkpointing": plan.training.gradient_checkpointing,
        }
    )
    out = advise(i.model_copy(update={"task": i.task.model_copy(update={"seq_len": seq_len}), "pins": pins}))
    t = out.training
    assert (t.seq_len, t.per_device_batch_size, t.gradient_accumulation_steps) == (
        seq_len,
        plan.training.per_device_batch_size,
        plan.training.gradient_accumulation_steps,
    ), "the advisor changed the batch at this seq_len: compare like with like"
    return out.model_copy(update={"data": plan.data})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", default=str(ROOT / "examples/plans/lora.json"))
    ap.add_argument("--seq-len", type=int, default=512, help="seq_len of the padded and packed runs")
    ap.add_argument("--rows", type=int, default=256, help="training rows (one epoch) of both runs")
    ap.add_argument("--ckpt-steps", type=int, default=4, help="steps of the checkpointing run")
    a = ap.parse_args()
    os.environ.setdefault("TUNEPLAN_EVAL_BATCHES", "1")
    from tuneplan.executor.runner import load_plan, run_plan

    plan, _, _ = load_plan(a.plan)
    long_plan = _at_seq_len(plan, a.seq_len)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = (ROOT / "examples/data/train.jsonl").read_text().splitlines()[: a.rows]
        train = Path(tmp) / "train.jsonl"
        train.write_text("\n".join(rows) + "\n")
        for name, upd in (
            ("padded", {"packing": False, "save_every_steps": None, "max_steps": None, "num_epochs": 1.0}),
            ("packed", {"packing": True, "save_every_steps": None, "max_steps": None, "num_epochs": 1.0}),
            (
                "padded+ckpt",
                {"packing": False, "save_every_steps": 1, "max_steps": a.ckpt_steps, "num_epochs": None},
            ),
        ):
            p = (plan if name == "padded+ckpt" else long_plan).model_copy(deep=True)
            if p.data is not None:  # the plan's relative paths, from its own directory
                fix = {
                    k: str((Path(a.plan).parent / v).resolve())
                    for k in ("train_path", "eval_path")
                    if (v := getattr(p.data, k)) and not Path(v).is_absolute()
                }
                p.data = p.data.model_copy(update=fix)
            p.training = p.training.model_copy(update={**upd, "save_every_minutes": None})
            path = Path(tmp) / f"{name}.json"
            path.write_text(p.model_dump_json())
            r = run_plan(
                str(path),
                data=str(train),
                db=str(Path(tmp) / "db.duckdb"),
                output_dir=str(Path(tmp) / "runs"),
                progress=False,
            )
            steady = _steady_tokens_per_second(Path(r.run_dir), _profiled_steps(r))
            out[name] = (r, steady)
    ck = out["padded+ckpt"][0]
    t = plan.training
    print(
        f"plan {a.plan}: {plan.method} on {plan.inputs.model.name}, micro-batch {t.per_device_batch_size} x "
        f"{t.gradient_accumulation_steps} accumulation; padded and packed: seq_len {a.seq_len}, "
        f"{len(rows)} rows, 1 epoch"
    )
    print(
        f"checkpoint: {ck.checkpoint_seconds:.3f} s and {ck.checkpoint_bytes:,} bytes per save "
        f"({ck.checkpoints_saved} saves of {ck.trainable_params:,} trainable parameters + optimizer + RNG; "
        f"plan estimate {t.checkpoint_bytes or 0:,} bytes)"
    )
    for name in ("padded", "packed"):
        r, (steady, used) = out[name]
        print(
            f"{name:7s} steps {r.steps:4d}  tokens {r.tokens:7,d}  tokens/s {r.tokens_per_second:8.1f}  "
            f"padded tokens/s {r.padded_tokens_per_second:8.1f}  padding {100 * (r.padding_fraction or 0):5.1f}%  "
            + (
                f"steady tokens/s {steady:8.1f} ({used} steps)"
                if used
                else "steady tokens/s n/a (no unprofiled step)"
            )
        )
    (base, (bs, _)), (packed, (ps, _)) = out["padded"], out["packed"]
    print(
        f"packed / padded: tokens/s {packed.tokens_per_second / base.tokens_per_second:.2f}x, steady "
        f"{ps / bs:.2f}x{' (a run had no unprofiled step)' if math.isnan(ps / bs) else ''}, steps {packed.steps}/{base.steps} = {packed.steps / base.steps:.2f} for "
        f"{packed.tokens / base.tokens:.3f}x the tokens"
    )
    print(
        f"padded+ckpt: {ck.tokens_per_second:.1f} tokens/s over {ck.steps} steps at seq_len {t.seq_len} "
        f"(training seconds only; each save pauses the loop {ck.checkpoint_seconds:.3f} s on top)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
