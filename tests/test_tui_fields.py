"""The questionnaire's one table (tui/fields.py) against what it mirrors: the `tuneplan advise`
flags, the schema's Literal types, and the form the app builds from it."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

from test_tui import make_app, mounted
from textual.widgets import Select

from tuneplan.schemas import Pins, Task
from tuneplan.tui import advising
from tuneplan.tui.fields import FIELD_FOR_FLAG, QUESTIONS
from tuneplan.tui.words import FLAG_WORDS, tui_words


def _advise_flags() -> set[str]:
    tuneplan = Path(sys.executable).parent / "tuneplan"
    out = subprocess.run([str(tuneplan), "advise", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))


def test_every_question_answers_a_real_advise_flag():
    flags = _advise_flags()
    asked = {f for q in QUESTIONS for f in (q.flag, *q.aliases) if f.startswith("--")}
    assert asked - flags == set()
    assert len(FIELD_FOR_FLAG) == len(asked) + 1  # + "hardware", the catalog's own where
    assert tui_words("use --gpus 1") == "set the GPU count to 1"
    assert FLAG_WORDS["--no-gradient-checkpointing"] == "the checkpointing pin"


def test_choices_are_the_schema_literals():
    def literal(model, name):
        ann = model.model_fields[name].annotation
        if typing.get_origin(ann) is typing.Union:
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        return [str(v) for v in typing.get_args(ann)]

    assert (
        advising.choices("task.domain_distance")
        == literal(Task, "domain_distance")
        == ["near", "moderate", "far"]
    )
    assert advising.choices("pins.optimizer") == literal(Pins, "optimizer")
    assert advising.choices("task.needs_fresh_facts") == ["no", "yes"]
    assert "Biderman" in advising.describe("task.domain_distance")


async def test_the_form_lists_what_the_schema_allows(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        for q in QUESTIONS:
            if not q.schema:
                continue
            select = app.query_one(f"#{q.id}", Select)
            values = [v for _, v in select._options if isinstance(v, str)]
            assert sorted(values) == sorted(advising.choices(q.schema)), q.id
            assert select.tooltip == advising.describe(q.schema)
        options = [
            (str(label), v)
            for label, v in app.query_one("#checkpointing", Select)._options
            if isinstance(v, str)
        ]
        assert options == [("on", "yes"), ("off", "no")]
