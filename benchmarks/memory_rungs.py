"""Step-time cost of the fit ladder's activation savers on the embedded SmolLM2-135M.

Runs LoRA (r=8, all-linear, dropout 0, fp32 on CPU) for a few optimizer steps per setting,
interleaved round by round so machine load hits every setting alike, and prints each setting's
median step time and its slowdown against the plain step measured in the same run:

    chunked cross-entropy (training.loss_chunk_size = tokens/8)
    gradient checkpointing
    activation offload (on a CPU the copies go to a host store in the same RAM: this measures
    the hook and copy cost, not PCIe transfers)

The figures feed advisor/fitting.py SLOWDOWN (the fit ladder states them in its message).
Usage: .venv/bin/python benchmarks/memory_rungs.py [--seq-len 256] [--rounds 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SETTINGS = {
    "plain": {},
    "loss_chunking": {"loss_chunk_size": None},  # filled with tokens/8 below
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "activation_offload": {"activation_offload": True},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()

    import torch
    from exec_fixtures import make_plan

    from tuneplan.executor import measure as M
    from tuneplan.executor import train as T
    from tuneplan.executor.data import Example
    from tuneplan.executor.loading import load_model
    from tuneplan.executor.models import ensure_embedded_model

    torch.manual_seed(0)
    d = ensure_embedded_model()
    cpu = torch.device("cpu")
    SETTINGS["loss_chunking"]["loss_chunk_size"] = max(1, a.batch * a.seq_len // 8)
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(a.rounds):
        for name, extra in SETTINGS.items():
            plan = make_plan(
                "lora",
                str(d),
                training={
                    "per_device_batch_size": a.batch,
                    "seq_len": a.seq_len,
                    "max_steps": a.steps + 1,
                    **extra,
                },
                lora={"dropout": 0.0},
            )
            loaded = load_model(plan, d, cpu)
            tok = loaded.tokenizer
            n = (a.steps + 1) * a.batch
            ids = [(7 * i + 3) % (len(tok) - 3) + 3 for i in range(n * a.seq_len)]
            rows = [
                Example(ids[i * a.seq_len : (i + 1) * a.seq_len], ids[i * a.seq_len : (i + 1) * a.seq_len])
                for i in range(n)
            ]
            meter = M.MemoryMeter(loaded.model, cpu, runtime_bytes=0)
            meter.measure_step = lambda *args: False  # plain steps: no profiler, no hooks
            state = T.TrainState()
            stamps: list[float] = []
            T.train(
                loaded,
                rows,
                plan.training,
                steps=a.steps + 1,
                meter=meter,
                state=state,
                on_step=lambda r, s=stamps: s.append(time.perf_counter()),
            )
            meter.close()
            times[name] += [b - c for b, c in zip(stamps[1:], stamps[:-1])]  # first step is warm-up
    base = statistics.median(times["plain"])
    print(
        f"embedded SmolLM2-135M, LoRA r=8 all-linear, fp32 CPU, micro-batch {a.batch} x {a.seq_len} tokens, "
        f"{a.rounds} rounds x {a.steps} timed steps per setting"
    )
    print(f"{'setting':24} {'median step s':>14} {'slowdown':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:24} {med:14.3f} {med / base - 1:+9.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
