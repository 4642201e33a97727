"""`tuneplan measure` and the `advise --measure-distance` step, as the functions the root command
(cli/measure.py, cli/advise.py) calls; the flags themselves are defined in cli/. Torch loads only
when a model is loaded."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Optional

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_OK, InputError

from . import measure as _m

if TYPE_CHECKING:  # pragma: no cover
    from tuneplan.schemas import PilotSignal


DEFAULTS = {
    "measure_rows": 256,
    "tokens_per_batch": _m.DEFAULT_TOKENS_PER_BATCH,
    "micro_batches": _m.DEFAULT_MICRO_BATCHES,
    "depths": _m.DEFAULT_DEPTHS,
    "measure_seq_len": _m.DEFAULT_SEQ_LEN,
    "measure_seed": 0,
}
"""The measurement options' values when a flag is not given (cli/measure.py leaves them None, so
the command line imports nothing of this package to build its parser)."""


def fill_defaults(args) -> None:
    """Set every measurement option that was not given to its default (DEFAULTS)."""
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def _check_options(args) -> None:
    from tuneplan.base.errors import Problem

    problems = []
    for flag, value, low in (
        ("--measure-rows", args.measure_rows, 1),
        ("--tokens-per-batch", args.tokens_per_batch, 1),
        ("--micro-batches", args.micro_batches, 1),
        ("--depths", args.depths, 1),
        ("--measure-seq-len", args.measure_seq_len, 8),
    ):
        if value < low:
            problems.append(
                Problem(flag, f"must be at least {low}, got {value}", f"use {flag} {max(low, 1)} or more")
            )
    pilot = getattr(args, "pilot_steps", None)
    if pilot is not None and pilot < 1:
        problems.append(
            Problem("--pilot-steps", f"must be at least 1, got {pilot}", "use --pilot-steps 10 or more")
        )
    if pilot is not None and not getattr(args, "data", None) and not getattr(args, "reference", None):
        problems.append(
            Problem(
                "--pilot-steps",
                "the pilot trains on the data, and no data was given",
                "pass --data FILE (or --reference TASK with `tuneplan measure`), or drop --pilot-steps",
            )
        )
    declared = getattr(args, "declared", None)
    if declared is not None and declared not in ("near", "moderate", "far"):
        problems.append(
            Problem(
                "--domain", f"{declared!r} is not near, moderate or far", "use --domain near|moderate|far"
            )
        )
    if problems:
        raise InputError(problems)


def _options(args) -> dict:
    return dict(
        tokens_per_batch=args.tokens_per_batch,
        micro_batches=args.micro_batches,
        depths=args.depths,
        seq_len=args.measure_seq_len,
        seed=args.measure_seed,
        probe_path=getattr(args, "probe_data", None),
    )


def _record(db, ev, *, plan_model: str, plan_hash: Optional[str]) -> Optional[str]:
    """Record; a failure is a warning line, never lost work."""
    from .record import record_measurement

    try:
        record_measurement(db, ev, plan_model=plan_model, plan_hash=plan_hash)
    except Exception as exc:  # StoreError, DatabaseLocked
        return f"warning: the measurement was not recorded in DuckDB: {exc}"
    return None


def cmd_measure(args) -> int:
    """`tuneplan measure`: print (and record) the distance of a data file or reference task(s)."""
    from tuneplan.executor.models import EMBEDDED_MODEL

    from .evidence import load_rows, resolve_target

    model_name = args.model or EMBEDDED_MODEL
    fill_defaults(args)
    try:
        from tuneplan.base.errors import Problem

        problems = []
        try:
            _check_options(args)
        except InputError as e:
            problems += e.problems
        if bool(args.data) == bool(args.reference):
            problems.append(
                Problem(
                    "--data",
                    "give --data FILE or --reference TASK (one of them)",
                    "e.g. --data train.jsonl, or --reference date,code,arithmetic",
                )
            )
        if problems:
            raise InputError(problems)
        tasks = [t.strip() for t in args.reference.split(",") if t.strip()] if args.reference else [None]
        target = resolve_target(model_name, model_path=args.model_path, proxy_model=args.proxy_model)
        sources = [
            load_rows(args.data, task, rows=args.measure_rows, seed=args.measure_seed) for task in tasks
        ]
    except InputError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    from tuneplan.executor.runlog import measure_log

    with measure_log("measure"):  # third-party noise to the cache's logs/measure.log
        return _measure_sources(args, target, sources, model_name)


def _measure_sources(args, target, sources, model_name: str) -> int:
    from .evidence import new_measure_id, summary_lines, to_evidence
    from .measure import choose_load, load_base, measure_loaded, _weight_bytes
    from tuneplan.executor.loading import load_tokenizer
    from tuneplan.executor.models import pick_device
    import time

    started = time.perf_counter()
    device = pick_device()
    load = choose_load(device, _weight_bytes(target.model_dir))
    tokenizer = load_tokenizer(target.model_dir)
    model = load_base(target.model_dir, device, load)
    load_seconds = time.perf_counter() - started
    out = []
    probe_loss = None
    try:
        measured = []
        for sample, label in sources:
            m = measure_loaded(
                model,
                tokenizer,
                sample,
                model_name=target.model_name,
                model_dir=str(target.model_dir),
                load=load,
                device=device,
                known_probe_loss=probe_loss,
                **_options(args),
            )
            probe_loss = m.probe_loss
            m.seconds += load_seconds if not measured else 0.0
            measured.append((m, sample, label))
        if getattr(args, "pilot_steps", None):
            # the pilot's runs load the model themselves: free the measurement's copy first
            del model
            _free(device)
        for m, sample, label in measured:
            measure_id = new_measure_id()
            pilot = None
            if getattr(args, "pilot_steps", None):
                pilot = _pilot(args, sample, target, m, measure_id, device)
            ev = to_evidence(
                m,
                data_label=label,
                declared=args.declared,
                proxy=target.proxy,
                lora_rank=args.lora_rank,
                measure_id=measure_id,
                pilot=pilot,
            )
            out.append(ev)
            if not args.no_record:
                note = _record(args.db, ev, plan_model=model_name, plan_hash=None)
                if note:
                    print(note, file=sys.stderr)
            if not args.json:
                print("\n".join(summary_lines(ev)))
                from .evidence import warning_for

                if warning_for(ev):
                    print(f"  warning: {warning_for(ev)}")
    except InputError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        docs = [json.loads(ev.model_dump_json()) for ev in out]
        print(json.dumps(docs if len(docs) > 1 else docs[0], indent=2))
    elif len(out) > 1:
        print(
            "ordering (nearest first): "
            + " < ".join(
                f"{ev.data} {ev.score:.2f} {ev.measured}" for ev in sorted(out, key=lambda e: e.score)
            )
        )
    return EXIT_OK


def _free(device) -> None:
    import gc

    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _pilot(args, rows, target, m, measure_id: str, device) -> "PilotSignal":
    """The pilot for one measurement (pilot.run_pilot), on the measured model, advised with the
    rank and fit signals' verdict; its runs land in --db (or the run ledger)."""
    from pathlib import Path

    from .pilot import run_pilot
    from .verdict import judge

    out = Path(getattr(args, "pilot_dir", None) or "runs") / f"pilot-{measure_id}"
    return run_pilot(
        list(rows),
        Path(target.model_dir),
        steps=args.pilot_steps,
        domain=judge(m.mean_rank_90_share, m.high_loss_share).distance,
        out_dir=out,
        db=getattr(args, "db", None),
        device=str(device).split(":")[0] if device is not None else "cpu",
        forgetting=getattr(args, "forgetting_tolerance", None) or "medium",
        seed=args.measure_seed,
    )


