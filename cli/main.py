"""The `tuneplan` command. The advise path imports only stdlib, pydantic and the advisor.

Subcommands of the executor and the TUI are registered here but import their heavy modules only
when they run, so `tuneplan advise` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFEASIBLE, EXIT_OK  # noqa: F401
from tuneplan.base.planio import plan_to_json


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with the flag named and a hint (argparse already exits 2)."""

    def error(self, message: str):  # pragma: no cover - exercised through subprocess tests
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n(see `{self.prog} --help`)\n")


def _add_advise(sub) -> None:
    p = sub.add_parser("advise", help="recommend full / LoRA / QLoRA and write plan.json",
                       description="Recommend a fine-tuning method and its settings.")
    g = p.add_argument_group("model (one of)")
    g.add_argument("--model", help="catalog id (full or after the slash, any case) or a local model directory")
    g.add_argument("--params", help="parameter count such as 7B or 350M (architecture guessed)")
    h = p.add_argument_group("hardware (one of; detected when none)")
    h.add_argument("--gpu", help="GPU name from `tuneplan gpus`, e.g. A100-80GB, RTX4090")
    h.add_argument("--gpu-memory", type=float, metavar="GIB", help="memory of one GPU in GiB")
    h.add_argument("--cpu", action="store_true", help="plan for this machine's CPU and RAM")
    h.add_argument("--cpu-name", metavar="NAME",
                   help="with --cpu: record this CPU name instead of this machine's (implies --cpu)")
    h.add_argument("--cpu-memory", type=float, metavar="GIB",
                   help="with --cpu: RAM for training in GiB instead of this machine's (implies --cpu)")
    h.add_argument("--cpu-cores", type=int, metavar="N",
                   help="with --cpu: logical cores instead of this machine's (implies --cpu)")
    h.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs per node (or CPU processes)")
    h.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (machines)")
    t = p.add_argument_group("task")
    t.add_argument("--domain", dest="domain_distance", metavar="{near,moderate,far}",
                   help="distance from what the base model knows (code, math, new language: far)")
    t.add_argument("--forgetting", dest="forgetting_tolerance", metavar="{low,medium,high}",
                   help="how much general ability may be lost")
    t.add_argument("--domain-label", help="code, math, chat, classification, new-language, …")
    t.add_argument("--regime", metavar="{instruction,continued-pretraining}")
    t.add_argument("--seq-len", type=int, help="tokens per sequence (default 2048)")
    t.add_argument("--batch-size", type=int, help="effective batch in sequences (default 8)")
    t.add_argument("--dataset-tokens", type=float, help="training-set size in tokens (e.g. 5e7)")
    t.add_argument("--needs-fresh-facts", action="store_true",
                   help="the goal is facts that change or must be cited (retrieval comes first)")
    q = p.add_argument_group("pins (the advisor fills the rest and warns where it disagrees)")
    q.add_argument("--method", metavar="{full,lora,qlora}")
    q.add_argument("--lora-rank", type=int)
    q.add_argument("--lora-alpha", type=float,
                   help="LoRA alpha (default fixed 32; the advised LoRA rate scales by 32/alpha)")
    q.add_argument("--target-modules", help="comma-separated module names, or all-linear")
    q.add_argument("--precision", metavar="{bf16-mixed,bf16,fp16-mixed,fp32}")
    q.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    q.add_argument("--optimizer", metavar="{adamw,adamw-8bit,paged-adamw-8bit,paged-adamw-32bit}")
    q.add_argument("--attention", metavar="{eager,sdpa,flash}")
    q.add_argument("--learning-rate", type=float)
    q.add_argument("--max-steps", type=int)
    q.add_argument("--lora-dropout", type=float, help="adapter dropout, 0 <= p < 1 (0: no mask, no input copies)")
    q.add_argument("--kbit-upcast", action=argparse.BooleanOptionalAction, default=None,
                   help="QLoRA: cast non-quantised parameters to fp32 (peft) or keep them 16-bit")
    q.add_argument("--activation-offload", action=argparse.BooleanOptionalAction, default=None,
                   help="offload saved activations to host RAM (saved-tensor hooks)")
    q.add_argument("--loss-chunk-size", type=int, metavar="TOKENS",
                   help="chunked cross-entropy with this many tokens per chunk")
    d = p.add_argument_group("data (recorded in the plan for `tuneplan run`)")
    d.add_argument("--data", help="training data file (JSONL, JSON, CSV or Parquet); its token lengths "
                   "set --seq-len (99th percentile), --dataset-tokens and the planned steps unless given")
    d.add_argument("--eval-data", help="in-domain eval file (default: carved off --data)")
    d.add_argument("--probe-data", help="general-text forgetting probe (default: built-in)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", metavar="PLAN_JSON", help="write the plan here")
    o.add_argument("--json", action="store_true", help="print the plan alone on stdout")
    o.add_argument("--calibrated", action="store_true",
                   help="apply correction factors from `tuneplan calibrate`")
    o.add_argument("--db", help="DuckDB file holding calibration (with --calibrated)")
    c = p.add_argument_group("lockfile check (CI)")
    c.add_argument("--check", metavar="PLAN_JSON",
                   help="re-advise from this plan's own inputs with the current advisor; exit 1 with a "
                        "diff when it is stale, 0 when it matches")
    c.add_argument("--tolerance", type=float, default=0.05, metavar="FRACTION",
                   help="with --check: allowed relative change of the memory estimate (default 0.05)")
    c.add_argument("--update", action="store_true", help="with --check: rewrite a stale plan")
    p.set_defaults(func=cmd_advise)


