"""From a measurement to the plan's evidence: which model to measure on (the plan's, a local
copy, or a proxy of the same family), the data (the user's file or a reference task), the
verdict, and `inputs.distance` (schemas/distance.py). Torch is imported only by `measure`.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError
from tuneplan.schemas import DistanceEvidence, FitSignal, LayerRank, PilotSignal, RankSignal

from . import spectrum, verdict
from .measure import HIGH_LOSS_NATS, Measurement

REFERENCE_RANK = 16
"""The rank the captured-energy figures are read at when the plan has no LoRA rank: TP011's
near-domain rank (r = 16 matched full fine-tuning on general instruction data, Biderman et al.
App. C)."""


@dataclass
class Target:
    """What to measure on."""

    model_dir: Path
    model_name: str
    proxy: bool


def _model_type(model_dir: Path) -> Optional[str]:
    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def resolve_target(
    model_name: str,
    *,
    family: Optional[str] = None,
    model_path: Optional[str] = None,
    proxy_model: Optional[str] = None,
) -> Target:
    """The model directory to measure on. With a proxy, the proxy's (refused when its family
    differs from the plan model's); else the plan's model (local directory, embedded SmolLM2 or
    the offline Hugging Face cache). Raises InputError naming --proxy-model as a way out."""
    from ..models import resolve_model_dir

    if proxy_model:
        try:
            d = resolve_model_dir(proxy_model)
        except InputError as e:
            raise InputError.one("--proxy-model", e.problems[0].message, e.problems[0].fix) from None
        kind = _model_type(d)
        if family and kind and kind.lower() != family.lower():
            raise InputError.one(
                "--proxy-model",
                f"{proxy_model} is a {kind} model but the plan's model is "
                f"{family}: a proxy must be of the same family",
                f"pass a small {family} model (or drop --proxy-model)",
            )
        return Target(d, proxy_model, True)
    try:
        d = resolve_model_dir(model_name, model_path)
    except InputError as e:
        p = e.problems[0]
        raise InputError.one(
            p.where,
            p.message,
            p.fix + "; or measure on a small local model of the same family with --proxy-model NAME_OR_DIR",
        ) from None
    return Target(d, model_name, False)


def load_rows(data: Optional[str], reference_task: Optional[str], *, rows: int, seed: int = 0):
    """(rows, label): the user's data file (every row validated as `tuneplan run` does) or a
    shipped reference task, at most ``rows`` of them (a seeded sample when there are more)."""
    from ..data import read_rows
    from .reference import TASKS, reference_rows

    if reference_task:
        if reference_task not in TASKS:
            raise InputError.one(
                "--reference", f"unknown reference task {reference_task!r}", f"use one of {', '.join(TASKS)}"
            )
        found = reference_rows(reference_task, rows, seed=seed or 20240607)
        label = f"reference:{reference_task}"
    elif not data:
        raise InputError.one(
            "--data",
            "no data to measure",
            "pass --data FILE (the training file) or --reference date|code|arithmetic",
        )
    else:
        found, label = read_rows(data, field_name="--data").rows, str(data)
    if len(found) > rows:
        found = random.Random(seed).sample(list(found), rows)
    return found, label


def new_measure_id() -> str:
    return "dm-" + uuid.uuid4().hex[:12]


def to_evidence(
    m: Measurement,
    *,
    data_label: str,
    declared: Optional[str],
    proxy: bool,
    lora_rank: Optional[int],
    measure_id: Optional[str] = None,
    thresholds: verdict.Thresholds = verdict.DEFAULT,
    pilot: Optional[PilotSignal] = None,
) -> DistanceEvidence:
    """The plan's `inputs.distance` for a measurement: measured unless a --domain was declared;
    a conclusive pilot moves the verdict (verdict.with_pilot)."""
    rank_r = lora_rank or REFERENCE_RANK
    v = verdict.judge(m.mean_rank_90_share, m.high_loss_share, thresholds)
    layers = [
        LayerRank(
            name=layer.name,
            kind=layer.kind if layer.kind in ("attention", "mlp") else "other",
            block=layer.block,
            out_features=layer.out_features,
            in_features=layer.in_features,
            rank_90=layer.rank_90,
            rank_90_share=round(layer.rank_90_share, 6),
            energy_at_lora_rank=round(layer.energy_at(rank_r), 6),
        )
        for layer in m.layers
    ]
    return DistanceEvidence(
        source="declared" if declared else "measured",
        declared=declared,
        measured=verdict.with_pilot(v.distance, pilot.verdict if pilot else None),
        score=v.score,
        rank_verdict=v.rank_verdict,
        fit_verdict=v.fit_verdict,
        thresholds=thresholds.label,
        measure_id=measure_id or new_measure_id(),
        model=m.model,
        proxy=proxy,
        device=m.device,
        load=m.load,
        data=data_label,
        rows=m.rows,
        seconds=round(m.seconds, 2),
        fit=FitSignal(
            target_loss=round(m.target_loss, 6),
            probe_loss=round(m.probe_loss, 6),
            loss_ratio=round(m.loss_ratio, 6),
            high_loss_nats=HIGH_LOSS_NATS,
            high_loss_share=round(m.high_loss_share, 6),
            target_tokens=m.target_tokens,
        ),
        rank=RankSignal(
            energy_share=spectrum.ENERGY_SHARE,
            micro_batches=m.micro_batches,
            tokens_per_batch=m.tokens_per_batch,
            mean_rank_90_share=round(m.mean_rank_90_share, 6),
            median_rank_90=m.median_rank_90,
            max_rank_90=max(layer.rank_90 for layer in m.layers),
            lora_rank=rank_r,
            mean_energy_at_lora_rank=round(m.mean_energy_at(rank_r), 6),
            layers=layers,
        ),
        pilot=pilot,
        notes=list(m.notes),
    )


def warning_for(evidence: DistanceEvidence) -> str:
    """The plan's warning when a declared distance disagrees with the measurement ("" if not)."""
    if evidence.declared is None:
        return ""
    return verdict.disagreement(evidence.declared, evidence.measured, evidence.score)


