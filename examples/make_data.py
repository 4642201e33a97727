"""Generate the example task: rewrite English dates in ISO 8601 (chat `messages` rows).

Deterministic (seeded): `python examples/make_data.py` rewrites examples/data/train.jsonl (400 rows)
and examples/data/eval.jsonl (60 rows, dates disjoint from training). SmolLM2-135M-Instruct does
not answer in this exact format out of the box and learns it within a few dozen LoRA steps, so the
eval loss before and after a short run shows learning.
"""

from __future__ import annotations

import calendar
import json
import random
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data"
SEED = 20240607
N_TRAIN, N_EVAL = 400, 60
ASKS = [
    "Convert this date to ISO 8601: {d}",
    "Write {d} in YYYY-MM-DD format.",
    "What is {d} as an ISO date?",
    "ISO date for: {d}",
]


def spell(d: date, style: int) -> str:
    """One of several English spellings of a date."""
    month, abbr = calendar.month_name[d.month], calendar.month_abbr[d.month]
    return [
        f"{month} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{abbr} {d.day} {d.year}",
        f"the {d.day}{suffix(d.day)} of {month}, {d.year}",
    ][style]


def suffix(day: int) -> str:
    """English ordinal suffix: 1st, 2nd, 3rd, 4th, 11th, 21st ..."""
    if 10 <= day % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def rows(rng: random.Random, days: list[date]) -> list[dict]:
    """Chat rows asking for each date in ISO form."""
    out = []
    for d in days:
        question = rng.choice(ASKS).format(d=spell(d, rng.randrange(4)))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": d.isoformat()},
                ]
            }
        )
    return out


def main() -> None:
    """Write train.jsonl and eval.jsonl."""
    rng = random.Random(SEED)
    start = date(1950, 1, 1)
    picked = rng.sample(range((date(2049, 12, 31) - start).days), N_TRAIN + N_EVAL)
    days = [start + timedelta(days=n) for n in picked]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, chunk in (("train", days[:N_TRAIN]), ("eval", days[N_TRAIN:])):
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows(rng, chunk):
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