# ------------------------------------------------------------------------------------ advise


def measure_before_advise(args, model_name: Optional[str], family: Optional[str]):
    """Measure --data on the plan's model (or --proxy-model) before advising. Returns the
    Measurement and the Target; sets args.domain_distance to the verdict when none was declared.
    Raises InputError (no --data, a model that is not on this machine, a proxy of another family)."""
    from tuneplan.executor.models import EMBEDDED_MODEL

    from .evidence import load_rows, new_measure_id, resolve_target
    from .measure import measure
    from .verdict import judge, with_pilot

    from tuneplan.base.errors import Problem

    fill_defaults(args)
    problems = []
    try:
        _check_options(args)
    except InputError as e:
        problems += e.problems
    if not args.data:
        problems.append(
            Problem(
                "--measure-distance",
                "measuring the domain distance needs the training data",
                "pass --data FILE (or drop --measure-distance and declare --domain)",
            )
        )
    if problems:
        raise InputError(problems)
    name = model_name or args.model or EMBEDDED_MODEL
    target = resolve_target(
        name, family=family, model_path=getattr(args, "model_path", None), proxy_model=args.proxy_model
    )
    rows, _label = load_rows(args.data, None, rows=args.measure_rows, seed=args.measure_seed)
    from tuneplan.executor.runlog import measure_log

    with measure_log("advise --measure-distance"):
        m = measure(rows, target.model_dir, model_name=target.model_name, **_options(args))
        args._measure_id = new_measure_id()
        args._pilot = None
        if getattr(args, "pilot_steps", None):
            _free(m.device)
            args._pilot = _pilot(args, rows, target, m, args._measure_id, m.device)
    if not args.domain_distance:
        v = judge(m.mean_rank_90_share, m.high_loss_share).distance
        args.domain_distance = with_pilot(v, args._pilot.verdict if args._pilot else None)
        args._distance_declared = None
    else:
        args._distance_declared = args.domain_distance
    return m, target


def attach_to_plan(plan, m, target, args, *, db=None):
    """The plan with `inputs.distance` (the energy read at the plan's own LoRA rank) and, when a
    declared --domain disagrees with the measurement, a warning; the measurement recorded in
    DuckDB with the plan's hash. Returns (plan, notes for stderr)."""
    from tuneplan.base.planio import plan_hash

    from .evidence import to_evidence, warning_for

    ev = to_evidence(
        m,
        data_label=str(args.data),
        declared=args._distance_declared,
        proxy=target.proxy,
        lora_rank=plan.lora.rank if plan.lora else None,
        measure_id=getattr(args, "_measure_id", None),
        pilot=getattr(args, "_pilot", None),
    )
    warnings = list(plan.warnings)
    if warning_for(ev):
        warnings.append(warning_for(ev))
    if target.proxy:
        warnings.append(
            f"domain distance measured on the proxy {target.model_name}, not on "
            f"{plan.inputs.model.name}: an estimate for the larger model"
        )
    plan = plan.model_copy(
        update={"inputs": plan.inputs.model_copy(update={"distance": ev}), "warnings": warnings}
    )
    notes = []
    if not getattr(args, "no_record", False):
        note = _record(db, ev, plan_model=plan.inputs.model.name, plan_hash=plan_hash(plan))
        if note:
            notes.append(note)
    return plan, notes
