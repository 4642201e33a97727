"""`tuneplan measure`, and the measurement options `advise --measure-distance` shares: how far
the data is from the base model (docs/domain-distance.md). Only argparse here; the handler loads
tuneplan.executor.distance (and torch) when it runs.
"""

from __future__ import annotations

import argparse


def add_measure_options(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    """The options `measure` and `advise --measure-distance` share (None: the default of
    tuneplan.executor.distance.command.DEFAULTS)."""
    g = p.add_argument_group("domain-distance measurement (docs/domain-distance.md)")
    if with_model:
        g.add_argument(
            "--model",
            default=None,
            help="model to measure (default: the embedded HuggingFaceTB/SmolLM2-135M-Instruct)",
        )
    g.add_argument("--model-path", metavar="DIR", help="local directory holding the model's weights")
    g.add_argument(
        "--proxy-model",
        metavar="NAME_OR_DIR",
        help="measure on this smaller model of the same family (the plan says a proxy was used)",
    )
    g.add_argument(
        "--measure-rows", type=int, metavar="N", help="rows sampled from the data (seeded; default 256)"
    )
    g.add_argument(
        "--tokens-per-batch", type=int, metavar="N", help="target tokens per micro-batch (default 128)"
    )
    g.add_argument(
        "--micro-batches",
        type=int,
        metavar="N",
        help="micro-batches the gradient is accumulated over (default 4)",
    )
    g.add_argument(
        "--depths", type=int, metavar="N", help="transformer blocks sampled over depth (default 4)"
    )
    g.add_argument(
        "--measure-seq-len", type=int, metavar="TOKENS", help="rows truncated to this length (default 256)"
    )
    g.add_argument("--measure-seed", type=int, metavar="N", help="sampling seed (default 0)")
    g.add_argument(
        "--pilot-steps",
        type=int,
        metavar="N",
        help="also run a short LoRA-vs-full pilot of N steps on a subset of the data (through "
        "`compare`; two training runs): the share of full fine-tuning's eval-loss drop LoRA reaches",
    )
    g.add_argument(
        "--pilot-dir",
        metavar="DIR",
        help="directory the pilot's runs go under, one pilot-<measure id> folder per measurement "
        "(default: runs/)",
    )
    g.add_argument(
        "--no-record",
        action="store_true",
        help="do not write the measurement to DuckDB (default: recorded in --db or the run ledger)",
    )


def add_measure(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "measure",
        help="measure how far your data is from the base model (near/moderate/far)",
        description="Measure the domain distance of a dataset on a base model: the model's fit "
        "to the targets and the rank of the gradient update (docs/domain-distance.md).",
    )
    src = p.add_argument_group("data (one of)")
    src.add_argument(
        "--data", help="training file (JSONL, JSON, CSV or Parquet), rows as `tuneplan run` reads them"
    )
    src.add_argument(
        "--reference",
        metavar="TASK[,TASK]",
        help="shipped reference tasks: date (near), code (stdlib Python), arithmetic",
    )
    add_measure_options(p)
    p.add_argument(
        "--domain",
        dest="declared",
        metavar="{near,moderate,far}",
        help="the distance you would declare; the output says whether the measurement agrees",
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="read the captured gradient energy at this LoRA rank (default 16)",
    )
    p.add_argument("--probe-data", help="general-text probe (default: the built-in one)")
    p.add_argument("--db", help="DuckDB file to record the measurement in (default: the run ledger's)")
    p.add_argument(
        "--json", action="store_true", help="print the evidence as JSON (a list with --reference A,B)"
    )
    p.set_defaults(func=cmd_measure)


def cmd_measure(args) -> int:
    from tuneplan.executor.distance.command import cmd_measure as run

    return run(args)
