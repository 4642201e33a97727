"""1 process vs N processes (DDP, gloo on CPU) on the same plan and the same number of steps.

    .venv/bin/python benchmarks/processes.py [--plan examples/plans/lora.json] [--steps 4]
                                             [--processes 2] [--tiny]

Each configuration runs as `tuneplan run PLAN --num-processes K --max-steps S` in a fresh
subprocess (so both pay the same start-up), into a scratch run directory and database, and the
numbers come from each run's result.json:
  tokens/s  training tokens over training seconds, all ranks' tokens summed (a DDP step trains
            K times the sequences of a one-process step);
  wall s    the whole command, start-up, model load, eval before/after and saving included.
Three rows: 1 process in-process (`tuneplan run` without a launcher), 1 process through torchrun
and the worker, N processes through torchrun; the ratio compares the last two (same code path).
--tiny uses a 2-layer Llama built in-process (tests/exec_fixtures.py) instead of SmolLM2.

Read the numbers honestly: DDP only helps when each process gets its own cores (or GPU). On a
2-core machine, 2 processes split the same 2 cores, add gloo all-reduces and a second copy of
the model, so 2 processes are often no faster, or slower, than 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tiny_plan(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl

    model = tiny_llama_dir(tmp)
    data = write_jsonl(tmp / "train.jsonl", overfit_rows(8) * 8)
    plan = make_plan("lora", str(model), train_path=str(data), training={"per_device_batch_size": 4})
    path = tmp / "plan.json"
    path.write_text(plan.model_dump_json(indent=2))
    return path


LAUNCH_ONE = (
    "import sys, argparse; from tuneplan.executor.distributed.launch import launch; "
    "sys.exit(launch(sys.argv[1], argparse.Namespace(num_processes=1, dry_run=False, num_machines=None, "
    "machine_rank=0, main_process_ip=None, main_process_port=None, data=None, model_path=None, "
    "max_steps=int(sys.argv[2]), output=sys.argv[3], db=sys.argv[4])))"
)


def run_once(plan: Path, processes: int, steps: int, tmp: Path, launched: bool = True) -> dict:
    """One run; `launched`: through the multi-process launcher (torchrun + worker) even for one
    process, so 1 and N processes share the same code path."""
    out = tmp / f"runs-{processes}-{'launched' if launched else 'inproc'}"
    if launched and processes == 1:
        cmd = [sys.executable, "-c", LAUNCH_ONE, str(plan), str(steps), str(out), str(tmp / "bench.duckdb")]
    else:
        cmd = [
            str(Path(sys.executable).parent / "tuneplan"),
            "run",
            str(plan),
            "--num-processes",
            str(processes),
            "--max-steps",
            str(steps),
            "--output",
            str(out),
            "--db",
            str(tmp / "bench.duckdb"),
        ]
    env = dict(os.environ, TUNEPLAN_EVAL_BATCHES=os.environ.get("TUNEPLAN_EVAL_BATCHES", "1"))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    results = sorted(out.glob("*/result.json"))
    if proc.returncode != 0 or not results:
        raise SystemExit(f"{processes} process run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(results[-1].read_text())
    return {
        "processes": processes,
        "how": "torchrun" if launched else "in-process",
        "strategy": r["strategy"],
        "steps": r["steps"],
        "tokens": r["tokens"],
        "tokens_per_second": r["tokens_per_second"],
        "train_seconds": r["tokens"] / r["tokens_per_second"],
        "wall_seconds": round(wall, 1),
        "peak_bytes_per_rank": (r.get("measured") or {}).get("peak_bytes"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default=str(ROOT / "examples" / "plans" / "lora.json"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny in-process Llama instead of the plan's model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tuneplan-bench-") as d:
        tmp = Path(d)
        plan = _tiny_plan(tmp) if args.tiny else Path(args.plan).resolve()
        rows = [
            run_once(plan, 1, args.steps, tmp, launched=False),
            run_once(plan, 1, args.steps, tmp),
            run_once(plan, args.processes, args.steps, tmp),
        ]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.json:
        print(json.dumps({"cores": cores, "plan": str(plan), "rows": rows}, indent=2))
        return 0
    print(f"plan {plan.name if not args.tiny else 'tiny-llama'}, {args.steps} steps, {cores} cores")
    print(f"{'procs':>5} {'how':>10} {'strategy':>8} {'tokens':>7} {'train s':>8} {'tok/s':>8} {'wall s':>7}")
    for r in rows:
        print(
            f"{r['processes']:>5} {r['how']:>10} {r['strategy']:>8} {r['tokens']:>7} {r['train_seconds']:>8.1f} "
            f"{r['tokens_per_second']:>8.0f} {r['wall_seconds']:>7.1f}"
        )
    _, one, many = rows  # compare like with like: both through torchrun and the worker
    ratio = many["tokens_per_second"] / one["tokens_per_second"]
    print(
        f"{args.processes} processes: {ratio:.2f}x the tokens/s of 1"
        + (" (slower: the processes share the same cores)" if ratio < 1 else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
