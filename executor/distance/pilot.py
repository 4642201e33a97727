"""The pilot (`--pilot-steps N`): a short LoRA-vs-full run on a subset of the user's data, through
`tuneplan compare` (executor/compare.py: each method re-advised with its own learning rate and
settings, both runs on the same data, seed and step budget, recorded in `runs` and
`comparisons`), and the share of full fine-tuning's eval-loss drop that LoRA reaches.

The guard: a share is only computed when full fine-tuning's drop is at least MIN_FULL_DROP nats
(the comparison audits' noise band); a drop of ~0 or a rise would make lora_drop / full_drop
noise or sign-flipped, so the pilot is then inconclusive and moves no verdict.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tuneplan.base.errors import InputError
from tuneplan.schemas import PilotSignal

from . import verdict

MIN_FULL_DROP = 0.02
"""Nats: below this eval-loss drop of full fine-tuning the share is not computed (the noise band
of the comparison audits, executor/ledger/check.py NOISE_BAND_NATS)."""
PILOT_ROWS = 128
"""Most rows the pilot uses (a seeded sample of the measured rows)."""
PILOT_METHODS = ["full", "lora"]


def split_rows(rows: list, seed: int = 0) -> tuple[list, list]:
    """(train, eval): a seeded sample of at most PILOT_ROWS rows, a quarter (1..32 rows) held out
    for the before/after evaluation. Raises InputError under 2 rows."""
    rows = list(rows)
    if len(rows) < 2:
        raise InputError.one(
            "--pilot-steps",
            f"the pilot needs at least 2 rows (one to train, one to evaluate), the data has {len(rows)}",
            "give more rows in --data, or drop --pilot-steps",
        )
    rng = random.Random(seed)
    sample = rng.sample(rows, min(len(rows), PILOT_ROWS))
    n_eval = max(1, min(32, len(sample) // 4))
    return sample[n_eval:], sample[:n_eval]


def _write_jsonl(path: Path, rows: list) -> str:
    """Rows (executor/data.py Row, already validated, or plain records) as JSONL."""
    records = [getattr(r, "record", r) for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def pilot_plan(
    model_dir: Path, train: str, eval_: str, *, steps: int, domain: str, device: str, forgetting: str
):
    """The plan the comparison re-advises per method: the measured model, the subset's files,
    --max-steps N, advised for this machine (the pilot runs here, whatever the target GPU)."""
    from tuneplan.advisor.engine import advise
    from tuneplan.advisor.inputs import Answers, build_inputs
    from tuneplan.schemas import DataSpec

    answers = Answers(
        model=str(model_dir),
        cpu=device == "cpu",
        task={"domain_distance": domain, "forgetting_tolerance": forgetting},
        pins={"max_steps": steps},
        data=train,
        eval_data=eval_,
    )
    plan = advise(build_inputs(answers))
    return plan.model_copy(update={"data": DataSpec(train_path=train, eval_path=eval_)})


def share_of(full_drop: Optional[float], lora_drop: Optional[float]) -> tuple[Optional[float], Optional[str]]:
    """(lora_drop / full_drop, None) or (None, why the pilot is inconclusive)."""
    if full_drop is None or lora_drop is None:
        return None, "a pilot run did not succeed"
    if full_drop < MIN_FULL_DROP:
        return None, (
            f"full fine-tuning's eval loss dropped {full_drop:+.4f} nats, under the {MIN_FULL_DROP} guard: "
            "no share (raise --pilot-steps)"
        )
    return lora_drop / full_drop, None


def run_pilot(
    rows: list,
    model_dir: Path,
    *,
    steps: int,
    domain: str,
    out_dir: Path,
    db: Optional[str] = None,
    device: str = "cpu",
    forgetting: str = "medium",
    seed: int = 0,
    runner: Any = None,
) -> PilotSignal:
    """Run full fine-tuning and LoRA for `steps` steps on a subset of `rows` (run_comparison), and
    return the pilot's signal. The runs' output goes to stderr; InputError for bad input."""
    from ..compare import run_comparison
    from tuneplan.base.planio import plan_to_json

    if steps < 1:
        raise InputError.one(
            "--pilot-steps", f"must be at least 1, got {steps}", "use --pilot-steps 10 or more"
        )
    train, eval_ = split_rows(rows, seed)
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = pilot_plan(
        model_dir,
        _write_jsonl(out_dir / "pilot-train.jsonl", train),
        _write_jsonl(out_dir / "pilot-eval.jsonl", eval_),
        steps=steps,
        domain=domain,
        device=device,
        forgetting=forgetting,
    )
    plan_path = out_dir / "pilot-plan.json"
    plan_path.write_text(plan_to_json(plan), encoding="utf-8")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        cmp = run_comparison(
            plan_path,
            list(PILOT_METHODS),
            max_steps=steps,
            db=db,
            output_dir=str(out_dir),
            progress=False,
            runner=runner,
        )
    seconds = time.perf_counter() - started
    if cmp.interrupted:
        raise KeyboardInterrupt
    full, lora = cmp.outcomes.get("full"), cmp.outcomes.get("lora")
    full_drop = full.learning if full and full.status == "succeeded" else None
    lora_drop = lora.learning if lora and lora.status == "succeeded" else None
    share, note = share_of(full_drop, lora_drop)
    variants = {m: _variant(out_dir, m) for m in PILOT_METHODS}
    lora_plan, full_plan = variants["lora"], variants["full"]
    return PilotSignal(
        steps=steps,
        train_rows=len(train),
        eval_rows=len(eval_),
        full_drop=None if full_drop is None else round(full_drop, 6),
        lora_drop=None if lora_drop is None else round(lora_drop, 6),
        min_full_drop=MIN_FULL_DROP,
        share=None if share is None else round(share, 6),
        verdict=verdict.pilot_band(share),  # type: ignore[arg-type]
        compare_id=cmp.compare_id,
        full_run_id=full.run_id if full else None,
        lora_run_id=lora.run_id if lora else None,
        lora_rank=lora_plan.lora.rank if lora_plan is not None and lora_plan.lora else None,
        full_learning_rate=full_plan.training.learning_rate if full_plan is not None else None,
        lora_learning_rate=lora_plan.training.learning_rate if lora_plan is not None else None,
        seconds=round(seconds, 2),
        note=note,
    )


def _variant(out_dir: Path, method: str):
    from tuneplan.schemas import Plan

    try:
        return Plan.model_validate_json((out_dir / f"plan-{method}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def summary_line(p: PilotSignal) -> str:
    """One readable line for the terminal."""
    if p.share is None:
        return f"  pilot: {p.steps} steps on {p.train_rows} rows, inconclusive: {p.note} ({p.compare_id})"
    return (
        f"  pilot: {p.steps} steps on {p.train_rows} rows (eval {p.eval_rows}): LoRA reached {p.share:.0%} of full "
        f"fine-tuning's eval-loss drop ({p.lora_drop:+.3f} vs {p.full_drop:+.3f} nats) -> {p.verdict}; "
        f"{p.seconds:.1f} s, comparison {p.compare_id}"
    )
