"""Cost of a checkpoint and packed vs padded throughput, on the embedded model and the example data.

Run: .venv/bin/python benchmarks/checkpoint_packing.py [--plan examples/plans/lora.json] [--steps 6]

Three `run_plan` runs of the plan (LoRA on SmolLM2-135M by default) on examples/data/train.jsonl,
interleaved in one process so machine noise hits all alike:
  padded            packing off, no periodic checkpoint (the baseline)
  padded+ckpt       packing off, a checkpoint every step (but the last) (accelerate save_state, sha256 manifest)
  packed            training.packing on
Printed: seconds and bytes per checkpoint save (and the plan's checkpoint_bytes estimate), and
tokens/s (real tokens) and padded tokens/s (all batch positions) with the padding share of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", default=str(ROOT / "examples/plans/lora.json"))
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    os.environ.setdefault("TUNEPLAN_EVAL_BATCHES", "1")
    from tuneplan.executor.runner import load_plan, run_plan

    plan, _, _ = load_plan(a.plan)
    train = ROOT / "examples/data/train.jsonl"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, upd in (
            ("padded", {"packing": False, "save_every_steps": None}),
            ("padded+ckpt", {"packing": False, "save_every_steps": 1}),
            ("packed", {"packing": True, "save_every_steps": None}),
        ):
            p = plan.model_copy(deep=True)
            if p.data is not None:  # the plan's relative paths, from its own directory
                fix = {
                    k: str((Path(a.plan).parent / v).resolve())
                    for k in ("train_path", "eval_path")
                    if (v := getattr(p.data, k)) and not Path(v).is_absolute()
                }
                p.data = p.data.model_copy(update=fix)
            p.training = p.training.model_copy(
                update={**upd, "max_steps": a.steps, "num_epochs": None, "save_every_minutes": None}
            )
            path = Path(tmp) / f"{name}.json"
            path.write_text(p.model_dump_json())
            out[name] = run_plan(
                str(path),
                data=str(train),
                db=str(Path(tmp) / "db.duckdb"),
                output_dir=str(Path(tmp) / "runs"),
                progress=False,
            )
    ck = out["padded+ckpt"]
    print(
        f"plan {a.plan}: {plan.method}, {a.steps} steps, micro-batch {plan.training.per_device_batch_size}, "
        f"seq_len {plan.training.seq_len}"
    )
    print(
        f"checkpoint: {ck.checkpoint_seconds:.3f} s and {ck.checkpoint_bytes:,} bytes per save "
        f"({ck.checkpoints_saved} saves; plan estimate {plan.training.checkpoint_bytes or 0:,} bytes)"
    )
    for name, r in out.items():
        print(
            f"{name:12s} tokens/s {r.tokens_per_second:8.1f}  padded tokens/s {r.padded_tokens_per_second:8.1f}  "
            f"padding {100 * (r.padding_fraction or 0):5.1f}%  steps {r.steps}  tokens {r.tokens}"
        )
    base, packed = out["padded"], out["packed"]
    print(f"packed / padded tokens/s: {packed.tokens_per_second / base.tokens_per_second:.2f}x")
    print(
        f"padded+ckpt / padded tokens/s: {ck.tokens_per_second / base.tokens_per_second:.2f}x "
        "(training seconds only; saves pause the loop outside them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
