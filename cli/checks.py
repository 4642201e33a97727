"""Commands that check the advice against recorded runs (docs/checks.md): ``tuneplan check``
(verdicts, rule audits, the ``--strict`` CI gate), ``tuneplan calibrate`` and ``tuneplan report``.

Exit codes: 0 success; 1 a broken gate, no usable runs, or a failed write; 2 bad input or no
database. Only argparse and the standard library load with this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

from .options import DB_HELP
from .output import check_out_dir, console, db_label, err, signed_pct


# --------------------------------------------------------------------------------------------
# Parsers


def add_check(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "check",
        help="did the advice hold? memory, learning and forgetting of every run, and rule audits",
        description="Judge every recorded run: memory error (signed), out-of-memory on a plan "
        "predicted to fit, under-prediction beyond 25%, forgetting beyond the tolerance's "
        "threshold, no learning. --rules adds the per-rule audit across comparisons (TP020, "
        "TP021, TP023, TP030). Exit 0 (with --strict: 1 when any verdict is broken); 2 when "
        "the database does not exist.",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.add_argument("--json", action="store_true", help="print JSON: runs, summary (and rules)")
    p.add_argument(
        "--format",
        choices=("table", "json", "markdown"),
        default=None,
        help="output: table (default), json (same as --json), or markdown for a pull-request comment",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="the CI gate: exit 1, with the reasons on stderr, on zero runs, any run "
        "that did not succeed, a NaN/inf loss, any broken verdict, and with --rules a "
        "broken or mixed audit (docs/checks.md)",
    )
    p.add_argument(
        "--run",
        metavar="ID",
        action="append",
        default=None,
        help="judge only runs whose run_id starts with ID (repeatable)",
    )
    p.add_argument(
        "--plan",
        metavar="PLAN",
        action="append",
        default=None,
        help="judge only runs of this plan: a plan.json file or its 16-hex plan_hash (repeatable)",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="judge only runs started at or after WHEN (ISO date or time, UTC, e.g. "
        "2025-01-31 or 2025-01-31T12:00)",
    )
    p.add_argument(
        "--rules", action="store_true", help="also summarise which rules' promises held across runs"
    )
    p.set_defaults(func=cmd_check)


def add_calibrate(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="fit memory-estimator correction factors from succeeded runs; propose distance thresholds",
        description="Fit, per device kind and architecture family, a factor for the "
        "estimator's activation-like terms (activations, logits_and_loss) from measured peaks; "
        "write <db dir>/calibration.json for `tuneplan advise --calibrated`. Prints the mean "
        "absolute memory error before and after. Then proposes the measured-distance thresholds "
        "(docs/domain-distance.md) that best separate LoRA matching full fine-tuning from falling "
        "short in the recorded comparisons, current vs proposed (printed, not applied). Exit 0 "
        "written, 1 no usable runs, 2 no database.",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.set_defaults(func=cmd_calibrate)


def add_report(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "report",
        help="write PNG figures and report.md from the run database",
        description="Predicted vs measured memory, learning vs forgetting per method, loss "
        "curves (PNG, matplotlib) and report.md with a summary table and the rule audit. Exit 0 "
        "written, 1 matplotlib missing or writing failed, 2 no database.",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="directory to write into; a non-empty one is refused unless --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out directory (report.md and the PNGs are overwritten)",
    )
    p.set_defaults(func=cmd_report)


# --------------------------------------------------------------------------------------------
# check


def cmd_check(args: argparse.Namespace) -> int:
    from tuneplan.executor.ledger import check
    from tuneplan.executor.ledger import NoDatabase, SchemaOutdated, StoreError

    filters = _check_filters(args)
    if isinstance(filters, int):
        return filters
    try:
        result = check.check_runs(args.db, **filters)
        if args.rules:
            result["rules"] = check.audit_rules(args.db)
            result["distance"] = check.audit_distance(args.db)
    except (NoDatabase, SchemaOutdated) as exc:
        err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except StoreError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    gate = check.gate(result) if args.strict else []
    if getattr(args, "format", None) == "markdown":
        from tuneplan.executor.ledger.markdown import check_markdown

        sys.stdout.write(check_markdown(result, db_label(args.db)))
    elif args.json or getattr(args, "format", None) == "json":
        print(check.to_json(result))
    else:
        _print_check(result, args.db)
    if gate:
        err(f"check --strict: FAILED ({len(gate)} reason{'s' if len(gate) != 1 else ''}):")
        for reason in gate:
            err(f"  - {reason}")
        return EXIT_FAILED
    return EXIT_OK


def _check_filters(args: argparse.Namespace) -> "dict | int":
    """check's --run/--plan/--since as check_runs keywords, or exit 2 for a bad value."""
    from tuneplan.base.errors import InputError, Problem

    problems = []
    hashes = []
    for value in args.plan or []:
        path = Path(value).expanduser()
        if path.is_file():
            try:
                from tuneplan.schemas import load_plan_dict

                plan = load_plan_dict(json.loads(path.read_text(encoding="utf-8")))
            except Exception as exc:  # noqa: BLE001 - any unreadable plan is bad input
                problems.append(
                    Problem(
                        "--plan",
                        f"cannot read plan {path}: {exc}",
                        "give a plan.json written by `tuneplan advise`",
                    )
                )
                continue
            from tuneplan.base.planio import plan_hash

            hashes.append(plan_hash(plan))
        elif len(value) == 16 and all(c in "0123456789abcdef" for c in value.lower()):
            hashes.append(value.lower())
        else:
            problems.append(
                Problem(
                    "--plan",
                    f"{value!r} is neither a plan file nor a plan_hash",
                    "give a plan.json path or the 16-hex plan_hash `tuneplan runs --json` shows",
                )
            )
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            problems.append(
                Problem(
                    "--since",
                    f"{args.since!r} is not an ISO date or time",
                    "e.g. --since 2025-01-31 or --since 2025-01-31T12:00",
                )
            )
        else:
            if since.tzinfo is not None:
                since = since.astimezone(timezone.utc).replace(tzinfo=None)
    if problems:
        err(InputError(problems).render())
        return EXIT_BAD_INPUT
    return {
        "run_ids": args.run,
        "plan_hashes": hashes or None,
        "since": since.isoformat(sep=" ") if since else None,
    }


