"""Reference tasks of clearly different kinds, built offline and deterministically at run time.

- ``date``: rewrite an English date in ISO 8601 (the example task of examples/make_data.py: the
  same question templates and spellings). The base model knows dates and the format; only the
  answer convention is new: a near domain.
- ``code``: continue real Python source, the standard library's own files on this machine
  (``sysconfig.get_paths()["stdlib"]``): no one here wrote them. Code is the domain where LoRA
  trails full fine-tuning (Biderman et al. 2024).
- ``arithmetic``: worked multi-digit multiplication and addition, every step written out, generated
  from a seeded RNG. Math is the other far domain of Biderman et al. 2024.

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
    return [f"{month} {d.day}, {d.year}", f"{d.day} {month} {d.year}", f"{abbr} {d.day} {d.year}",
            f"the {d.day}{_suffix(d.day)} of {month}, {d.year}"][style]


def date_records(n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """n ISO-date rows (distinct dates between 2020 and 2059)."""
    rng = random.Random(seed)
    start = date(2020, 1, 1)
    days = [start + timedelta(days=k) for k in rng.sample(range(40 * 365), n)]
    return [{"messages": [
        {"role": "user", "content": rng.choice(_ASKS).format(d=_spell(d, rng.randrange(4)))},
        {"role": "assistant", "content": d.isoformat()},
    ]} for d in days]


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


def code_records(n: int, seed: int = DEFAULT_SEED, *, context_lines: int = 8,
                 answer_lines: int = 12) -> list[dict]:
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
        window = lines[at: at + width]
        answer = "\n".join(window[context_lines:])
        if sum(bool(x.strip()) for x in window) < 0.75 * width or len(answer) > 900 or not answer.strip():
            continue
        out.append({"messages": [
            {"role": "user", "content": f"Continue this Python code from {path.name}:\n"
                                        + "\n".join(window[:context_lines])},
            {"role": "assistant", "content": answer},
        ]})
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} code windows found in {len(files)} stdlib files")
    return out


def _multiply_steps(a: int, b: int) -> str:
    parts = [int(d) * 10 ** i for i, d in enumerate(reversed(str(b))) if d != "0"]
    products = [a * p for p in parts]
    text = f"{a} × {b} = " + " + ".join(f"{a} × {p}" for p in parts)
    if len(parts) > 1:
        text += " = " + " + ".join(str(x) for x in products)
    return text + f" = {a * b}"


def _add_steps(a: int, b: int, c: int) -> str:
    return f"{a} + {b} + {c} = {a + b} + {c} = {a + b + c}"


def arithmetic_records(n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """n worked-arithmetic rows: 3-digit × 2-3-digit products by partial products, or three-term
    sums, each step written out, from a seeded RNG."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.7:
            a, b = rng.randrange(100, 1000), rng.randrange(11, 1000)
            q, ans = f"What is {a} × {b}? Work it out step by step.", _multiply_steps(a, b)
        else:
            a, b, c = (rng.randrange(100, 10000) for _ in range(3))
            q, ans = f"What is {a} + {b} + {c}? Work it out step by step.", _add_steps(a, b, c)
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]})
    return out


BUILDERS = {"date": date_records, "code": code_records, "arithmetic": arithmetic_records}


def reference_records(task: str, n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """The rows of reference task `task` (one of TASKS)."""
    if task not in BUILDERS:
        raise ValueError(f"unknown reference task {task!r}; choose one of {', '.join(TASKS)}")
    return BUILDERS[task](n, seed)


def reference_rows(task: str, n: int, seed: int = DEFAULT_SEED) -> list[Row]:
    """The reference task as the executor's validated rows (chat `messages` shape)."""
    return [Row(f"reference:{task}[{i}]", "messages", rec) for i, rec in enumerate(reference_records(task, n, seed))]