def _pilot_says(ev: DistanceEvidence) -> str:
    if ev.pilot is None:
        return ""
    return f", pilot says {ev.pilot.verdict or 'nothing (inconclusive)'}"


def summary_lines(ev: DistanceEvidence) -> list[str]:
    """Readable lines for the terminal."""
    where = f"{ev.model}{' (proxy)' if ev.proxy else ''} on {ev.device} ({ev.load})"
    lines = [
        f"domain distance: {ev.measured} (score {ev.score:.2f}; rank says {ev.rank_verdict}, fit says "
        f"{ev.fit_verdict}{_pilot_says(ev)}) - {ev.data}, {ev.rows} rows, measured on {where} in {ev.seconds:.1f} s",
        f"  fit: target loss {ev.fit.target_loss:.3f} nats vs general text {ev.fit.probe_loss:.3f} "
        f"(ratio {ev.fit.loss_ratio:.2f}); {ev.fit.high_loss_share:.1%} of {ev.fit.target_tokens} target tokens "
        f"above {ev.fit.high_loss_nats} nats",
        f"  update rank: 90% of gradient energy in {ev.rank.mean_rank_90_share:.1%} of a layer's directions "
        f"on average (median rank {ev.rank.median_rank_90:g}, max {ev.rank.max_rank_90}; "
        f"{ev.rank.micro_batches} micro-batches of {ev.rank.tokens_per_batch} target tokens); "
        f"rank {ev.rank.lora_rank} captures {ev.rank.mean_energy_at_lora_rank:.1%}",
    ]
    for layer in ev.rank.layers:
        lines.append(
            f"    {layer.name:<40} {layer.out_features}x{layer.in_features:<6} rank90 {layer.rank_90:>4} "
            f"({layer.rank_90_share:.1%})  r={ev.rank.lora_rank}: {layer.energy_at_lora_rank:.1%}"
        )
    if ev.pilot is not None:
        from .pilot import summary_line

        lines.append(summary_line(ev.pilot))
    lines += [f"  note: {n}" for n in ev.notes]
    return lines
