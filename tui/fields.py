"""The questionnaire as data: every question once, with the `tuneplan advise` flag it answers.

One row per question: its widget id, what problem lists and messages call it, the flag (so a
problem naming a flag lands under its question, and messages speak of questions, not flags:
tui/words.py), and for a choice the schema field whose Literal type lists the values
(tuneplan.schemas, read after the first paint by tui/advising.py). Only the words shown for a
value live here. Pure data: no Textual, no schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

HW_CUSTOM = "custom"
HW_CPU = "cpu"

DOMAIN_HELP = (
    "near: chat, style, formats, classification · moderate: a specialist vocabulary "
    "(medical, legal, finance) · far: code, math and a new language are far"
)
FORGETTING_HELP = (
    "low: the model must keep its general abilities (LoRA forgets less) · medium: "
    "some loss is acceptable · high: only the new task matters"
)
REGIME_HELP = (
    "instruction: prompt/response pairs · continued pretraining: raw text, often "
    "billions of tokens (LoRA trails full fine-tuning there)"
)


@dataclass(frozen=True)
class Question:
    """One question of the form.

    id: the widget id; name: what problem lists call it; flag: the `tuneplan advise` flag it
    answers (problems name flags; this maps them back); label: the question as asked;
    schema: "task.<field>" / "pins.<field>" whose Literal type gives a choice's values (and
    whose docstring becomes the tooltip); shown: words for values that differ from the value
    (when it covers every value, the list follows its order);
    number: int or float for a number field; group: where it sits on the form."""

    id: str
    name: str
    flag: str
    label: str
    group: str
    schema: Optional[str] = None
    shown: dict[str, str] = field(default_factory=dict)
    number: Optional[type] = None
    placeholder: str = ""
    help: str = ""
    value: Optional[str] = None
    """A choice's starting value (None: blank, the prompt shows)."""
    prompt: str = "choose…"
    """A choice's words when nothing is chosen (blank allowed only when it has no value)."""
    words: str = ""
    """How messages refer to it in place of its flag ("" : "the <name> field")."""
    aliases: tuple[str, ...] = ()
    """Other flags (or `where`s of problems) this question answers."""

    @property
    def said(self) -> str:
        return self.words or f"the {self.name} field"


def _pin(id: str, name: str, flag: str, label: str, **kw) -> Question:
    kw.setdefault("prompt", "advisor decides")
    kw.setdefault("words", f"the {name}")
    return Question(id, name, flag, label, "pins", **kw)


