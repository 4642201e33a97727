"""The `distance_measurements` table: one row per measurement, joinable to runs.

A plan written by `advise --measure-distance` carries the measurement's id in
`inputs.distance.measure_id`, so a run of that plan joins its measurement:
    SELECT r.run_id, d.verdict, d.score, r.learning
    FROM runs r JOIN distance_measurements d
      ON json_extract_string(r.plan_json, '$.inputs.distance.measure_id') = d.measure_id
The table is created by the ledger's migration (distance_measurements). DuckDB only; no torch.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from tuneplan.schemas import DistanceEvidence

COLUMNS = (
    "measure_id",
    "measured_at",
    "plan_model",
    "model",
    "proxy",
    "data",
    "data_sha256",
    "plan_hash",
    "device",
    "load",
    "rows",
    "target_tokens",
    "micro_batches",
    "tokens_per_batch",
    "target_loss",
    "probe_loss",
    "loss_ratio",
    "high_loss_share",
    "mean_rank_90_share",
    "median_rank_90",
    "max_rank_90",
    "lora_rank",
    "energy_at_lora_rank",
    "score",
    "verdict",
    "rank_verdict",
    "fit_verdict",
    "declared",
    "source",
    "thresholds",
    "seconds",
    "evidence_json",
    "pilot_steps",
    "pilot_full_drop",
    "pilot_lora_drop",
    "pilot_share",
    "pilot_verdict",
    "pilot_compare_id",
    "pilot_full_run_id",
    "pilot_lora_run_id",
)
"""Columns of distance_measurements in insert order."""


def file_sha256(path: Optional[str]) -> Optional[str]:
    """SHA-256 of a data file (None for a reference task or a missing file)."""
    if not path or path.startswith("reference:"):
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def row_values(ev: DistanceEvidence, *, plan_model: str, plan_hash: Optional[str]) -> list:
    """The row for one measurement, in COLUMNS order."""
    return [
        ev.measure_id,
        datetime.now(timezone.utc).replace(tzinfo=None),
        plan_model,
        ev.model,
        ev.proxy,
        ev.data,
        file_sha256(ev.data),
        plan_hash,
        ev.device,
        ev.load,
        ev.rows,
        ev.fit.target_tokens,
        ev.rank.micro_batches,
        ev.rank.tokens_per_batch,
        ev.fit.target_loss,
        ev.fit.probe_loss,
        ev.fit.loss_ratio,
        ev.fit.high_loss_share,
        ev.rank.mean_rank_90_share,
        ev.rank.median_rank_90,
        ev.rank.max_rank_90,
        ev.rank.lora_rank,
        ev.rank.mean_energy_at_lora_rank,
        ev.score,
        ev.measured,
        ev.rank_verdict,
        ev.fit_verdict,
        ev.declared,
        ev.source,
        ev.thresholds,
        ev.seconds,
        ev.model_dump_json(),
        *_pilot_values(ev),
    ]


def _pilot_values(ev: DistanceEvidence) -> list:
    """The pilot columns (migration 0009; all NULL without a pilot)."""
    p = ev.pilot
    if p is None:
        return [None] * 8
    return [
        p.steps,
        p.full_drop,
        p.lora_drop,
        p.share,
        p.verdict,
        p.compare_id,
        p.full_run_id,
        p.lora_run_id,
    ]


def record_measurement(db, ev: DistanceEvidence, *, plan_model: str, plan_hash: Optional[str] = None) -> None:
    """Insert (or replace) one measurement's row. Raises the ledger's StoreError when it cannot."""
    import duckdb

    from ..ledger import StoreError, connect

    con = connect(db)
    try:
        placeholders = ", ".join("?" for _ in COLUMNS)
        con.execute(
            f"INSERT OR REPLACE INTO distance_measurements ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            row_values(ev, plan_model=plan_model, plan_hash=plan_hash),
        )
    except duckdb.Error as exc:
        raise StoreError(f"could not record distance measurement {ev.measure_id}: {exc}") from exc
    finally:
        con.close()
