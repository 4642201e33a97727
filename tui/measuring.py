"""The questionnaire's "measure it from my data": the domain distance of the data file measured on
the model in the model box (tuneplan.executor.distance, the same code as `tuneplan measure`).

Imported only inside the app's measurement worker (tui/app.py): it loads torch and the model, so
neither the first paint nor the live plan ever import it.
"""

from __future__ import annotations

from typing import Any, Optional

from tuneplan.schemas import DistanceEvidence


def measure_data(
    model: str, data: str, *, db: Optional[str] = None, options: Optional[dict[str, Any]] = None
) -> DistanceEvidence:
    """Measure `data` on `model` (catalog id, embedded model or local directory) with the
    `tuneplan measure` defaults (overridden by `options`: measure_rows, tokens_per_batch,
    micro_batches, depths, measure_seq_len, measure_seed), record it in DuckDB, and return the
    evidence (source measured). Raises InputError (model not on this machine, bad data)."""
    from tuneplan.executor.distance.command import DEFAULTS
    from tuneplan.executor.distance.evidence import load_rows, resolve_target, to_evidence
    from tuneplan.executor.distance.measure import measure
    from tuneplan.executor.distance.record import record_measurement

    opts = {**DEFAULTS, **(options or {})}
    target = resolve_target(model)
    rows, label = load_rows(data, None, rows=opts["measure_rows"], seed=opts["measure_seed"])
    m = measure(
        rows,
        target.model_dir,
        model_name=target.model_name,
        tokens_per_batch=opts["tokens_per_batch"],
        micro_batches=opts["micro_batches"],
        depths=opts["depths"],
        seq_len=opts["measure_seq_len"],
        seed=opts["measure_seed"],
    )
    ev = to_evidence(m, data_label=label, declared=None, proxy=False, lora_rank=None)
    try:
        record_measurement(db, ev, plan_model=model)
    except Exception as exc:  # noqa: BLE001 - the evidence stands; the note says it was not kept
        ev = ev.model_copy(update={"notes": [*ev.notes, f"not recorded in DuckDB: {exc}"]})
    return ev
