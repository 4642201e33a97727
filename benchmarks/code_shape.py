"""The shape of the code: file sizes and function lengths per package, the largest files.

Issue 10 (redesign) measures structure with these figures: median and p90 function length (lines,
``def`` to last line, nested functions counted on their own), and the largest files. Prints
figures; asserts nothing.
Run: .venv/bin/python benchmarks/code_shape.py [ROOT]
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

PACKAGES = ("schemas", "advisor", "executor", "tui", "cli", "base")


def function_lengths(path: Path) -> list[int]:
    """Line counts of every function and method in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno
    ]


def p90(xs: list[int]) -> float:
    return statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else float(xs[0] if xs else 0)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    files = {
        p: len(p.read_text(encoding="utf-8").splitlines())
        for pkg in PACKAGES
        for p in sorted((root / pkg).rglob("*.py"))
    }
    print(
        f"{'package':10s} {'files':>5s} {'lines':>6s} {'median file':>11s} {'funcs':>5s} "
        f"{'median fn':>9s} {'p90 fn':>6s} {'max fn':>6s}"
    )
    every: list[int] = []
    for pkg in PACKAGES:
        mine = {p: n for p, n in files.items() if p.relative_to(root).parts[0] == pkg}
        if not mine:
            continue
        fns = [n for p in mine for n in function_lengths(p)]
        every += fns
        print(
            f"{pkg:10s} {len(mine):5d} {sum(mine.values()):6d} {statistics.median(mine.values()):11.0f} "
            f"{len(fns):5d} {statistics.median(fns):9.0f} {p90(fns):6.0f} {max(fns):6d}"
        )
    print(
        f"{'all':10s} {len(files):5d} {sum(files.values()):6d} {statistics.median(files.values()):11.0f} "
        f"{len(every):5d} {statistics.median(every):9.0f} {p90(every):6.0f} {max(every):6d}"
    )
    print("\nlargest files (lines):")
    for p, n in sorted(files.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {n:5d}  {p.relative_to(root)}")


if __name__ == "__main__":
    main()
