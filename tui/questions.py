"""The questionnaire: the form built from the table of questions (tui/fields.py), its answers
read back as the advisor's Answers, and each problem shown under its question.

A choice's values come from the schema field the table names (its Literal type): a value the
schema gains appears in the list without touching the TUI. The hardware and model questions are
painted at once; the rest are mounted when the advisor has loaded (after the first paint, see
tui/advising.py), since their choices come from the schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Optional

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widget import AwaitMount, Widget
from textual.widgets import Button, Collapsible, Input, OptionList, Select, Static

from tuneplan.base.errors import Problem

from .fields import (
    BY_ID,
    CHOICES_OF,
    FIELD_FOR_FLAG,
    FIELD_LABEL,
    HW_CPU,
    HW_CUSTOM,
    PIN_IDS,
    QUESTIONS,
    Question,
)
from .search import rank
from .words import tui_words

_PARAMS = re.compile(r"\s*\d+(\.\d*)?([eE][+-]?\d+)?\s*[kKmMbBtT]?\s*")


def field_box(label: str, widget: Widget, help: str = "", tooltip: str = "") -> Vertical:
    """A question: its words, the control, optional help under it, and its (hidden) problem line."""
    parts: list[Widget] = [Static(label, classes="q"), widget]
    if help:
        parts.append(Static(help, classes="help"))
    parts.append(Static("", id=f"err-{widget.id}", classes="error"))
    box = Vertical(*parts, classes="field")
    if tooltip:
        widget.tooltip = tooltip
    return box


class ModelInput(Input):
    """The model box: down moves into the catalog matches below it; enter takes the only match."""

    BINDINGS = [Binding("down", "app.model_list", "Matches")]


class Questions(VerticalScroll):
    """The form on the Plan tab: hardware and model at once, the task questions once the
    advisor has loaded (`load`). Reads its answers back as the advisor's Answers (`collect`)
    and shows each problem under the question it belongs to (`show_problems`)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.touched: set[str] = set()
        self.show_all_errors = False
        self.bridge: Optional[ModuleType] = None
        """tui.advising once loaded (None until then: no catalog, no choices yet)."""

    def _input(self, q: Question, value: str = "", cls: type = Input) -> Vertical:
        return field_box(q.label, cls(value, id=q.id, placeholder=q.placeholder, compact=True), q.help)

    def compose(self) -> ComposeResult:
        yield Static("Hardware", classes="group")
        yield field_box(
            BY_ID["hw"].label,
            Select(
                [("This CPU", HW_CPU), ("Custom memory (GiB)", HW_CUSTOM)],
                value=HW_CPU,
                allow_blank=False,
                id="hw",
                compact=True,
            ),
            "Detecting the hardware…",
        )
        yield self._input(BY_ID["gpu-mem"])
        yield self._input(BY_ID["gpus"], "1")
        yield self._input(BY_ID["nodes"])
        yield Static("Model", classes="group")
        yield self._input(BY_ID["model"], cls=ModelInput)
        yield OptionList(id="model-list", compact=True)  # filled as you type
        yield Vertical(id="task-body")  # the task questions, mounted by load()

    def on_mount(self) -> None:
        self.sync_hw_visibility()
        self.query_one("#model-list", OptionList).display = False

    # ------------------------------------------------------------------ loading

    def _choice_widget(self, q: Question) -> Vertical:
        bridge = self.bridge
        assert bridge is not None
        values = CHOICES_OF.get(q.id) or bridge.choices(q.schema)
        if set(q.shown) == set(values):  # every value has its words: listed in their order
            values = list(q.shown)
        options = [(q.shown.get(v, v), v) for v in values]
        select = Select(
            options,
            id=q.id,
            compact=True,
            prompt=q.prompt,
            **({"value": q.value, "allow_blank": False} if q.value else {}),
        )
        return field_box(q.label, select, q.help, bridge.describe(q.schema) if q.schema else "")

    def _question(self, q: Question) -> Vertical:
        if q.schema or q.id in CHOICES_OF:
            return self._choice_widget(q)
        box = self._input(q)
        return box

    def load(self, bridge: ModuleType, detected) -> AwaitMount:
        """The advisor is here: fill the hardware list from the catalog (the detected card chosen
        unless the user already chose) and mount the task questions (await the result)."""
        self.bridge = bridge
        hw_value, custom, count = bridge.hw_default(detected)
        hw = self.query_one("#hw", Select)
        untouched = hw.value == HW_CPU
        hw.set_options([("This CPU", HW_CPU), ("Custom memory (GiB)", HW_CUSTOM)] + bridge.gpu_options())
        hw.value = hw_value if untouched else hw.value
        self.query_one("#err-hw").parent.query_one(".help", Static).update(bridge.detected_text(detected))
        for wid, value in (("gpu-mem", custom), ("gpus", count)):
            box = self.query_one(f"#{wid}", Input)
            if wid not in self.touched:
                box.value = value
        self.sync_hw_visibility()
        task: list[Widget] = [Static("Task", classes="group")]
        for q in QUESTIONS:
            if q.group == "task":
                task.append(self._question(q))
                if q.id == "domain":
                    task.append(self._measure_box())
        pins = [self._question(q) for q in QUESTIONS if q.group == "pins"]
        task.append(Collapsible(*pins, title="Pins (optional: fix choices yourself)", id="pins"))
        model = self.query_one("#model", Input)
        if model.value:
            self.filter_models(model.value)
        done = self.query_one("#task-body").mount_all(task)
        self.call_after_refresh(self.sync_measure_visibility)
        return done

    def _measure_box(self) -> Vertical:
        """Under the domain question: "measure it from my data", shown once the training data
        names a file (the app runs the measurement in a worker, tui/app.py)."""
        box = Vertical(
            Button("Measure it from my data", id="measure-domain", compact=True),
            Static("", id="domain-evidence", classes="help"),
            id="measure-box",
            classes="field",
        )
        box.display = False
        return box

    def sync_measure_visibility(self) -> None:
        """Offer the measurement only when the data field holds an existing file."""
        try:
            box = self.query_one("#measure-box")
        except NoMatches:
            return
        path = self.text("data")
        box.display = bool(path) and Path(path).expanduser().is_file()

    # ------------------------------------------------------------------ answers

    def text(self, wid: str) -> str:
        try:
            return self.query_one(f"#{wid}", Input).value.strip()
        except NoMatches:  # a question not mounted yet: unanswered
            return ""

    def choice(self, wid: str) -> Optional[str]:
        try:
            value = self.query_one(f"#{wid}", Select).value
        except NoMatches:
            return None
        return None if value == Select.NULL else str(value)

    def number(self, wid: str, problems: list[Problem]):
        """The field's number, or None when empty; text that is not one is a problem shown at
        the field (never silently reinterpreted)."""
        text = self.text(wid)
        if not text:
            return None
        q = BY_ID[wid]
        kind = q.number
        try:
            value = float(text.replace("_", ""))
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            problems.append(
                Problem(
                    q.flag,
                    f"{text!r} is not {what}",
                    f"type {what}, e.g. " + ("8" if kind is int else "24 or 5e7"),
                )
            )
            return None
        if kind is int:
            if value != int(value):
                problems.append(Problem(q.flag, f"{text!r} is not a whole number", f"type {int(value) or 1}"))
                return None
            return int(value)
        return value

    def collect(self):
        """The fields as the advisor's Answers, plus problems found while reading them
        (non-numbers, missing files). Only once the advisor has loaded."""
        bridge = self.bridge
        assert bridge is not None, "collect() before the advisor loaded"
        problems: list[Problem] = []
        num = lambda wid: self.number(wid, problems)  # noqa: E731
        hw = self.choice("hw")
        model = self.text("model")
        is_params = bool(model) and _PARAMS.fullmatch(model) is not None
        gpus, nodes = num("gpus"), num("nodes")
        mem = num("gpu-mem") if hw == HW_CUSTOM else None
        if hw == HW_CUSTOM and mem is None and not any(p.where == "--gpu-memory" for p in problems):
            problems.append(Problem("--gpu-memory", "no card memory given", "type one card's GiB, e.g. 24"))
        tokens = num("dataset-tokens")
        ckpt = self.choice("checkpointing")
        targets = [t.strip() for t in self.text("targets").split(",") if t.strip()] or None
        files = {}
        for wid in ("data", "eval-data", "probe-data"):
            path = self.text(wid)
            if path and not Path(path).expanduser().is_file():
                problems.append(
                    Problem(BY_ID[wid].flag, f"no file {path!r}", "give the path of an existing file")
                )
                path = ""
            files[wid] = str(Path(path).expanduser()) if path else None
        answers = bridge.Answers(
            model=None if is_params else (model or None),
            params=model if is_params else None,
            gpu=hw if hw not in (HW_CUSTOM, HW_CPU) else None,
            gpu_memory=mem,
            cpu=hw == HW_CPU,
            gpus=gpus if gpus is not None else 1,
            nodes=nodes if nodes is not None else 1,
            task={
                "domain_distance": self.choice("domain"),
                "forgetting_tolerance": self.choice("forgetting"),
                "domain_label": self.choice("domain-label"),
                "regime": self.choice("regime"),
                "seq_len": num("seq-len"),
                "batch_size": num("batch"),
                "dataset_tokens": None if tokens is None else int(tokens),
                "needs_fresh_facts": True if self.choice("fresh-facts") == "yes" else None,
            },
            pins={
                "method": self.choice("method"),
                "lora_rank": num("rank"),
                "learning_rate": num("lr"),
                "max_steps": num("max-steps"),
                "target_modules": targets,
                "precision": self.choice("precision"),
                "optimizer": self.choice("optimizer"),
                "attention": self.choice("attention"),
                "gradient_checkpointing": None if ckpt is None else ckpt == "yes",
            },
            data=files["data"],
            eval_data=files["eval-data"],
        )
        return answers, problems

    # ------------------------------------------------------------------ problems

    def visible(self, wid: str) -> bool:
        """Whether to show a field's problem now: always, except for unanswered, untouched
        questions before the first save (a fresh form is not a wall of red)."""
        if wid == "model" and self.searching():
            return False
        if self.show_all_errors or wid in self.touched:
            return True
        try:
            widget = self.query_one(f"#{wid}")
        except NoMatches:
            return False
        value = widget.value
        return not (value == Select.NULL or value == "")

    def searching(self) -> bool:
        """The model box holds a search in progress (matches listed below it)."""
        return bool(self.query_one("#model-list", OptionList).display)

    def show_problems(self, problems: list[Problem]) -> None:
        by_field: dict[str, list[Problem]] = {}
        for p in problems:
            by_field.setdefault(FIELD_FOR_FLAG.get(p.where, ""), []).append(p)
        for wid in FIELD_LABEL:
            found = by_field.get(wid, [])
            shown = found and self.visible(wid)
            try:
                err = self.query_one(f"#err-{wid}", Static)
            except NoMatches:
                continue
            err.update(
                Text(
                    "\n".join(
                        f"✗ {tui_words(p.message)}" + (f" — {tui_words(p.fix)}" if p.fix else "")
                        for p in found
                    )
                )
                if shown
                else ""
            )
            err.display = bool(shown)
            err.remove_class("hint")
            self.query_one(f"#{wid}").set_class(bool(shown), "bad")
        if self.searching() and not self.show_all_errors:
            n = self.query_one("#model-list", OptionList).option_count
            hint = self.query_one("#err-model", Static)
            hint.update(
                Text(
                    f"{n} match{'es' if n != 1 else ''}: ↓ to choose, enter takes "
                    f"{'it' if n == 1 else 'the top one'}",
                    style="italic",
                )
            )
            hint.display = True
            hint.set_class(True, "hint")

    def focus_problem(self, problems: list[Problem]) -> bool:
        """Focus the first question with a problem (opening the pins if it is one); False if none."""
        for p in problems:
            wid = FIELD_FOR_FLAG.get(p.where)
            if wid:
                if wid in PIN_IDS:
                    self.query_one("#pins", Collapsible).collapsed = False
                self.query_one(f"#{wid}").focus()
                return True
        return False

    # ------------------------------------------------------------------ events

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "model":
            self.filter_models(event.value)
        if event.input.id == "data":
            self.sync_measure_visibility()
        if event.input.has_focus:
            self.touched.add(event.input.id or "")

    @on(Input.Submitted, "#model")
    def _model_submitted(self) -> None:
        """Enter in the model box takes the only match (or the top one), then moves on."""
        box = self.query_one("#model-list", OptionList)
        if box.display and box.option_count >= 1:
            option = box.get_option_at_index(box.highlighted or 0)
            self.pick_model(str(option.id))
        else:
            self._focus_after_model()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.has_focus or event.select.expanded:
            self.touched.add(event.select.id or "")
        if event.select.id == "hw":
            self.sync_hw_visibility()

    @on(OptionList.OptionSelected, "#model-list")
    def _model_picked(self, event: OptionList.OptionSelected) -> None:
        self.pick_model(str(event.option.id))

    def _focus_after_model(self) -> None:
        try:
            self.query_one("#domain", Select).focus()
        except NoMatches:  # the task questions are not mounted yet
            self.screen.focus_next()

    def pick_model(self, name: str) -> None:
        model = self.query_one("#model", Input)
        self.touched.add("model")
        model.value = name
        model.cursor_position = len(model.value)
        self.query_one("#model-list", OptionList).display = False
        self._focus_after_model()

    def sync_hw_visibility(self) -> None:
        custom = self.choice("hw") == HW_CUSTOM
        self.query_one("#gpu-mem", Input).parent.display = custom

    def filter_models(self, text: str) -> None:
        """List the catalog models matching the model box, best first (none until the catalog
        has loaded, nor for an exact name, a size like 7B or a path)."""
        from textual.widgets.option_list import Option

        box = self.query_one("#model-list", OptionList)
        all_names = self.bridge.model_names() if self.bridge is not None else []
        names = {n.lower() for n in all_names}
        text = text.strip()
        hide = (
            not all_names
            or text.lower() in names
            or _PARAMS.fullmatch(text) is not None
            or text.startswith((".", "/", "~"))
        )
        box.clear_options()
        if not hide:
            box.add_options([Option(name, id=name) for name in rank(text, all_names)])
        box.display = not hide and box.option_count > 0 and bool(text)
        if box.display:
            box.highlighted = 0
