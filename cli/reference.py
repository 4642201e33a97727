"""Commands that print what tuneplan knows, writing nothing: ``tuneplan schema`` (plan.json's
JSON Schema), ``tuneplan explain RULE_ID``, ``tuneplan rules``, ``tuneplan models`` and
``tuneplan gpus`` (the catalogs). Exit 0, or 2 for an unknown rule id.
"""

from __future__ import annotations

import argparse
import json
import sys

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_OK

from .output import input_error


def add_schema(sub: "argparse._SubParsersAction") -> None:
    s = sub.add_parser("schema", help="print plan.json's JSON Schema")
    s.set_defaults(func=cmd_schema)


def add_explain(sub: "argparse._SubParsersAction") -> None:
    e = sub.add_parser("explain", help="print a rule's why, when-not and source")
    e.add_argument("rule_id")
    e.set_defaults(func=cmd_explain)


def add_rules(sub: "argparse._SubParsersAction") -> None:
    r = sub.add_parser("rules", help="list the advisor's rules in order")
    r.set_defaults(func=cmd_rules)


def add_models(sub: "argparse._SubParsersAction") -> None:
    m = sub.add_parser("models", help="list the model catalog")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)


def add_gpus(sub: "argparse._SubParsersAction") -> None:
    g = sub.add_parser("gpus", help="list the GPU catalog")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gpus)


def cmd_schema(args) -> int:
    from tuneplan.schemas import plan_json_schema_text

    sys.stdout.write(plan_json_schema_text())
    return EXIT_OK


def cmd_explain(args) -> int:
    from tuneplan.advisor.rules import RULES, RULES_BY_ID

    r = RULES_BY_ID.get(args.rule_id.upper())
    if r is None:
        ids = ", ".join(x.id for x in RULES)
        input_error("RULE_ID", f"no rule {args.rule_id!r}", f"use one of {ids}")
        return EXIT_BAD_INPUT
    print(f"{r.id} {r.name}\n\n{r.doc}\n\nSource: {r.source}")
    return EXIT_OK


def cmd_rules(args) -> int:
    from tuneplan.advisor.rules import RULES

    for r in RULES:
        print(f"{r.id}  {r.name:34s} {r.source}")
    return EXIT_OK


def cmd_models(args) -> int:
    from tuneplan.advisor import catalog

    rows = catalog.list_models()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": m.name,
                        "family": m.family,
                        "params": m.total_params,
                        "active_params": m.active_params,
                        "source": m.source,
                    }
                    for m in rows
                ],
                indent=2,
            )
        )
        return EXIT_OK
    for m in rows:
        active = f" ({m.active_params / 1e9:.2f}B active)" if m.is_moe else ""
        print(f"{m.name:42s} {m.family:8s} {m.total_params / 1e9:9.3f}B{active}  {m.source}")
    return EXIT_OK


def cmd_gpus(args) -> int:
    from tuneplan.advisor import catalog

    rows = [
        {
            "name": g.name,
            "aliases": list(g.aliases),
            "memory_bytes": g.memory_bytes,
            "bf16": g.bf16,
            "vendor": g.vendor,
            "source": g.source,
        }
        for g in catalog.list_gpus()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(
            f"{r['name']:28s} {r['memory_bytes'] / 1024**3:7.1f} GiB  bf16={'yes' if r['bf16'] else 'no '}  "
            f"aliases: {', '.join(r['aliases'])}"
        )
    return EXIT_OK


COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def add_completion(sub: "argparse._SubParsersAction") -> None:
    c = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or tcsh)",
        description=(
            "Print a completion script for every command and flag, generated from tuneplan's own "
            "parser by shtab. bash: `tuneplan completion bash > ~/.local/share/bash-completion/"
            "completions/tuneplan`; zsh: `tuneplan completion zsh > ~/.zfunc/_tuneplan` (with "
            "~/.zfunc on fpath)."
        ),
    )
    c.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell to complete in")
    c.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from .main import build_parser

    parser = build_parser()
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return EXIT_OK