def _answers(args):
    from .inputs import Answers

    dataset_tokens = int(args.dataset_tokens) if args.dataset_tokens else None
    targets = [t.strip() for t in args.target_modules.split(",") if t.strip()] if args.target_modules else None
    return Answers(
        model=args.model, params=args.params, gpu=args.gpu, gpu_memory=args.gpu_memory,
        cpu=args.cpu or any(v is not None for v in (args.cpu_name, args.cpu_memory, args.cpu_cores)),
        cpu_name=args.cpu_name, cpu_memory=args.cpu_memory, cpu_cores=args.cpu_cores, gpus=args.gpus, nodes=args.nodes,
        task={"domain_distance": args.domain_distance, "forgetting_tolerance": args.forgetting_tolerance,
              "domain_label": args.domain_label, "regime": args.regime, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "dataset_tokens": dataset_tokens,
              "needs_fresh_facts": args.needs_fresh_facts or None},
        pins={"method": args.method, "lora_rank": args.lora_rank,
              "lora_alpha": args.lora_alpha, "target_modules": targets,
              "precision": args.precision, "gradient_checkpointing": args.gradient_checkpointing,
              "optimizer": args.optimizer, "attention": args.attention,
              "learning_rate": args.learning_rate, "max_steps": args.max_steps,
              "lora_dropout": args.lora_dropout, "kbit_upcast": args.kbit_upcast,
              "activation_offload": args.activation_offload, "loss_chunk_size": args.loss_chunk_size},
        data=args.data, eval_data=args.eval_data,
    )


