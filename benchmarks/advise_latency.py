"""How fast `tuneplan advise` answers in a fresh process, next to `import torch` in the same run.

Goal (issue: advisor): median under 0.3 s on a 2-core machine. Prints figures; asserts nothing.
Run: .venv/bin/python benchmarks/advise_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ADVISE = [sys.executable, "-m", "tuneplan.cli", "advise", "--model", "Llama-3.1-8B",
          "--gpu", "A100-80GB", "--domain", "near", "--forgetting", "medium", "--json"]
ADVISE_HUMAN = ADVISE[:-1]
PYTHON = [sys.executable, "-c", "pass"]
TORCH = [sys.executable, "-c", "import torch"]


# pip compiles an installed package to bytecode; an editable checkout gets it on first import
# unless PYTHONDONTWRITEBYTECODE is set (some shells set it). Measure the installed situation.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], runs: int) -> list[float]:
    """Wall seconds of `runs` fresh processes running cmd."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    timed(ADVISE, 1)  # warm the page cache and write the .pyc files
    rows = [("python -c pass (interpreter floor)", timed(PYTHON, args.runs)),
            ("tuneplan advise --json", timed(ADVISE, args.runs)),
            ("tuneplan advise (rich table)", timed(ADVISE_HUMAN, args.runs)),
            ("python -c 'import torch' (baseline)", timed(TORCH, max(3, args.runs // 3)))]
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for name, xs in rows:
        print(f"{name:40s} {statistics.median(xs):9.3f} {min(xs):7.3f} {max(xs):7.3f}")
    adv = statistics.median(rows[1][1])
    torch_s = statistics.median(rows[3][1])
    print(f"\nadvise median {adv:.3f} s — goal < 0.300 s: {'PASS' if adv < 0.3 else 'FAIL'}; "
          f"import torch alone takes {torch_s:.3f} s ({torch_s / adv:.1f}x advise)")


if __name__ == "__main__":
    main()
