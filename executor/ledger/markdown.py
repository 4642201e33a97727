"""Markdown summaries for a pull-request comment: `tuneplan check --format markdown` and
`tuneplan compare ... --format markdown`. GitHub-flavoured tables (pipes escaped), one verdict
line first so a reviewer sees the answer without scrolling. Stdlib only."""

from __future__ import annotations

from typing import Any, Optional

GIB = 1024**3


def _cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def _gib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def check_markdown(result: dict, db_label: str) -> str:
    """The `tuneplan check` result (check.check_runs, optionally with "rules") as Markdown."""
    s = result["summary"]
    icon = "✅" if s["broken"] == 0 else "❌"
    out = [
        f"### {icon} tuneplan check: {s['held']} of {s['runs']} runs held, {s['broken']} broken",
        "",
        f"Database `{db_label}`. Broken: out of memory {s['out_of_memory']}, memory under-predicted "
        f"{s['memory_under_predicted']}, did not learn {s['did_not_learn']}, forgot beyond tolerance "
        f"{s['forgot_beyond_tolerance']}.",
        "",
    ]
    rows = []
    for r in result["runs"]:
        forgetting = (
            None
            if r["forgetting"] is None
            else f"{r['forgetting']:+.4f}"
            + (
                ""
                if r["forgetting_within_tolerance"] is None
                else (" (ok)" if r["forgetting_within_tolerance"] else " (over)")
            )
        )
        learned = None if r["learned"] is None else ("yes" if r["learned"] else "no")
        rows.append(
            [
                f"`{r['run_id']}`",
                r["method"],
                r["status"],
                _pct(r["memory_error"]),
                _pct(r["memory_error_comparable"]),
                learned,
                forgetting,
                "held" if r["verdict"] == "held" else "**broken**",
                "; ".join(r["reasons"] + r["notes"]),
            ]
        )
    out += _table(
        [
            "run",
            "method",
            "status",
            "mem err",
            "mem err (like-for-like)",
            "learned",
            "forgetting",
            "verdict",
            "reasons",
        ],
        rows,
    )
    if result.get("rules"):
        out += ["", "#### Rule audits", ""]
        out += _table(
            ["rule", "status", "held", "promise", "note"],
            [
                [r["rule"], r["status"], f"{r['held']}/{r['tested']}", r["promise"], r["note"]]
                for r in result["rules"]
            ],
        )
    return "\n".join(out) + "\n"


def compare_markdown(cmp) -> str:
    """A `tuneplan compare` Comparison as Markdown."""
    ok = all(o.status == "succeeded" for o in cmp.outcomes.values()) and not cmp.interrupted
    out = [
        f"### {'✅' if ok else '❌'} tuneplan compare `{cmp.compare_id}` ({cmp.domain_distance} domain, "
        f"{cmp.forgetting_tolerance} forgetting tolerance)",
        "",
        cmp.sentence,
        "",
    ]
    rows = []
    for m, o in cmp.outcomes.items():
        rows.append(
            [
                m + (" (advised)" if m == cmp.advised_method else ""),
                o.status,
                _gib(o.predicted_comparable_bytes),
                _gib(o.measured_comparable_bytes),
                _pct(o.memory_error),
                None if o.learning is None else f"{o.learning:+.4f}",
                None if o.forgetting is None else f"{o.forgetting:+.4f}",
                None if o.tokens_per_second is None else f"{o.tokens_per_second:,.0f}",
                f"`{o.run_id}`" if o.run_id else None,
            ]
        )
    out += _table(
        ["method", "status", "mem pred", "mem meas", "mem err", "learning", "forgetting", "tok/s", "run"],
        rows,
    )
    out += [
        "",
        "_mem: like-for-like tensor bytes (prediction less framework overhead, peak less runtime); "
        "learning = eval loss before - after; forgetting = probe loss after - before._",
    ]
    return "\n".join(out) + "\n"