def cmd_advise(args) -> int:
    from tuneplan.schemas import SCHEMA_ID

    from .engine import advise
    from tuneplan.base.errors import InputError
    from .inputs import build_inputs

    if args.check:
        return _cmd_check_plan(args)
    calibration = None
    try:
        inputs = build_inputs(_answers(args))
        if args.calibrated:
            inputs = inputs.model_copy(update={"calibrated": True})
            calibration = _load_calibration(args.db, inputs)
    except InputError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    plan = advise(inputs, calibration=calibration)
    if args.data or args.eval_data or args.probe_data:
        from tuneplan.schemas import DataSpec

        plan = plan.model_copy(update={"data": DataSpec(
            train_path=args.data, eval_path=args.eval_data, probe_path=args.probe_data)})
    text = plan_to_json(plan, SCHEMA_ID)
    if args.output:
        from tuneplan.base.fileio import write_text_atomic

        try:
            write_text_atomic(args.output, text)
        except OSError as exc:
            from tuneplan.base.errors import InputError

            print(InputError.one("-o/--output", f"cannot write {args.output}: {exc.strerror or exc}",
                                 "choose a writable path (an existing, writable directory)").render(),
                  file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.json:
        sys.stdout.write(text)
    else:
        from .render import print_plan

        print_plan(plan, written_to=args.output)
    return EXIT_OK if plan.feasible else EXIT_INFEASIBLE


def _cmd_check_plan(args) -> int:
    from tuneplan.base.errors import InputError
    from .lockcheck import check_plan

    if not (0 <= args.tolerance < 1):
        print(InputError.one("--tolerance", f"{args.tolerance} is not a fraction in [0, 1)",
                             "e.g. --tolerance 0.05 for 5%").render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code, report = check_plan(args.check, tolerance=args.tolerance, db=args.db, update=args.update)
    except InputError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report)
    return code


def _load_calibration(db: Optional[str], inputs) -> Optional[dict[str, float]]:
    """Calibration factors stored by `tuneplan calibrate` (JSON beside the DB); None if none."""
    from .calibration import load_factors

    return load_factors(db, inputs)



# --------------------------------------------------------------------------- small commands


def cmd_validate(args) -> int:
    """The pre-flight `run` and `run --dry-run` make (executor/preflight.py), creating nothing."""
    from tuneplan.executor.preflight import Infeasible, preflight

    from tuneplan.base.errors import InputError

    try:
        checked = preflight(args.plan, data=args.data, model_path=args.model_path, need_train=False,
                            resolve_model=False)
    except InputError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except Infeasible as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INFEASIBLE
    plan = checked.plan
    checked_what = ["schema", "memory block"]
    if checked.train_read is not None:
        checked_what.append(f"{len(checked.train_read.rows)} data rows")
    if checked.model_dir is not None:
        checked_what.append(f"model {checked.model_dir}")
    print(f"{args.plan}: valid plan ({plan.method}, feasible, schema {plan.schema_version}; checked "
          f"{', '.join(checked_what)})")
    for note in checked.notes:
        print(f"  note: {note}")
    if plan.trust_remote_code:
        print(f"warning: {args.plan}: trust_remote_code is true, which has no effect: a plan file cannot "
              f"allow a model's own Python to run (validate never runs it). Pass "
              f"--trust-remote-code to `tuneplan run`/`compare`/`merge` if you trust that code.",
              file=sys.stderr)
    return EXIT_OK


def cmd_schema(args) -> int:
    from tuneplan.schemas import plan_json_schema_text

    sys.stdout.write(plan_json_schema_text())
    return EXIT_OK


def cmd_explain(args) -> int:
    from tuneplan.base.errors import InputError
    from .rules import RULES, RULES_BY_ID

    r = RULES_BY_ID.get(args.rule_id.upper())
    if r is None:
        ids = ", ".join(x.id for x in RULES)
        print(InputError.one("RULE_ID", f"no rule {args.rule_id!r}", f"use one of {ids}").render(),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{r.id} {r.name}\n\n{r.doc}\n\nSource: {r.source}")
    return EXIT_OK


def cmd_rules(args) -> int:
    from .rules import RULES

    for r in RULES:
        print(f"{r.id}  {r.name:34s} {r.source}")
    return EXIT_OK


def cmd_models(args) -> int:
    from . import catalog

    rows = catalog.list_models()
    if args.json:
        print(json.dumps([{"name": m.name, "family": m.family, "params": m.total_params,
                           "active_params": m.active_params, "source": m.source} for m in rows], indent=2))
        return EXIT_OK
    for m in rows:
        active = f" ({m.active_params / 1e9:.2f}B active)" if m.is_moe else ""
        print(f"{m.name:42s} {m.family:8s} {m.total_params / 1e9:9.3f}B{active}  {m.source}")
    return EXIT_OK


def cmd_gpus(args) -> int:
    from . import catalog

    rows = [{"name": g.name, "aliases": list(g.aliases), "memory_bytes": g.memory_bytes,
             "bf16": g.bf16, "vendor": g.vendor, "source": g.source} for g in catalog.list_gpus()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['name']:28s} {r['memory_bytes'] / 1024**3:7.1f} GiB  bf16={'yes' if r['bf16'] else 'no '}  "
              f"aliases: {', '.join(r['aliases'])}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tuneplan", description="Plan, run and check LLM fine-tuning: full, LoRA or QLoRA.")
    p.add_argument("--version", action="version", version=f"tuneplan {package_version()}",
                   help="print tuneplan's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_advise(sub)
    v = sub.add_parser("validate", help="check a plan.json as `tuneplan run` does first, creating nothing",
                       description="The pre-flight of `tuneplan run`: schema and version, the memory block "
                       "against a re-estimate, feasibility, LoRA target modules, data rows, the model "
                       "directory's architecture. Exit 0 valid, 2 bad input, 3 infeasible.")
    v.add_argument("plan")
    v.add_argument("--data", metavar="PATH", help="also check this training data file")
    v.add_argument("--model-path", metavar="DIR", help="also check that this model matches the plan")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("schema", help="print plan.json's JSON Schema")
    s.set_defaults(func=cmd_schema)
    e = sub.add_parser("explain", help="print a rule's why, when-not and source")
    e.add_argument("rule_id")
    e.set_defaults(func=cmd_explain)
    r = sub.add_parser("rules", help="list the advisor's rules in order")
    r.set_defaults(func=cmd_rules)
    m = sub.add_parser("models", help="list the model catalog")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
    g = sub.add_parser("gpus", help="list the GPU catalog")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gpus)
    # The executor's and the TUI's subcommands; their modules import only argparse at load time.
    from tuneplan.executor import cli as executor_cli
    from tuneplan.tui import cli as tui_cli

    executor_cli.register(sub)
    tui_cli.register(sub)
    return p


def package_version() -> str:
    """The installed distribution's version (importlib.metadata, stdlib), or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tuneplan")
    except PackageNotFoundError:
        return "unknown"


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (`tuneplan runs --json | head`): stop quietly.

    As the Python docs advise for SIGPIPE, point stdout at devnull so the interpreter's final
    flush does not raise again, and exit 1 like other tools cut off mid-write (141 would need the
    signal itself).
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_FAILED


def main(argv: Optional[list[str]] = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()
            return code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
