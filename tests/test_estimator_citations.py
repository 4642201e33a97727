"""The estimator's one table of citations: every term's source is made of its entries, and the
table has no entry that no term cites."""

from __future__ import annotations

import itertools

import pytest

from tuneplan.advisor.catalog import get_model
from tuneplan.advisor.estimator import estimate
from tuneplan.advisor.estimator.citations import SOURCES, cite
from tuneplan.schemas import MemorySettings

GiB = 1024**3


def _split(source: str) -> list[str] | None:
    """The citation ids whose entries, joined by '; ', make `source`; None if it is not so made."""
    if source in SOURCES.values():
        return [k for k, v in SOURCES.items() if v == source][:1]
    for key, text in SOURCES.items():
        if source.startswith(text + "; "):
            rest = _split(source[len(text) + 2 :])
            if rest is not None:
                return [key, *rest]
    return None


def _estimates():
    model = get_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    for method, prec, opt, gc, att, strat, chunk, off, acc, dev in itertools.product(
        ["full", "lora", "qlora"],
        ["bf16-mixed", "bf16", "fp32"],
        ["adamw", "adamw-8bit", "paged-adamw-32bit"],
        [False, True],
        ["sdpa", "eager"],
        ["none", "ddp", "fsdp", "deepspeed-zero2"],
        [None, 256],
        [False, True],
        [1, 2],
        ["cuda", "cpu"],
    ):
        st = MemorySettings(
            method=method,
            precision=prec,
            optimizer=opt,
            gradient_checkpointing=gc,
            attention=att,
            micro_batch=2,
            seq_len=256,
            lora_rank=None if method == "full" else 8,
            strategy=strat,
            num_devices=1 if strat == "none" else 2,
            loss_chunk_size=chunk,
            activation_offload=off,
            gradient_accumulation_steps=acc,
            cpu_offload=strat == "fsdp" and off,
        )
        yield estimate(model, st, capacity_bytes=80 * GiB, device=dev)
        if method == "full" and strat == "none" and not off:
            yield estimate(
                model,
                st.model_copy(update={"untied_head": True}),
                capacity_bytes=80 * GiB,
                device=dev,
                compiled_loss=True,
            )


def test_every_term_cites_the_table_and_every_entry_is_cited():
    used: set[str] = set()
    for est in _estimates():
        for term in est.terms:
            ids = _split(term.source)
            assert ids, f"term {term.label!r} cites text outside the table: {term.source!r}"
            used.update(ids)
    assert used == set(SOURCES), f"entries no term cites: {sorted(set(SOURCES) - used)}"


def test_cite_joins_entries_in_order_and_rejects_unknown_ids():
    assert cite("zero", "hf-anatomy") == SOURCES["zero"] + "; " + SOURCES["hf-anatomy"]
    with pytest.raises(KeyError):
        cite("no-such-source")
