"""A child process for tests/test_run_stages.py: one or more tiny-model runs, reported as JSON.

``python tests/run_probe.py ROOT METHOD N [--cli]`` runs the same METHOD plan N times in this one
process (``--cli``: once, through ``tuneplan run``) and prints one JSON line: each run's measured
memory and losses, whether bitsandbytes was imported, and how often the plan file (and the run
directory's copy) was read."""

from __future__ import annotations

import builtins
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TUNEPLAN_EVAL_BATCHES", "1")

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl  # noqa: E402


def main(argv: list[str]) -> int:
    root, method, n = Path(argv[0]), argv[1], int(argv[2])
    cli = "--cli" in argv
    tiny = tiny_llama_dir(root)
    train = write_jsonl(root / "train.jsonl", overfit_rows(8))
    plan = make_plan(method, str(tiny), train_path=str(train), training={"max_steps": 2})
    plan_file = root / f"plan-{method}.json"
    plan_file.write_text(plan.model_dump_json(indent=2))
    reads = {"plan": 0, "copy": 0}

    def note(path, mode: str = "r") -> None:
        try:
            p = Path(os.fspath(path))
        except TypeError:
            return
        if p.name.startswith("plan") and p.suffix == ".json" and "r" in mode and "+" not in mode:
            reads["plan" if p.resolve() == plan_file.resolve() else "copy"] += 1

    real = Path.read_text, Path.read_bytes, builtins.open

    def read_text(self, *a, **k):
        note(self)
        return real[0](self, *a, **k)

    def read_bytes(self, *a, **k):
        note(self)
        return real[1](self, *a, **k)

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)):
            note(file, mode)
        return real[2](file, mode, *a, **k)

    Path.read_text, Path.read_bytes, builtins.open = read_text, read_bytes, open_
    runs = []
    try:
        if cli:
            from tuneplan.cli.main import main as tuneplan

            rc = tuneplan(
                ["run", str(plan_file), "--db", str(root / "runs.duckdb"), "--output", str(root / "runs")]
            )
            results = [json.loads(real[0](d / "result.json")) for d in sorted((root / "runs").iterdir())]
        else:
            from tuneplan.executor.runner import run_plan

            rc = 0
            results = [
                json.loads(
                    run_plan(
                        plan_file, db=str(root / "runs.duckdb"), output_dir=str(root / "runs"), progress=False
                    ).model_dump_json()
                )
                for _ in range(n)
            ]
    finally:
        Path.read_text, Path.read_bytes, builtins.open = real
    for r in results:
        m = r["measured"] or {}
        runs.append(
            {
                "status": r["status"],
                "peak_bytes": m.get("peak_bytes"),
                "runtime_bytes": m.get("runtime_bytes"),
                "tensor_bytes": (m["peak_bytes"] - m["runtime_bytes"]) if m else None,
                "eval_loss_after": r["eval_loss_after"],
                "forgetting_loss_after": r["forgetting_loss_after"],
            }
        )
    print(json.dumps({"rc": rc, "bitsandbytes": "bitsandbytes" in sys.modules, "reads": reads, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
