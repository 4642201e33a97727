"""How fast `tuneplan advise` answers in a fresh process, next to `import torch` in the same run.

Goal (issue: advisor): median under 0.3 s on a 2-core machine. Prints figures; asserts nothing.
Run: .venv/bin/python benchmarks/advise_latency.py [--runs N] [--before DIR]

--before DIR times the same command from another source tree in the same run, interleaved with
this one (e.g. `git worktree add /tmp/before <commit>`): its package folders are laid over this
environment's installed tuneplan through PYTHONPATH, so both use the same interpreter and
libraries. A tree from before the cli/ package is run as `-m tuneplan.advisor.cli`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = [
    "advise",
    "--model",
    "Llama-3.1-8B",
    "--gpu",
    "A100-80GB",
    "--domain",
    "near",
    "--forgetting",
    "medium",
    "--json",
]
ADVISE = [sys.executable, "-m", "tuneplan.cli", *ARGS]
ADVISE_HUMAN = ADVISE[:-1]
PYTHON = [sys.executable, "-c", "pass"]
TORCH = [sys.executable, "-c", "import torch"]


# pip compiles an installed package to bytecode; an editable checkout gets it on first import
# unless PYTHONDONTWRITEBYTECODE is set (some shells set it). Measure the installed situation.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], runs: int, env: dict | None = None) -> list[float]:
    """Wall seconds of `runs` fresh processes running cmd."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or ENV)
        out.append(time.perf_counter() - t0)
    return out


def overlay(tree: Path, into: Path) -> tuple[list[str], dict]:
    """The advise command and environment that run `tree`'s sources: a tuneplan/ folder of
    symlinks to its package folders, first on PYTHONPATH."""
    pkg = into / "tuneplan"
    pkg.mkdir()
    for name in ("base", "schemas", "advisor", "executor", "tui", "cli"):
        if (tree / name / "__init__.py").is_file():
            (pkg / name).symlink_to((tree / name).resolve())
    module = "tuneplan.cli" if (tree / "cli" / "main.py").is_file() else "tuneplan.advisor.cli"
    return [sys.executable, "-m", module, *ARGS], {**ENV, "PYTHONPATH": str(into)}


def interleaved(a: tuple[list[str], dict], b: tuple[list[str], dict], runs: int) -> tuple[list, list]:
    """Alternate a and b so both see the same machine load."""
    xs, ys = [], []
    for _ in range(runs):
        xs += timed(a[0], 1, a[1])
        ys += timed(b[0], 1, b[1])
    return xs, ys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument(
        "--before",
        metavar="DIR",
        type=Path,
        help="also time advise --json from this source tree, interleaved with this one",
    )
    args = ap.parse_args()
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            before = overlay(args.before, Path(tmp))
            timed(before[0], 1, before[1])  # warm up and compile its bytecode
            timed(ADVISE, 1)
            old, new = interleaved(before, (ADVISE, ENV), args.runs)
        print(f"{'advise --json, interleaved':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
        for name, xs in ((f"before ({args.before})", old), ("this tree", new)):
            print(f"{name:40s} {statistics.median(xs):9.3f} {min(xs):7.3f} {max(xs):7.3f}")
        print(f"this tree / before: {statistics.median(new) / statistics.median(old):.3f} (median)\n")
    timed(ADVISE, 1)  # warm the page cache and write the .pyc files
    rows = [
        ("python -c pass (interpreter floor)", timed(PYTHON, args.runs)),
        ("tuneplan advise --json", timed(ADVISE, args.runs)),
        ("tuneplan advise (rich table)", timed(ADVISE_HUMAN, args.runs)),
        ("python -c 'import torch' (baseline)", timed(TORCH, max(3, args.runs // 3))),
    ]
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for name, xs in rows:
        print(f"{name:40s} {statistics.median(xs):9.3f} {min(xs):7.3f} {max(xs):7.3f}")
    adv = statistics.median(rows[1][1])
    torch_s = statistics.median(rows[3][1])
    print(
        f"\nadvise median {adv:.3f} s — goal < 0.300 s: {'PASS' if adv < 0.3 else 'FAIL'}; "
        f"import torch alone takes {torch_s:.3f} s ({torch_s / adv:.1f}x advise)"
    )


if __name__ == "__main__":
    main()
