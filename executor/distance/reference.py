"""Reference tasks of clearly different kinds, built offline and deterministically at run time.

- ``date``: rewrite an English date in ISO 8601 (the example task of examples/make_data.py: the
  same question templates and spellings). The base model knows dates and the format; only the
  answer convention is new: a near domain.
- ``code``: continue real Python source, the standard library's own files on this machine
  (``sysconfig.get_paths()["stdlib"]``): no one here wrote them. Code is the domain where LoRA
  trails full fine-tuning (Biderman et al. 2024).
- ``arithmetic``: worked arithmetic of six kinds (products, sums, differences, division with
  remainder, percentages, linear equations), every step written out, generated from a seeded RNG. Math is the other far domain of Biderman et al. 2024.

Every task is a list of chat ``messages`` rows (a user turn, an assistant answer), so the loss is
taken on the assistant tokens only, exactly as the executor trains on such rows.
"""

from __future__ import annotations

import calendar
import random
import sysconfig
from datetime import date, timedelta
from pathlib import Path

from ..data import Row

TASKS = ("date", "code", "arithmetic")
DEFAULT_SEED = 20240607

_ASKS = [
    "Convert this date to ISO 8601: {d}",
    "Write {d} in YYYY-MM-DD format.",
    "What is {d} as an ISO date?",
    "ISO date for: {d}",
]


def _suffix(day: int) -> str:
    if 10 <= day % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _spell(d: date, style: int) -> str:
    month, abbr = calendar.month_name[d.month], calendar.month_abbr[d.month]
    return [
        f"{month} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{abbr} {d.day} {d.year}",
        f"the {d.day}{_suffix(d.day)} of {month}, {d.year}",
    ][style]


def date_records(n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """n ISO-date rows (distinct dates between 2020 and 2059)."""
    rng = random.Random(seed)
    start = date(2020, 1, 1)
    days = [start + timedelta(days=k) for k in rng.sample(range(40 * 365), n)]
    return [
        {
            "messages": [
                {"role": "user", "content": rng.choice(_ASKS).format(d=_spell(d, rng.randrange(4)))},
                {"role": "assistant", "content": d.isoformat()},
            ]
        }
        for d in days
    ]


def stdlib_files() -> list[Path]:
    """The standard library's top-level .py modules on this machine, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.is_file() and not p.name.startswith("_"))


def _code_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [line.rstrip() for line in text.splitlines()]


def code_records(
    n: int, seed: int = DEFAULT_SEED, *, context_lines: int = 8, answer_lines: int = 12
) -> list[dict]:
    """n rows: a user turn with `context_lines` of a stdlib module, the assistant continuing with
    the next `answer_lines` (windows with mostly non-blank code, from seeded random files)."""
    files = stdlib_files()
    if not files:
        raise RuntimeError(f"no Python files under {sysconfig.get_paths()['stdlib']}")
    rng = random.Random(seed)
    out: list[dict] = []
    width = context_lines + answer_lines
    for _attempt in range(50 * n):
        if len(out) == n:
            break
        path = rng.choice(files)
        lines = _code_lines(path)
        if len(lines) < width + 1:
            continue
        at = rng.randrange(0, len(lines) - width)
        window = lines[at : at + width]
        answer = "\n".join(window[context_lines:])
        if sum(bool(x.strip()) for x in window) < 0.75 * width or len(answer) > 900 or not answer.strip():
            continue
        out.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": f"Continue this Python code from {path.name}:\n"
                        + "\n".join(window[:context_lines]),
                    },
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} code windows found in {len(files)} stdlib files")
    return out


def _multiply(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(100, 1000), rng.randrange(11, 1000)
    parts = [int(d) * 10**i for i, d in enumerate(reversed(str(b))) if d != "0"]
    steps = "; ".join(f"{a} × {p} = {a * p}" for p in parts)
    total = " + ".join(str(a * p) for p in parts)
    return f"What is {a} × {b}?", f"{steps}; {total} = {a * b}. So {a} × {b} = {a * b}."


def _add(rng: random.Random) -> tuple[str, str]:
    a, b, c = (rng.randrange(100, 10000) for _ in range(3))
    return (
        f"What is {a} + {b} + {c}?",
        f"{a} + {b} = {a + b}; {a + b} + {c} = {a + b + c}. So the sum is {a + b + c}.",
    )


def _subtract(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(5000, 100000), rng.randrange(100, 5000)
    return f"What is {a} - {b}?", f"{a} - {b} = {a - b}. Check: {a - b} + {b} = {a}."


def _divide(rng: random.Random) -> tuple[str, str]:
    d, q, r = rng.randrange(3, 60), rng.randrange(10, 500), 0
    r = rng.randrange(0, d)
    n = d * q + r
    return (
        f"Divide {n} by {d}, giving the quotient and remainder.",
        f"{d} × {q} = {d * q}; {n} - {d * q} = {r}. So {n} = {d} × {q} + {r}: quotient {q}, remainder {r}.",
    )


def _percent(rng: random.Random) -> tuple[str, str]:
    p, n = rng.choice([5, 10, 15, 20, 25, 30, 40, 45, 75]), rng.randrange(2, 400) * 20
    return f"What is {p}% of {n}?", f"{p}% of {n} = {n} × {p} / 100 = {n * p} / 100 = {n * p // 100}."


def _equation(rng: random.Random) -> tuple[str, str]:
    a, x, b = rng.randrange(2, 20), rng.randrange(-50, 50), rng.randrange(-200, 200)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    return (
        f"Solve {a}x {sign} {abs(b)} = {c}.",
        f"{a}x = {c} {'-' if b >= 0 else '+'} {abs(b)} = {c - b}; x = {c - b} / {a} = {x}.",
    )


_PROBLEMS = (_multiply, _add, _subtract, _divide, _percent, _equation)


def arithmetic_records(n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """n worked-arithmetic rows of six kinds (products by partial products, sums, differences,
    division with remainder, percentages, linear equations), every step written out, from a
    seeded RNG."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q, ans = rng.choice(_PROBLEMS)(rng)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": q + " Work it out step by step."},
                    {"role": "assistant", "content": ans},
                ]
            }
        )
    return out


BUILDERS = {"date": date_records, "code": code_records, "arithmetic": arithmetic_records}


def reference_records(task: str, n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """The rows of reference task `task` (one of TASKS)."""
    if task not in BUILDERS:
        raise ValueError(f"unknown reference task {task!r}; choose one of {', '.join(TASKS)}")
    return BUILDERS[task](n, seed)


def reference_rows(task: str, n: int, seed: int = DEFAULT_SEED) -> list[Row]:
    """The reference task as the executor's validated rows (chat `messages` shape)."""
    return [
        Row(f"reference:{task}[{i}]", "messages", rec)
        for i, rec in enumerate(reference_records(task, n, seed))
    ]
