"""`tuneplan advise` (with its `--check` lockfile mode) and `tuneplan validate`: a plan written,
and a plan checked as `tuneplan run` checks it first.

The advise path imports only the standard library, pydantic and the advisor: the modules each
branch needs (the engine, rich rendering, the lockfile check, calibration) load inside it.
Exit codes: 0 a feasible plan (or a valid / current one); 1 a stale plan under `--check`;
2 bad input; 3 nothing fits (advise) or an infeasible plan (validate).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK

from .measure import add_measure_options
from .output import input_error


def _one_of(literal: object) -> str:
    """argparse metavar ``{a,b,c}`` from a schema Literal: the choices are written once, in
    schemas/common.py (pydantic validates the value and names the field when it is not one)."""
    from typing import get_args

    return "{" + ",".join(get_args(literal)) + "}"


def add_advise(sub: "argparse._SubParsersAction") -> None:
    from tuneplan.schemas import common as C  # built only when `advise` (or --help) is parsed

    p = sub.add_parser(
        "advise",
        help="recommend full / LoRA / QLoRA and write plan.json",
        description="Recommend a fine-tuning method and its settings.",
    )
    g = p.add_argument_group("model (one of)")
    g.add_argument(
        "--model", help="catalog id (full or after the slash, any case) or a local model directory"
    )
    g.add_argument("--params", help="parameter count such as 7B or 350M (architecture guessed)")
    h = p.add_argument_group("hardware (one of; detected when none)")
    h.add_argument("--gpu", help="GPU name from `tuneplan gpus`, e.g. A100-80GB, RTX4090")
    h.add_argument("--gpu-memory", type=float, metavar="GIB", help="memory of one GPU in GiB")
    h.add_argument("--cpu", action="store_true", help="plan for this machine's CPU and RAM")
    h.add_argument(
        "--cpu-name",
        metavar="NAME",
        help="with --cpu: record this CPU name instead of this machine's (implies --cpu)",
    )
    h.add_argument(
        "--cpu-memory",
        type=float,
        metavar="GIB",
        help="with --cpu: RAM for training in GiB instead of this machine's (implies --cpu)",
    )
    h.add_argument(
        "--cpu-cores",
        type=int,
        metavar="N",
        help="with --cpu: logical cores instead of this machine's (implies --cpu)",
    )
    h.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs per node (or CPU processes)")
    h.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (machines)")
    t = p.add_argument_group("task")
    t.add_argument(
        "--domain",
        dest="domain_distance",
        metavar=_one_of(C.DomainDistance),
        help="distance from what the base model knows (code, math, new language: far)",
    )
    t.add_argument(
        "--forgetting",
        dest="forgetting_tolerance",
        metavar=_one_of(C.ForgettingTolerance),
        help="how much general ability may be lost",
    )
    t.add_argument("--domain-label", help="code, math, chat, classification, new-language, …")
    t.add_argument("--regime", metavar=_one_of(C.Regime))
    t.add_argument("--seq-len", type=int, help="tokens per sequence (default 2048)")
    t.add_argument("--batch-size", type=int, help="effective batch in sequences (default 8)")
    t.add_argument("--dataset-tokens", type=float, help="training-set size in tokens (e.g. 5e7)")
    t.add_argument(
        "--needs-fresh-facts",
        action="store_true",
        help="the goal is facts that change or must be cited (retrieval comes first)",
    )
    q = p.add_argument_group("pins (the advisor fills the rest and warns where it disagrees)")
    q.add_argument("--method", metavar=_one_of(C.Method))
    q.add_argument("--lora-rank", type=int)
    q.add_argument(
        "--lora-alpha",
        type=float,
        help="LoRA alpha (default fixed 32; the advised LoRA rate scales by 32/alpha)",
    )
    q.add_argument("--target-modules", help="comma-separated module names, or all-linear")
    q.add_argument("--precision", metavar=_one_of(C.Precision))
    q.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    q.add_argument("--optimizer", metavar=_one_of(C.Optimizer))
    q.add_argument("--attention", metavar=_one_of(C.Attention))
    q.add_argument("--learning-rate", type=float)
    q.add_argument("--max-steps", type=int)
    q.add_argument(
        "--lora-dropout", type=float, help="adapter dropout, 0 <= p < 1 (0: no mask, no input copies)"
    )
    q.add_argument(
        "--kbit-upcast",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="QLoRA: cast non-quantised parameters to fp32 (peft) or keep them 16-bit",
    )
    q.add_argument(
        "--activation-offload",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="offload saved activations to host RAM (saved-tensor hooks)",
    )
    q.add_argument(
        "--loss-chunk-size",
        type=int,
        metavar="TOKENS",
        help="chunked cross-entropy with this many tokens per chunk",
    )
    d = p.add_argument_group("data (recorded in the plan for `tuneplan run`)")
    d.add_argument(
        "--data",
        help="training data file (JSONL, JSON, CSV or Parquet); its token lengths "
        "set --seq-len (99th percentile), --dataset-tokens and the planned steps unless given",
    )
    d.add_argument("--eval-data", help="in-domain eval file (default: carved off --data)")
    d.add_argument("--probe-data", help="general-text forgetting probe (default: built-in)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", metavar="PLAN_JSON", help="write the plan here")
    o.add_argument("--json", action="store_true", help="print the plan alone on stdout")
    o.add_argument(
        "--calibrated", action="store_true", help="apply correction factors from `tuneplan calibrate`"
    )
    o.add_argument("--db", help="DuckDB file holding calibration (with --calibrated)")
    c = p.add_argument_group("lockfile check (CI)")
    c.add_argument(
        "--check",
        metavar="PLAN_JSON",
        help="re-advise from this plan's own inputs with the current advisor; exit 1 with a "
        "diff when it is stale, 0 when it matches",
    )
    c.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="with --check: allowed relative change of the memory estimate (default 0.05)",
    )
    c.add_argument("--update", action="store_true", help="with --check: rewrite a stale plan")
    m = p.add_argument_group("measured domain distance")
    m.add_argument(
        "--measure-distance",
        action="store_true",
        help="measure the domain distance of --data on the base model first (loads torch; "
        "docs/domain-distance.md); a declared --domain is kept and checked against it",
    )
    add_measure_options(p, with_model=False)
    p.set_defaults(func=cmd_advise)


def _answers(args):
    from tuneplan.advisor.inputs import Answers

    dataset_tokens = int(args.dataset_tokens) if args.dataset_tokens else None
    targets = (
        [t.strip() for t in args.target_modules.split(",") if t.strip()] if args.target_modules else None
    )
    return Answers(
        model=args.model,
        params=args.params,
        gpu=args.gpu,
        gpu_memory=args.gpu_memory,
        cpu=args.cpu or any(v is not None for v in (args.cpu_name, args.cpu_memory, args.cpu_cores)),
        cpu_name=args.cpu_name,
        cpu_memory=args.cpu_memory,
        cpu_cores=args.cpu_cores,
        gpus=args.gpus,
        nodes=args.nodes,
        task={
            "domain_distance": args.domain_distance,
            "forgetting_tolerance": args.forgetting_tolerance,
            "domain_label": args.domain_label,
            "regime": args.regime,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "dataset_tokens": dataset_tokens,
            "needs_fresh_facts": args.needs_fresh_facts or None,
        },
        pins={
            "method": args.method,
            "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha,
            "target_modules": targets,
            "precision": args.precision,
            "gradient_checkpointing": args.gradient_checkpointing,
            "optimizer": args.optimizer,
            "attention": args.attention,
            "learning_rate": args.learning_rate,
            "max_steps": args.max_steps,
            "lora_dropout": args.lora_dropout,
            "kbit_upcast": args.kbit_upcast,
            "activation_offload": args.activation_offload,
            "loss_chunk_size": args.loss_chunk_size,
        },
        data=args.data,
        eval_data=args.eval_data,
    )


def cmd_advise(args) -> int:
    from tuneplan.advisor.engine import advise
    from tuneplan.advisor.inputs import build_inputs
    from tuneplan.base.errors import InputError
    from tuneplan.base.planio import plan_to_json
    from tuneplan.schemas import SCHEMA_ID

    if args.check:
        return _cmd_check_plan(args)
    calibration = None
    measured = None
    if args.pilot_steps is not None and not args.measure_distance:
        input_error(
            "--pilot-steps",
            "the pilot is part of the distance measurement, and --measure-distance was not given",
            "add --measure-distance (and --data FILE), or drop --pilot-steps",
        )
        return EXIT_BAD_INPUT
    if args.measure_distance:
        try:
            measured = _measure_distance(args)
        except InputError as e:
            print(e.render(), file=sys.stderr)
            return EXIT_BAD_INPUT
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

        plan = plan.model_copy(
            update={
                "data": DataSpec(train_path=args.data, eval_path=args.eval_data, probe_path=args.probe_data)
            }
        )
    if measured is not None:
        from tuneplan.executor.distance.command import attach_to_plan

        plan, notes = attach_to_plan(plan, *measured, args, db=args.db)
        for note in notes:
            print(note, file=sys.stderr)
        if not args.json:
            from tuneplan.executor.distance.evidence import summary_lines

            lines = summary_lines(plan.inputs.distance)
            print("\n".join(lines[:3] + [x for x in lines[3:] if x.startswith("  pilot:")]))
    text = plan_to_json(plan, SCHEMA_ID)
    if args.output:
        from tuneplan.base.fileio import write_text_atomic

        try:
            write_text_atomic(args.output, text)
        except OSError as exc:
            input_error(
                "-o/--output",
                f"cannot write {args.output}: {exc.strerror or exc}",
                "choose a writable path (an existing, writable directory)",
            )
            return EXIT_BAD_INPUT
    if args.json:
        sys.stdout.write(text)
    else:
        from tuneplan.advisor.render import print_plan

        print_plan(plan, written_to=args.output)
    return EXIT_OK if plan.feasible else EXIT_INFEASIBLE


def _measure_distance(args):
    """`--measure-distance`: measure --data on the plan's model (or --proxy-model) before
    advising; sets --domain from the verdict when none was declared. (Measurement, Target)."""
    from tuneplan.advisor.inputs import resolve_model
    from tuneplan.executor.distance.command import measure_before_advise

    spec = resolve_model(_answers(args))
    local = bool(args.model) and (os.path.isdir(args.model) or args.model.startswith((".", "/", "~")))
    name = args.model if local else spec.name
    return measure_before_advise(args, name, spec.family)


def _cmd_check_plan(args) -> int:
    from tuneplan.advisor.lockcheck import check_plan
    from tuneplan.base.errors import InputError

    if not (0 <= args.tolerance < 1):
        input_error(
            "--tolerance", f"{args.tolerance} is not a fraction in [0, 1)", "e.g. --tolerance 0.05 for 5%"
        )
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
    from tuneplan.advisor.calibration import load_factors

    return load_factors(db, inputs)


def add_validate(sub: "argparse._SubParsersAction") -> None:
    v = sub.add_parser(
        "validate",
        help="check a plan.json as `tuneplan run` does first, creating nothing",
        description="The pre-flight of `tuneplan run`: schema and version, the memory block "
        "against a re-estimate, feasibility, LoRA target modules, data rows, the model "
        "directory's architecture. Exit 0 valid, 2 bad input, 3 infeasible.",
    )
    v.add_argument("plan")
    v.add_argument("--data", metavar="PATH", help="also check this training data file")
    v.add_argument("--model-path", metavar="DIR", help="also check that this model matches the plan")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    """The pre-flight `run` and `run --dry-run` make (executor/preflight.py), creating nothing."""
    from tuneplan.base.errors import InputError
    from tuneplan.executor.preflight import Infeasible, preflight

    try:
        checked = preflight(
            args.plan, data=args.data, model_path=args.model_path, need_train=False, resolve_model=False
        )
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
    print(
        f"{args.plan}: valid plan ({plan.method}, feasible, schema {plan.schema_version}; checked "
        f"{', '.join(checked_what)})"
    )
    for note in checked.notes:
        print(f"  note: {note}")
    if plan.trust_remote_code:
        print(
            f"warning: {args.plan}: trust_remote_code is true, which has no effect: a plan file cannot "
            f"allow a model's own Python to run (validate never runs it). Pass "
            f"--trust-remote-code to `tuneplan run`/`compare`/`merge` if you trust that code.",
            file=sys.stderr,
        )
    return EXIT_OK
