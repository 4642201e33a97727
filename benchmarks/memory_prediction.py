"""Predicted vs measured peak memory per method on the embedded SmolLM2-135M (CPU).

Run: .venv/bin/python benchmarks/memory_prediction.py [--steps 3] [--methods full,lora,qlora]
                                                       [--example-data]

For each method's example plan (examples/plans/{method}.json) a fresh Python process measures the
runtime baseline (RSS with torch/transformers/peft imported, before the model), loads the model as
`tuneplan run` does (executor.loading.load_model) and trains N steps with the executor's own loop
and MemoryMeter (executor.train.train): the same measurement as run_plan, without the eval passes.

By default every sequence fills the plan's seq_len (a long completion truncated at seq_len), so
the run has exactly the shapes the plan was estimated for. --example-data trains on the plan's
own data instead; its short rows are padded only to the longest row of each micro-batch, so the
run is compared with the plan AND with a re-estimate at the measured length.

Printed per method: predicted vs measured peak and the signed error, then the components:
predicted terms (plan) next to what is measured (runtime RSS, parameters, gradients, optimizer
states, tensors saved for backward by trailing dimension, the profiled peak per phase). Target:
|error| <= 15% per method.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
FILL_TEXT = (
    "The quick brown fox jumps over the lazy dog while the date 2021-05-05 is written in ISO "
    "format and every month from January to December is listed twice. "
)


def _worker(method: str, steps: int, example_data: bool) -> dict:
    import torch

    from tuneplan.executor import data as D
    from tuneplan.executor import measure as M
    from tuneplan.executor.loading import load_model
    from tuneplan.executor.models import resolve_model_dir
    from tuneplan.executor.runner import load_plan
    from tuneplan.executor.train import TrainState, train

    plan, path, _ = load_plan(ROOT / "examples" / "plans" / f"{method}.json")
    t = plan.training
    runtime = M.runtime_baseline_bytes()
    cpu = torch.device("cpu")
    loaded = load_model(plan, resolve_model_dir(plan.inputs.model.name), cpu)
    if example_data:
        rows = D.read_rows(D.check_data_path(path.parent / plan.data.train_path, "data.train_path")).rows
    else:
        rows = [
            D.Row(f"fill[{i}]", "text", {"text": f"Row {i}. " + FILL_TEXT * 8})
            for i in range(t.per_device_batch_size * t.gradient_accumulation_steps * steps)
        ]
    examples, _ = D.encode_rows(rows, loaded.tokenizer, t.seq_len)

    saved_by_dim: Counter = Counter()

    class Meter(M.MemoryMeter):  # also tallies saved tensors by trailing dimension and dtype
        def add(self, tensor):
            before = len(self._live)
            super().add(tensor)
            if len(self._live) > before:
                dim = tuple(tensor.shape[-1:])
                saved_by_dim[f"{dim[0] if dim else 'scalar'} {str(tensor.dtype).replace('torch.', '')}"] += (
                    tensor.untyped_storage().nbytes()
                )

    meter = Meter(loaded.model, cpu, runtime_bytes=runtime)
    train(loaded, examples, t, steps=steps, meter=meter, state=TrainState())
    meter.close()
    m = meter.result()
    return {
        "method": method,
        "measured": m.model_dump(),
        "last": meter.last,
        "measured_steps": meter.measured_steps,
        "measured_len": meter.measured_len,
        "runtime": runtime,
        "live_peak": meter.live_peak_bytes,
        "saved_by_dim": dict(saved_by_dim.most_common()),
    }


def _report(r: dict) -> float:
    from tuneplan.advisor.estimator import estimate
    from tuneplan.executor.runner import load_plan

    plan, _, _ = load_plan(ROOT / "examples" / "plans" / f"{r['method']}.json")
    mem = plan.memory
    m = r["measured"]
    pred = mem.per_device_bytes
    err = m["peak_bytes"] / pred - 1
    L = r["measured_len"]
    print(
        f"\n== {r['method']}: predicted {pred / MIB:,.0f} MiB, measured {m['peak_bytes'] / MIB:,.0f} MiB, "
        f"error {err:+.1%}  (measured steps {r['measured_steps']}, micro-batch {plan.training.per_device_batch_size}"
        f" x {L} tokens; plan seq_len {plan.training.seq_len})"
    )
    if L != plan.training.seq_len:
        st = mem.settings.model_copy(update={"seq_len": L})
        re = estimate(plan.inputs.model, st, capacity_bytes=mem.device_capacity_bytes, device="cpu")
        print(
            f"   re-estimated at the measured length {L}: {re.per_device_bytes / MIB:,.0f} MiB, "
            f"error {m['peak_bytes'] / re.per_device_bytes - 1:+.1%}"
        )
        mem = re
    b = mem.breakdown
    last = r["last"]
    ph = last.get("phases", {})
    saved = m["saved_tensors_peak_bytes"]
    rows = [
        ("runtime (Python+torch+...)", b.framework_overhead, r["runtime"], "predicted incl. fragmentation"),
        (
            "weights + adapters + quant",
            b.weights + b.adapter_weights + b.quantization_constants,
            m["params_bytes"],
            "",
        ),
        ("gradients", b.gradients, m["grads_bytes"], "measured: held after backward"),
        ("optimizer states", b.optimizer_states, m["optimizer_bytes"], ""),
        ("activations (saved, excl. loss)", b.activations, None, ""),
        (
            "activations + logits/loss",
            b.activations + b.logits_and_loss,
            last.get("window_peak"),
            "measured: profiled step peak above the state at step start",
        ),
        ("  saved for backward (+logits)", None, saved, "saved_tensors_hooks, one micro-batch"),
        ("  step peak in forward+loss", None, ph.get("forward"), ""),
        ("  step peak in backward", None, ph.get("backward"), "includes gradients as they appear"),
        ("  step peak in optimizer", None, ph.get("optimizer"), ""),
        (
            "TOTAL peak_bytes",
            pred if L == plan.training.seq_len else mem.per_device_bytes,
            m["peak_bytes"],
            "",
        ),
    ]
    print(f"   {'component':34s} {'predicted':>10s} {'measured':>10s} {'diff':>8s}")
    for name, p, q, note in rows:
        ps = f"{p / MIB:10,.1f}" if p is not None else f"{'':>10s}"
        qs = f"{q / MIB:10,.1f}" if q is not None else f"{'':>10s}"
        ds = f"{q / p - 1:+8.1%}" if (p and q is not None) else f"{'':>8s}"
        print(f"   {name:34s} {ps} {qs} {ds}  {note}")
    print(
        "   saved for backward by trailing dim (MiB): "
        + ", ".join(f"{k}: {v / MIB:.1f}" for k, v in r["saved_by_dim"].items() if v >= MIB // 10)
    )
    return err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--methods", default="full,lora,qlora")
    ap.add_argument("--example-data", action="store_true", help="train on the plan's own (short) rows")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(_worker(a.worker, a.steps, a.example_data)))
        return 0
    errors = {}
    for method in a.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", method, "--steps", str(a.steps)] + (
            ["--example-data"] if a.example_data else []
        )
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            print(f"{method}: worker failed ({out.returncode})\n{out.stderr[-3000:]}")
            continue
        errors[method] = _report(json.loads(line[0][7:]))
    print(
        "\nsummary: "
        + ", ".join(f"{k} {v:+.1%}" for k, v in errors.items())
        + f"  (target |error| <= 15%: {'met' if errors and all(abs(v) <= 0.15 for v in errors.values()) else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