QUESTIONS: tuple[Question, ...] = (
    Question(
        "hw",
        "hardware",
        "--gpu",
        "Where will it train?",
        "hardware",
        words="the hardware list",
        aliases=("--cpu", "hardware"),
    ),
    Question(
        "gpu-mem",
        "card memory",
        "--gpu-memory",
        "Memory of one card (GiB)",
        "hardware",
        number=float,
        placeholder="e.g. 24",
    ),
    Question(
        "gpus",
        "GPU count",
        "--gpus",
        "How many GPUs (per machine)?",
        "hardware",
        number=int,
        placeholder="1",
        words="the GPU count",
    ),
    Question(
        "nodes", "machines", "--nodes", "How many machines (nodes)?", "hardware", number=int, placeholder="1"
    ),
    Question(
        "model",
        "model",
        "--model",
        "Which model? (catalog name, local folder, or a size like 7B)",
        "model",
        placeholder="type to search, e.g. llama-3.1-8b",
        words="the model box",
        aliases=("--params",),
    ),
    Question(
        "domain",
        "domain distance",
        "--domain",
        "How far is your data from what the model already does?",
        "task",
        schema="task.domain_distance",
        help=DOMAIN_HELP,
        words="the domain question",
    ),
    Question(
        "domain-label",
        "kind of data",
        "--domain-label",
        "Kind of data (optional)",
        "task",
        schema="task.domain_label",
        prompt="not said",
        words="the kind-of-data list",
    ),
    Question(
        "forgetting",
        "forgetting tolerance",
        "--forgetting",
        "How much general ability may it lose?",
        "task",
        schema="task.forgetting_tolerance",
        help=FORGETTING_HELP,
        words="the forgetting question",
    ),
    Question(
        "regime",
        "regime",
        "--regime",
        "Training regime",
        "task",
        schema="task.regime",
        shown={"continued-pretraining": "continued pretraining"},
        value="instruction",
        help=REGIME_HELP,
        words="the regime list",
    ),
    Question(
        "data",
        "training data",
        "--data",
        "Training data file (JSONL/JSON/CSV/Parquet; needed to run)",
        "task",
        placeholder="path/to/train.jsonl",
        help="read as you type: sequence length, dataset size and steps come from it",
    ),
    Question(
        "eval-data",
        "eval file",
        "--eval-data",
        "Eval file (optional; else 10% of the training rows)",
        "task",
        placeholder="path/to/eval.jsonl",
    ),
    Question(
        "probe-data",
        "probe file",
        "--probe-data",
        "Forgetting probe text (optional; else the built-in probe)",
        "task",
        placeholder="path/to/general.txt",
    ),
    Question(
        "seq-len",
        "sequence length",
        "--seq-len",
        "Sequence length (tokens)",
        "task",
        number=int,
        placeholder="from the data, else 2048",
    ),
    Question(
        "batch",
        "batch size",
        "--batch-size",
        "Batch size (sequences per step)",
        "task",
        number=int,
        placeholder="8",
    ),
    Question(
        "dataset-tokens",
        "dataset size",
        "--dataset-tokens",
        "Dataset size in tokens (optional)",
        "task",
        number=float,
        placeholder="from the data, e.g. 5e7",
    ),
    Question(
        "fresh-facts",
        "fresh facts",
        "--needs-fresh-facts",
        "Must it learn facts that change or must be cited?",
        "task",
        schema="task.needs_fresh_facts",
        shown={"yes": "yes: retrieval comes first"},
        value="no",
        words="the fresh-facts switch",
    ),
    Question(
        "calibrated",
        "calibration",
        "--calibrated",
        "Apply calibration from measured runs?",
        "task",
        shown={"yes": "yes (tuneplan calibrate)"},
        value="no",
        words="the calibrated switch",
    ),
    _pin(
        "method",
        "method pin",
        "--method",
        "Method",
        schema="pins.method",
        shown={"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"},
    ),
    _pin("rank", "rank pin", "--lora-rank", "LoRA rank", number=int, placeholder="advisor decides"),
    _pin(
        "lr",
        "learning-rate pin",
        "--learning-rate",
        "Learning rate",
        number=float,
        placeholder="advisor decides",
    ),
    _pin("max-steps", "max-steps pin", "--max-steps", "Max steps", number=int, placeholder="epochs"),
    _pin(
        "targets",
        "target-modules pin",
        "--target-modules",
        "Target modules (comma-separated or all-linear)",
        placeholder="advisor decides",
    ),
    _pin("precision", "precision pin", "--precision", "Precision", schema="pins.precision"),
    _pin("optimizer", "optimizer pin", "--optimizer", "Optimizer", schema="pins.optimizer"),
    _pin(
        "checkpointing",
        "checkpointing pin",
        "--gradient-checkpointing",
        "Gradient checkpointing",
        schema="pins.gradient_checkpointing",
        shown={"yes": "on", "no": "off"},
        aliases=("--no-gradient-checkpointing",),
    ),
    _pin("attention", "attention pin", "--attention", "Attention", schema="pins.attention"),
)
BY_ID = {q.id: q for q in QUESTIONS}
CHOICES_OF = {"calibrated": ["no", "yes"]}
"""Choices that are a CLI switch rather than a schema field (--calibrated is an Inputs flag)."""

# Which question answers each flag named in a Problem (advisor/inputs.py, the catalog).
FIELD_FOR_FLAG = {flag: q.id for q in QUESTIONS for flag in (q.flag, *q.aliases)}
FIELD_LABEL = {q.id: q.name for q in QUESTIONS}
"""Field ids -> the words shown to people in problem lists."""
PIN_IDS = frozenset(q.id for q in QUESTIONS if q.group == "pins")