def _print_check(result: dict, db: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    table = Table(title=escape(f"check: runs in {db_label(db)}"), title_justify="left")
    for name in (
        "run",
        "method",
        "status",
        "mem err",
        "mem err (like-for-like)",
        "learned",
        "forgetting",
        "verdict",
        "reasons",
    ):
        table.add_column(name, no_wrap=name != "reasons", overflow="fold")
    for r in result["runs"]:
        verdict = "[green]held[/]" if r["verdict"] == "held" else "[red]broken[/]"
        forgetting = (
            "-"
            if r["forgetting"] is None
            else (
                f"{r['forgetting']:+.4f}"
                + (
                    ""
                    if r["forgetting_within_tolerance"] is None
                    else (" ok" if r["forgetting_within_tolerance"] else " over")
                )
            )
        )
        table.add_row(
            escape(r["run_id"]),
            escape(r["method"] or "-"),
            escape(r["status"]),
            signed_pct(r["memory_error"]) or "-",
            signed_pct(r["memory_error_comparable"]) or "-",
            "-" if r["learned"] is None else ("yes" if r["learned"] else "no"),
            forgetting,
            verdict,
            escape("; ".join(r["reasons"] + r["notes"])),
        )
    out.print(table)
    s = result["summary"]
    out.print(
        f"{s['runs']} runs: {s['held']} held, {s['broken']} broken "
        f"(out of memory {s['out_of_memory']}, under-predicted {s['memory_under_predicted']}, "
        f"did not learn {s['did_not_learn']}, forgot beyond tolerance "
        f"{s['forgot_beyond_tolerance']})"
    )
    for rule in result.get("rules", []) + ([result["distance"]] if result.get("distance") else []):
        out.print(
            escape(
                f"{rule['rule']} {rule['status']:<8} {rule['held']}/{rule['tested']} held "
                f"- {rule['promise']}" + (f" ({rule['note']})" if rule["note"] else "")
            )
        )
        for line in rule["evidence"]:
            out.print(escape(f"    {line}"))


# --------------------------------------------------------------------------------------------
# calibrate, report


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tuneplan.executor.ledger import calibrate
    from tuneplan.executor.ledger import NoDatabase, SchemaOutdated, StoreError

    try:
        fitted = calibrate.fit(args.db)
    except (NoDatabase, SchemaOutdated) as exc:
        err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except StoreError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    distance = _distance_fit(args.db)
    for run_id, why in fitted.skipped:
        err(f"skipped {run_id}: {why}")
    if not fitted.keys:
        if distance:
            print("\n".join(distance))
        err(
            "error: no succeeded run with a measured peak and a plan to calibrate from "
            "(fix: run plans with `tuneplan run`, then calibrate); nothing written"
        )
        return EXIT_FAILED
    path = calibrate.write(args.db, fitted)
    for key, k in fitted.keys.items():
        factors = ", ".join(f"{t} x{v:g}" for t, v in k.factors.items())
        print(
            f"{key}: {factors} from {len(k.run_ids)} run{'s' if len(k.run_ids) != 1 else ''}; "
            f"mean |memory error| {k.mean_abs_error_before:.1%} -> {k.mean_abs_error_after:.1%}"
        )
    print(
        f"mean absolute memory error (like-for-like, {sum(len(k.run_ids) for k in fitted.keys.values())} "
        f"runs): before {fitted.mean_abs_error_before:.1%}, after {fitted.mean_abs_error_after:.1%}"
    )
    print(f"wrote {path}; use it with `tuneplan advise ... --calibrated --db {db_label(args.db)}`")
    if distance:
        print("\n".join(distance))
    return EXIT_OK


def _distance_fit(db) -> list[str]:
    """The distance-threshold refit's lines (executor/ledger/distance_fit.py); a failure is one
    line, never the memory calibration lost."""
    from tuneplan.executor.ledger import distance_fit

    try:
        return distance_fit.lines(distance_fit.fit(db))
    except Exception as exc:  # noqa: BLE001 - the memory part stands on its own
        return [f"distance thresholds: not refitted ({type(exc).__name__}: {exc})"]


def cmd_report(args: argparse.Namespace) -> int:
    from tuneplan.executor.ledger import NoDatabase, SchemaOutdated, StoreError

    refused = check_out_dir(args.out, "--out", args.force)
    if refused is not None:
        return refused

    try:
        from tuneplan.executor.ledger.report import write_report

        paths = write_report(args.db, args.out)
    except ModuleNotFoundError as exc:
        err(f"error: `tuneplan report` needs {exc.name!r} (fix: pip install matplotlib)")
        return EXIT_FAILED
    except (NoDatabase, SchemaOutdated) as exc:
        err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except (StoreError, OSError) as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    for p in paths:
        print(f"wrote {p}")
    return EXIT_OK
