"""Executor training throughput against a minimal hand-written peft + transformers loop.

Run: .venv/bin/python benchmarks/executor_throughput.py [--plan examples/plans/lora.json]
                                                         [--steps 4] [--rounds 2]

Both sides train the same model (the plan's, embedded SmolLM2-135M by default) with the plan's
settings on the same micro-batches (executor.data.micro_batches + collate, the plan's seed) for
the same number of optimizer steps:
  A  the executor: executor.train.train with its MemoryMeter, as `tuneplan run` trains (the meter
     hooks and profiles only its designated steps: the 2nd, and later steps with a longer batch);
  B  a minimal loop: AutoModelForCausalLM + get_peft_model, torch AdamW, model(..., labels=...)
     loss, backward, clip, step, zero_grad; no measurement.
Runs alternate A B A B ... (--rounds pairs) in one process so machine noise hits both alike.
Printed: tokens/s of each run, the totals, and the ratio A/B over all steps and over the steps the
meter left alone (the steady state of a long run, where measured steps are a vanishing share).
Goal: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _batches(plan, tok, rows, steps: int):
    from tuneplan.executor import data as D

    t = plan.training
    examples, _ = D.encode_rows(rows, tok, t.seq_len)
    stream = D.micro_batches(examples, t.per_device_batch_size, t.seed)
    return [
        [D.collate(next(stream), tok.pad_token_id) for _ in range(t.gradient_accumulation_steps)]
        for _ in range(steps)
    ]


def _minimal_model(plan, model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa"
    )
    model.config.use_cache = False
    if plan.method == "lora":
        from peft import LoraConfig, get_peft_model

        lo = plan.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lo.rank,
                lora_alpha=lo.alpha,
                lora_dropout=lo.dropout,
                target_modules=list(lo.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    model.train()
    return model


def _run_minimal(model, plan, steps_batches) -> tuple[int, float, list[float]]:
    import torch

    t = plan.training
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    tokens, times = 0, []
    for batches in steps_batches:
        t0 = time.perf_counter()
        for b in batches:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
            (out.loss / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        tokens += sum(int(b["attention_mask"].sum()) for b in batches)
    return tokens, sum(times), times


def _run_executor(loaded, plan, steps_batches) -> tuple[int, float, list[float], list[int]]:
    import torch

    from tuneplan.executor import train as T
    from tuneplan.executor.measure import MemoryMeter, runtime_baseline_bytes

    flat = [ex for batches in steps_batches for ex in batches]
    orig_collate, orig_stream = T.collate, T.micro_batches
    it = iter(flat)
    T.micro_batches = lambda *a, **k: itertools.repeat(None)  # the executor's own stream, pre-collated
    T.collate = lambda _examples, _pad: next(it)
    meter = MemoryMeter(loaded.model, torch.device("cpu"), runtime_bytes=runtime_baseline_bytes())
    state = T.TrainState()
    try:
        T.train(loaded, [], plan.training, steps=len(steps_batches), meter=meter, state=state)
    finally:
        T.collate, T.micro_batches = orig_collate, orig_stream
        meter.close()
    elapsed = [m["elapsed_s"] for m in state.metrics]
    times = [b - a for a, b in zip([0.0] + elapsed[:-1], elapsed)]
    return state.tokens, state.train_seconds, times, meter.measured_steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default=str(ROOT / "examples" / "plans" / "lora.json"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)

    import torch
    from transformers import set_seed

    from tuneplan.executor import data as D
    from tuneplan.executor.loading import load_model
    from tuneplan.executor.models import resolve_model_dir
    from tuneplan.executor.runner import load_plan

    plan, path, _ = load_plan(a.plan)
    if plan.method not in ("full", "lora") or plan.training.precision != "fp32":
        print("this benchmark compares fp32 full/lora plans (the CPU executor's own regime)")
        return 2
    model_dir = resolve_model_dir(plan.inputs.model.name)
    set_seed(plan.training.seed)
    loaded = load_model(plan, model_dir, torch.device("cpu"))
    set_seed(plan.training.seed)
    minimal = _minimal_model(plan, model_dir)
    rows = D.read_rows(D.check_data_path(path.parent / plan.data.train_path, "data.train_path")).rows
    steps_batches = _batches(plan, loaded.tokenizer, rows, a.steps)
    print(
        f"{plan.method} on {plan.inputs.model.name}: {a.steps} steps x {a.rounds} rounds, micro-batch "
        f"{plan.training.per_device_batch_size} x GA {plan.training.gradient_accumulation_steps}, "
        f"{torch.get_num_threads()} threads"
    )
    tot = {"A": [0, 0.0], "B": [0, 0.0]}
    pairs: list[float] = []  # time B / time A of the same step in the same round (not measured)
    steady = {"A": 0.0, "B": 0.0}
    for r in range(a.rounds):
        tok, sec, times, measured = _run_executor(loaded, plan, steps_batches)
        tot["A"][0] += tok
        tot["A"][1] += sec
        keep = [i for i in range(len(times)) if i + 1 not in measured]
        steady["A"] += sum(times[i] for i in keep)
        print(
            f"round {r + 1} A executor: {tok / sec:8.1f} tok/s  steps {[round(x, 2) for x in times]} "
            f"(measured steps {measured})"
        )
        tok, sec, times_b = _run_minimal(minimal, plan, steps_batches)
        tot["B"][0] += tok
        tot["B"][1] += sec
        steady["B"] += sum(times_b[i] for i in keep)
        pairs += [times_b[i] / times[i] for i in keep]
        print(f"round {r + 1} B minimal : {tok / sec:8.1f} tok/s  steps {[round(x, 2) for x in times_b]}")
    a_tps, b_tps = tot["A"][0] / tot["A"][1], tot["B"][0] / tot["B"][1]
    print(
        f"\nexecutor {a_tps:.1f} tok/s, minimal loop {b_tps:.1f} tok/s, ratio {a_tps / b_tps:.3f} (all steps)"
    )
    print(
        f"ratio on steps the meter left alone (time B / time A): {steady['B'] / steady['A']:.3f}  "
        f"(goal >= 0.95)"
    )
    if pairs:
        import statistics

        print(
            f"median per-step ratio (B/A, same step, unmeasured): {statistics.median(pairs):.3f} over {len(pairs)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
