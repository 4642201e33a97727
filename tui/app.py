"""The `tuneplan tui` app: questions on the left, the live recommendation on the right.

Every answer change rebuilds :class:`~tuneplan.advisor.inputs.Answers`, validates it with the same
``build_inputs`` the CLI uses, maps each problem's flag back to its field and, when all is well,
re-runs the advisor (tens of milliseconds) so the plan pane is always current. ctrl+s saves the
plan, ctrl+r runs it in a subprocess (``tuneplan run``) and tails its metrics; the Runs tab reads
the run database. torch is never imported here: training happens in the child process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Union

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Collapsible,
    DataTable,
    Footer,
    Input,
    OptionList,
    ProgressBar,
    RichLog,
    Select,
    Sparkline,
    Static,
    TabbedContent,
    TabPane,
)

from tuneplan.advisor import catalog
from tuneplan.advisor.engine import advise
from tuneplan.advisor.errors import InputError, Problem
from tuneplan.advisor.fileio import write_text_atomic
from tuneplan.advisor.inputs import Answers, build_inputs
from tuneplan.advisor.render import METHOD_LABEL, bar, method_rows
from tuneplan.schemas import SCHEMA_ID, CPUHardware, DataSpec, GPUHardware, Plan

GIB = 1024**3
BAR_WIDTH = 12

HW_CUSTOM = "custom"
HW_CPU = "cpu"

# Which widget answers for each flag named in a Problem (advisor/inputs.py, catalog.py).
FIELD_FOR_FLAG = {
    "--model": "model", "--params": "model",
    "--gpu": "hw", "--cpu": "hw", "hardware": "hw", "--gpu-memory": "gpu-mem",
    "--gpus": "gpus", "--nodes": "gpus",
    "--domain": "domain", "--domain-label": "domain-label", "--forgetting": "forgetting",
    "--regime": "regime", "--seq-len": "seq-len", "--batch-size": "batch",
    "--dataset-tokens": "dataset-tokens", "--data": "data",
    "--method": "method", "--lora-rank": "rank", "--learning-rate": "lr", "--max-steps": "max-steps",
    "--precision": "precision", "--optimizer": "optimizer", "--attention": "attention",
    "--gradient-checkpointing": "checkpointing", "--target-modules": "targets",
}

# Field ids -> the words shown to people in problem lists.
FIELD_LABEL = {
    "model": "model", "hw": "hardware", "gpu-mem": "card memory", "gpus": "GPU count",
    "domain": "domain distance", "domain-label": "kind of data", "forgetting": "forgetting tolerance",
    "regime": "regime", "seq-len": "sequence length", "batch": "batch size",
    "dataset-tokens": "dataset size", "data": "training data", "method": "method pin",
    "rank": "rank pin", "lr": "learning-rate pin", "max-steps": "max-steps pin",
    "precision": "precision pin", "optimizer": "optimizer pin", "attention": "attention pin",
    "checkpointing": "checkpointing pin", "targets": "target-modules pin",
}

DOMAIN_HELP = ("near: chat, style, formats, classification · moderate: a specialist vocabulary "
               "(medical, legal, finance) · far: code, math and a new language are far")
FORGETTING_HELP = ("low: the model must keep its general abilities (LoRA forgets less) · medium: "
                   "some loss is acceptable · high: only the new task matters")
REGIME_HELP = ("instruction: prompt/response pairs · continued pretraining: raw text, often "
               "billions of tokens (LoRA trails full fine-tuning there)")

_PARAMS = re.compile(r"\s*\d+(\.\d*)?([eE][+-]?\d+)?\s*[kKmMbBtT]?\s*")
_TOTAL_STEPS = re.compile(r"\b(\d+) steps\b")


def run_prefix() -> list[str]:
    """The command that runs a plan file, before its arguments: ``tuneplan run``."""
    return [sys.executable, "-m", "tuneplan.advisor.cli", "run"]



def _gib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def _cell(value) -> str:
    """One SQL result value as table text (floats to 6 significant digits)."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _before_after(before: Optional[float], after: Optional[float]) -> str:
    if before is None and after is None:
        return "-"
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return f"{fmt(before)}→{fmt(after)}"


class ModelInput(Input):
    """The model box: down moves into the catalog matches below it."""

    BINDINGS = [Binding("down", "app.model_list", "Matches", show=False)]


class HelpScreen(ModalScreen[None]):
    """Every key binding, with what the app does; escape, F1 or ? closes it."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        rows = [
            ("F1 / ?", "this help"),
            ("ctrl+s", "save the plan to the --out file (atomic)"),
            ("ctrl+r", "save and run the plan (tuneplan run); follow it in the Run tab"),
            ("ctrl+g", "cancel the run (SIGINT: recorded as interrupted)"),
            ("F2 / F3 / F4", "Plan / Run / Runs tab"),
            ("F5", "reload past runs from the run database"),
            ("enter (SQL box)", "run a read-only query against the run database"),
            ("tab / shift+tab", "next / previous question"),
            ("down (model box)", "move into the catalog matches; enter picks one"),
            ("enter / space", "open a list; arrows choose; enter picks"),
            ("ctrl+q", "quit"),
        ]
        text = Text()
        text.append("tuneplan — keys\n\n", style="bold")
        for key, what in rows:
            text.append(f"{key:>16}  ", style="bold cyan")
            text.append(f"{what}\n")
        text.append("\nAnswers are checked as you type; a problem shows under its question and the "
                    "plan pane keeps the last valid plan until it is fixed.", style="dim")
        with Vertical(id="help-box"):
            yield Static(text, id="help-text")
            yield Button("Close", id="help-close", variant="primary")

    @on(Button.Pressed, "#help-close")
    def _close(self) -> None:
        self.app.pop_screen()


class TunePlanApp(App[int]):
    """Interactive planner: answer, watch the plan change, save it, run it, compare runs."""

    CSS_PATH = "tuneplan.tcss"
    TITLE = "tuneplan"
    BINDINGS = [
        Binding("f1", "help", "Help", priority=True),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("ctrl+g", "cancel_run", "Cancel run", priority=True),
        Binding("f2", "tab('plan')", "Plan tab", show=False, priority=True),
        Binding("f3", "tab('run')", "Run tab", show=False, priority=True),
        Binding("f4", "tab('runs')", "Runs tab", show=False, priority=True),
        Binding("f5", "refresh_runs", "Refresh", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, out: Union[str, Path] = "plan.json", db: Optional[str] = None,
                 detect: Callable[[], Union[GPUHardware, CPUHardware]] = catalog.detect_hardware,
                 command: Callable[[], list[str]] = run_prefix) -> None:
        """out: where ctrl+s writes; db: run database (None: the store's default); detect: the
        hardware probe; command: the `tuneplan run` prefix (tests swap in a fake)."""
        super().__init__()
        self.out = Path(out).expanduser()
        self.db = db
        self.command = command
        self.detected = self._detect(detect)
        self.plan: Optional[Plan] = None
        self.problems: list[Problem] = []
        self.show_all_errors = False
        self.touched: set[str] = set()
        self.proc: Optional[subprocess.Popen] = None
        self.running = False
        self.losses: list[float] = []
        self.tokens = 0
        self.total_steps: Optional[int] = None
        self.closing = False

    @staticmethod
    def _detect(detect: Callable[[], Union[GPUHardware, CPUHardware]]):
        try:
            return detect()
        except InputError:
            return None

    # ------------------------------------------------------------------ layout

    def _hw_default(self) -> tuple[str, str, str]:
        """(select value, custom GiB, count) matching the detected hardware."""
        hw = self.detected
        if isinstance(hw, GPUHardware):
            try:
                return catalog.get_gpu(hw.name).name, "", str(hw.count)
            except InputError:
                return HW_CUSTOM, f"{hw.memory_bytes / GIB:g}", str(hw.count)
        return HW_CPU, "", "1"

    def _detected_text(self) -> str:
        hw = self.detected
        if hw is None:
            return "Detected: nothing (pick a card)"
        count = f"{hw.count}× " if hw.count > 1 else ""
        return f"Detected: {count}{hw.name}, {hw.memory_bytes / GIB:.1f} GiB"

    @staticmethod
    def _field(label: str, widget: Widget, help: str = "") -> Vertical:
        parts: list[Widget] = [Static(label, classes="q"), widget]
        if help:
            parts.append(Static(help, classes="help"))
        parts.append(Static("", id=f"err-{widget.id}", classes="error"))
        return Vertical(*parts, classes="field")

    def compose(self) -> ComposeResult:
        hw_value, custom, count = self._hw_default()
        gpus = [(f"{g.name} ({g.memory_bytes / GIB:.1f} GiB)", g.name) for g in catalog.list_gpus()]
        hw_options = [("This CPU", HW_CPU), ("Custom memory (GiB)", HW_CUSTOM)] + gpus
        pick = dict(prompt="choose…", compact=True)
        auto = dict(prompt="advisor decides", compact=True)
        f = self._field
        with TabbedContent(id="tabs", initial="plan"):
            with TabPane("Plan", id="plan"):
                with Horizontal(id="plan-body"):
                    with VerticalScroll(id="questions"):
                        yield Static("Hardware", classes="group")
                        yield f("Where will it train?",
                                Select(hw_options, value=hw_value, allow_blank=False, id="hw",
                                       compact=True), self._detected_text())
                        yield f("Memory of one card (GiB)",
                                Input(custom, id="gpu-mem", type="number", valid_empty=True,
                                      placeholder="e.g. 24", compact=True))
                        yield f("How many GPUs (per machine)?",
                                Input(count, id="gpus", type="integer", compact=True))
                        yield Static("Model", classes="group")
                        yield f("Which model? (catalog name, local folder, or a size like 7B)",
                                ModelInput(id="model", placeholder="type to search, e.g. llama-3.1-8b",
                                      compact=True))
                        yield OptionList(*self._model_matches(""), id="model-list", compact=True)
                        yield Static("Task", classes="group")
                        yield f("How far is your data from what the model already does?",
                                Select([("near", "near"), ("moderate", "moderate"), ("far", "far")],
                                       id="domain", **pick), DOMAIN_HELP)
                        yield f("Kind of data (optional)",
                                Select([(x, x) for x in ("chat", "instruction", "classification",
                                                         "summarization", "extraction", "code",
                                                         "math", "new-language", "medical", "legal",
                                                         "finance", "science", "other")],
                                       id="domain-label", prompt="not said", compact=True))
                        yield f("How much general ability may it lose?",
                                Select([("low", "low"), ("medium", "medium"), ("high", "high")],
                                       id="forgetting", **pick), FORGETTING_HELP)
                        yield f("Training regime",
                                Select([("instruction", "instruction"),
                                        ("continued pretraining", "continued-pretraining")],
                                       id="regime", value="instruction", allow_blank=False,
                                       compact=True), REGIME_HELP)
                        yield f("Sequence length (tokens)",
                                Input("2048", id="seq-len", type="integer", compact=True))
                        yield f("Batch size (sequences per step)",
                                Input("8", id="batch", type="integer", compact=True))
                        yield f("Dataset size in tokens (optional)",
                                Input(id="dataset-tokens", type="number", valid_empty=True,
                                      placeholder="e.g. 5e7", compact=True))
                        yield f("Training data file (JSONL/JSON/CSV/Parquet; needed to run)",
                                Input(id="data", placeholder="path/to/train.jsonl", compact=True))
                        with Collapsible(title="Pins (optional: fix choices yourself)", id="pins"):
                            yield f("Method", Select([("full fine-tuning", "full"), ("LoRA", "lora"),
                                                      ("QLoRA", "qlora")], id="method", **auto))
                            yield f("LoRA rank", Input(id="rank", type="integer", valid_empty=True,
                                                       placeholder="advisor decides", compact=True))
                            yield f("Learning rate", Input(id="lr", type="number", valid_empty=True,
                                                           placeholder="advisor decides", compact=True))
                            yield f("Max steps", Input(id="max-steps", type="integer", valid_empty=True,
                                                       placeholder="epochs", compact=True))
                            yield f("Target modules (comma-separated or all-linear)",
                                    Input(id="targets", placeholder="advisor decides", compact=True))
                            yield f("Precision", Select([(x, x) for x in ("bf16-mixed", "bf16",
                                                                          "fp16-mixed", "fp32")],
                                                        id="precision", **auto))
                            yield f("Optimizer", Select([(x, x) for x in ("adamw", "adamw-8bit",
                                                                          "paged-adamw-8bit",
                                                                          "paged-adamw-32bit")],
                                                        id="optimizer", **auto))
                            yield f("Gradient checkpointing", Select([("on", "on"), ("off", "off")],
                                                                     id="checkpointing", **auto))
                            yield f("Attention", Select([(x, x) for x in ("eager", "sdpa", "flash")],
                                                        id="attention", **auto))
                    with VerticalScroll(id="recommendation"):
                        yield Static("", id="rec-status")
                        yield Static("", id="rec-method")
                        yield Static("", id="rec-details")
                        yield Static("", id="rec-bars")
                        yield Static("", id="rec-rules")
                        yield Static("", id="rec-warnings")
            with TabPane("Run", id="run"):
                with Vertical(id="run-body"):
                    yield Static("No run yet: ctrl+s saves the plan, ctrl+r runs it.", id="run-status")
                    yield ProgressBar(id="run-progress", show_eta=False)
                    yield Static("", id="run-metrics")
                    yield Sparkline([], id="run-loss")
                    yield Button("Cancel run (ctrl+g)", id="cancel", variant="error", disabled=True)
                    yield RichLog(id="run-log", max_lines=500, wrap=True)
            with TabPane("Runs", id="runs"):
                with Vertical(id="runs-body"):
                    yield Static("", id="runs-status")
                    yield DataTable(id="runs-table", zebra_stripes=True, cursor_type="row")
                    yield Input(id="sql", placeholder="read-only SQL, e.g. SELECT * FROM "
                                "method_summary (enter runs it)")
                    yield Static("", id="sql-status")
                    yield DataTable(id="sql-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        """Fill the derived parts: custom-memory visibility, first plan, past runs."""
        self._sync_hw_visibility()
        self.recompute()
        self.action_refresh_runs()
        self.query_one("#model", Input).focus()

    # ------------------------------------------------------------------ answers

    def _text(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def _choice(self, wid: str) -> Optional[str]:
        value = self.query_one(f"#{wid}", Select).value
        return None if value == Select.NULL else str(value)

    def _number(self, wid: str, kind: type, problems: list[Problem]):
        text = self._text(wid)
        if not text:
            return None
        try:
            value = float(text)
            if kind is int:
                if value != int(value):
                    raise ValueError
                value = int(value)
            return value
        except ValueError:
            flag = next(k for k, v in FIELD_FOR_FLAG.items() if v == wid)
            what = "a whole number" if kind is int else "a number"
            problems.append(Problem(flag, f"{text!r} is not {what}", f"type {what}"))
            return None

    def collect(self) -> tuple[Answers, list[Problem]]:
        """The fields as Answers, plus problems found while reading them (non-numbers, data)."""
        problems: list[Problem] = []
        hw = self._choice("hw")
        model = self._text("model")
        is_params = bool(model) and _PARAMS.fullmatch(model) is not None
        gpus = self._number("gpus", int, problems)
        mem = self._number("gpu-mem", float, problems) if hw == HW_CUSTOM else None
        if hw == HW_CUSTOM and mem is None and not any(p.where == "--gpu-memory" for p in problems):
            problems.append(Problem("--gpu-memory", "no card memory given", "type one card's GiB, e.g. 24"))
        tokens = self._number("dataset-tokens", float, problems)
        ckpt = self._choice("checkpointing")
        targets = [t.strip() for t in self._text("targets").split(",") if t.strip()] or None
        data = self._text("data")
        if data and not Path(data).expanduser().is_file():
            problems.append(Problem("--data", f"no file {data!r}", "give the path of a training file"))
        answers = Answers(
            model=None if is_params else (model or None), params=model if is_params else None,
            gpu=hw if hw not in (HW_CUSTOM, HW_CPU) else None, gpu_memory=mem, cpu=hw == HW_CPU,
            gpus=gpus if gpus is not None else 1,
            task={"domain_distance": self._choice("domain"), "forgetting_tolerance": self._choice("forgetting"),
                  "domain_label": self._choice("domain-label"), "regime": self._choice("regime"),
                  "seq_len": self._number("seq-len", int, problems),
                  "batch_size": self._number("batch", int, problems),
                  "dataset_tokens": None if tokens is None else int(tokens)},
            pins={"method": self._choice("method"), "lora_rank": self._number("rank", int, problems),
                  "learning_rate": self._number("lr", float, problems),
                  "max_steps": self._number("max-steps", int, problems), "target_modules": targets,
                  "precision": self._choice("precision"), "optimizer": self._choice("optimizer"),
                  "attention": self._choice("attention"),
                  "gradient_checkpointing": None if ckpt is None else ckpt == "on"},
        )
        return answers, problems

    def recompute(self) -> None:
        """Validate every answer; show problems at their fields, or advise and show the plan."""
        answers, problems = self.collect()
        try:
            inputs = build_inputs(answers)
        except InputError as e:
            problems = problems + [Problem(p.where, "not answered yet", "choose one") if
                                   p.message == "Field required" else p for p in e.problems]
        else:
            if not problems:
                try:
                    self.plan = advise(inputs)
                except Exception as e:  # an advisor bug must not take the questionnaire down
                    problems.append(Problem("advisor", f"{type(e).__name__}: {e}"))
        self.problems = problems
        self._show_problems()
        self._show_plan()

    def _visible(self, wid: str) -> bool:
        """Whether to show a field's problem now: always, except for unanswered, untouched
        questions before the first save (a fresh form is not a wall of red)."""
        if self.show_all_errors or wid in self.touched:
            return True
        widget = self.query_one(f"#{wid}")
        value = widget.value
        return not (value == Select.NULL or value == "")

    def _show_problems(self) -> None:
        by_field: dict[str, list[Problem]] = {}
        for p in self.problems:
            by_field.setdefault(FIELD_FOR_FLAG.get(p.where, ""), []).append(p)
        for wid in FIELD_LABEL:
            found = by_field.get(wid, [])
            shown = found and self._visible(wid)
            err = self.query_one(f"#err-{wid}", Static)
            err.update(Text("\n".join(f"✗ {p.message}" + (f" — {p.fix}" if p.fix else "")
                                      for p in found)) if shown else "")
            err.display = bool(shown)
            self.query_one(f"#{wid}").set_class(bool(shown), "bad")

    def _problem_lines(self) -> Text:
        text = Text()
        for p in self.problems:
            wid = FIELD_FOR_FLAG.get(p.where)
            text.append(f"\n • {FIELD_LABEL.get(wid, p.where)}: ", style="bold")
            text.append(p.message)
        return text

    def _show_plan(self) -> None:
        status = self.query_one("#rec-status", Static)
        if self.problems:
            missing = all(not self._visible(FIELD_FOR_FLAG.get(p.where, "hw")) for p in self.problems)
            head = ("Answer the questions to see a plan:" if missing and self.plan is None else
                    f"Fix {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
                    + (" (the plan below is from the last valid answers):" if self.plan else ":"))
            status.update(Text(head, style="bold yellow") + self._problem_lines())
            status.display = True
            status.set_class(not missing or self.plan is not None, "stale")
        else:
            status.update("")
            status.display = False
        plan = self.plan
        if plan is None:
            for wid in ("rec-method", "rec-details", "rec-bars", "rec-rules", "rec-warnings"):
                self.query_one(f"#{wid}", Static).update("")
            return
        self._render_plan(plan)

    def _render_plan(self, plan: Plan) -> None:
        hw = plan.inputs.hardware
        cap = plan.memory.device_capacity_bytes
        head = Text()
        head.append(f"Method: {METHOD_LABEL[plan.method]}", style="bold reverse " +
                    ("green" if plan.feasible else "red"))
        head.append("  fits" if plan.feasible else "  does not fit",
                    style="green" if plan.feasible else "bold red")
        head.append(f"\n{plan.inputs.model.name} on {f'{hw.count}× ' if hw.count > 1 else ''}{hw.name}")
        self.query_one("#rec-method", Static).update(head)

        t, lora = plan.training, plan.lora
        lines = [f"learning rate {t.learning_rate:g} ({t.lr_scheduler}, warmup {t.warmup_ratio:g})"]
        if lora:
            lines.append(f"rank {lora.rank}, alpha {lora.alpha:g} ({lora.alpha_convention})")
            lines.append(f"targets {', '.join(lora.target_modules)}")
        else:
            lines.append("all weights train (no adapter)")
        if plan.quantization:
            q = plan.quantization
            lines.append(f"base in {q.quant_type.upper()} {q.bits}-bit, compute {q.compute_dtype}")
        lines.append(f"micro-batch {t.per_device_batch_size} × accumulation "
                     f"{t.gradient_accumulation_steps}, seq {t.seq_len}")
        lines.append(f"{t.precision}, {t.optimizer}, checkpointing "
                     f"{'on' if t.gradient_checkpointing else 'off'}, attention {t.attention}")
        if plan.distributed.num_processes > 1:
            lines.append(f"{plan.distributed.num_processes} processes, {plan.distributed.strategy}")
        self.query_one("#rec-details", Static).update(Text("\n".join(f"• {x}" for x in lines)))

        bars = Text()
        bars.append(f"Peak memory per device vs {cap / GIB:.1f} GiB\n", style="bold")
        for r in method_rows(plan):
            name = METHOD_LABEL[r["method"]] + (" ◀" if r["chosen"] else "")
            colour = "green" if r["fits"] else "red"
            bars.append(f"{name:<8}")
            bars.append(bar(r["bytes"], cap, BAR_WIDTH), style=colour)
            bars.append(f" {r['bytes'] / GIB:6.1f} GiB ")
            bars.append("✓" if r["fits"] else "✗", style=colour)
            bars.append("\n")
        self.query_one("#rec-bars", Static).update(bars)

        rules = Text()
        rules.append("Rules that fired", style="bold")
        for d in plan.decisions:
            rules.append(f"\n{d.rule} ", style="bold cyan")
            rules.append(f"{d.name}: ", style="cyan")
            rules.append(d.message)
        self.query_one("#rec-rules", Static).update(rules)

        warn = Text()
        if plan.warnings:
            warn.append("Warnings", style="bold yellow")
            for w in plan.warnings:
                warn.append(f"\n! {w}")
        if plan.ways_out:
            warn.append(("\n" if plan.warnings else "") + "Ways out", style="bold red")
            for w in plan.ways_out:
                warn.append(f"\n→ {w}")
        for a in plan.alternatives:
            warn.append(f"\n{METHOD_LABEL[a.method]}: {a.reason}", style="dim")
        self.query_one("#rec-warnings", Static).update(warn)

    # ------------------------------------------------------------------ events

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        wid = event.input.id
        if wid in ("sql",):
            return
        if wid == "model":
            self._filter_models(event.value)
        if event.input.has_focus:
            self.touched.add(wid)
        self.recompute()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.has_focus or event.select.expanded:
            self.touched.add(event.select.id)
        if event.select.id == "hw":
            self._sync_hw_visibility()
        self.recompute()

    @on(OptionList.OptionSelected, "#model-list")
    def _model_picked(self, event: OptionList.OptionSelected) -> None:
        model = self.query_one("#model", Input)
        self.touched.add("model")
        model.value = str(event.option.id)
        model.cursor_position = len(model.value)
        self.query_one("#domain", Select).focus()

    def _sync_hw_visibility(self) -> None:
        custom = self._choice("hw") == HW_CUSTOM
        self.query_one("#gpu-mem", Input).parent.display = custom

    @staticmethod
    def _model_matches(text: str) -> list:
        from textual.widgets.option_list import Option

        needle = text.strip().lower()
        return [Option(m.name, id=m.name) for m in catalog.list_models()
                if needle in m.name.lower()]

    def _filter_models(self, text: str) -> None:
        box = self.query_one("#model-list", OptionList)
        names = {m.name.lower() for m in catalog.list_models()}
        text = text.strip()
        hide = (text.lower() in names or _PARAMS.fullmatch(text) is not None
                or text.startswith((".", "/", "~")))
        box.clear_options()
        if not hide:
            box.add_options(self._model_matches(text))
        box.display = not hide and box.option_count > 0

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        """Show the key bindings."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_model_list(self) -> None:
        """Move from the model box into the catalog matches."""
        box = self.query_one("#model-list", OptionList)
        if box.display:
            box.focus()
            box.highlighted = 0

    def action_tab(self, tab: str) -> None:
        """Switch to a tab by id and focus its first control."""
        self.query_one("#tabs", TabbedContent).active = tab
        self.query_one({"plan": "#model", "run": "#run-log", "runs": "#runs-table"}[tab]).focus()

    def _focus_first_problem(self) -> None:
        for p in self.problems:
            wid = FIELD_FOR_FLAG.get(p.where)
            if wid:
                widget = self.query_one(f"#{wid}")
                if wid in {"method", "rank", "lr", "max-steps", "targets", "precision", "optimizer",
                           "checkpointing", "attention"}:
                    self.query_one("#pins", Collapsible).collapsed = False
                self.action_tab("plan")
                widget.focus()
                return

    def action_save(self) -> bool:
        """Write the validated plan to --out; when invalid, say what to fix instead."""
        self.show_all_errors = True
        self.recompute()
        if self.problems or self.plan is None:
            fixes = "; ".join(f"{FIELD_LABEL.get(FIELD_FOR_FLAG.get(p.where), p.where)}: {p.message}"
                              for p in self.problems[:4])
            self.notify(f"Not saved. Fix first — {fixes}", title="Plan is not valid",
                        severity="error", timeout=8)
            self._focus_first_problem()
            return False
        plan = self.plan
        data = self._text("data")
        if data:
            plan = plan.model_copy(update={"data": DataSpec(train_path=str(Path(data).expanduser().resolve()))})
        from tuneplan.advisor.cli import plan_to_json

        try:
            write_text_atomic(self.out, plan_to_json(plan, SCHEMA_ID))
        except OSError as e:
            self.notify(f"Could not write {self.out}: {e}", severity="error", timeout=8)
            return False
        self.notify(f"Plan saved to {self.out.resolve()}", title=f"{METHOD_LABEL[plan.method]} plan saved")
        return True

    def action_run(self) -> None:
        """Save the plan, then run it in a subprocess and follow its metrics."""
        if self.running:
            self.notify("A run is already going; ctrl+g cancels it.", severity="warning")
            return
        if not self._text("data"):
            self.problems.append(Problem("--data", "a run needs training data",
                                         "give a JSONL/JSON/CSV/Parquet file"))
            self.touched.add("data")
            self._show_problems()
            self.notify("Give a training data file (Task → training data) to run.",
                        title="Cannot run", severity="error")
            self._focus_first_problem()
            return
        if not self.action_save():
            return
        output = self.out.resolve().parent / "runs"
        cmd = self.command() + [str(self.out.resolve()), "--output", str(output)]
        if self.db:
            cmd += ["--db", self.db]
        max_steps = self._text("max-steps")
        if max_steps:
            cmd += ["--max-steps", max_steps]
        cmd += ["--data", str(Path(self._text("data")).expanduser().resolve())]
        self.running = True
        self.losses = []
        self.tokens = 0
        self.total_steps = None
        self.query_one("#run-log", RichLog).clear()
        self.query_one("#run-loss", Sparkline).data = []
        self.query_one("#run-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#run-metrics", Static).update("")
        self.query_one("#run-status", Static).update(Text("Starting… " + " ".join(cmd[2:]), style="bold"))
        self.query_one("#cancel", Button).disabled = False
        self.action_tab("run")
        self._run_worker(cmd, output)

    def action_cancel_run(self) -> None:
        """Send SIGINT to the running plan so it stops and is recorded as interrupted."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.notify("No run is going.", severity="warning")
            return
        proc.send_signal(signal.SIGINT)
        self.query_one("#run-status", Static).update(Text("Cancelling (SIGINT sent)…", style="bold yellow"))
        self.notify("Cancelling the run…")

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel_run()

    # ------------------------------------------------------------------ the run

    @work(thread=True, exclusive=True, group="run")
    def _run_worker(self, cmd: list[str], output: Path) -> None:
        """Launch the run, tail <output>/<run_id>/metrics.jsonl, report the outcome."""
        output.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in output.iterdir()}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
                                    start_new_session=True)
        except OSError as e:
            self.call_from_thread(self._run_finished, None, {"error": str(e)}, None)
            return
        self.proc = proc
        pump = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        pump.start()
        run_dir: Optional[Path] = None
        offset = 0
        while True:
            done = proc.poll() is not None
            if run_dir is None:
                new = sorted(p for p in output.iterdir() if p.is_dir() and p.name not in before)
                run_dir = new[0] if new else None
            if run_dir is not None:
                offset, rows = self._read_metrics(run_dir / "metrics.jsonl", offset)
                if rows:
                    self.call_from_thread(self._show_metrics, rows)
            if done:
                break
            time.sleep(0.2)
        pump.join(timeout=2)
        result = None
        if run_dir is not None:
            try:
                result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                result = None
        self.call_from_thread(self._run_finished, proc.returncode, result, run_dir)

    def _pump(self, stream) -> None:
        """Copy the child's output into the run log (thread)."""
        for line in stream:
            try:
                self.call_from_thread(self._log_line, line.rstrip("\n"))
            except RuntimeError:  # the app has gone
                return

    @staticmethod
    def _read_metrics(path: Path, offset: int) -> tuple[int, list[dict]]:
        """New complete JSON lines of metrics.jsonl from byte offset; (new offset, rows)."""
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except OSError:
            return offset, []
        end = chunk.rfind(b"\n") + 1
        rows = []
        for line in chunk[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return offset + end, rows

    def _log_line(self, line: str) -> None:
        if self.closing:
            return
        self.query_one("#run-log", RichLog).write(Text(line))
        m = _TOTAL_STEPS.search(line)
        if m and self.total_steps is None:
            self.total_steps = int(m.group(1))
            self.query_one("#run-progress", ProgressBar).update(total=self.total_steps)

    def _show_metrics(self, rows: list[dict]) -> None:
        if self.closing:
            return
        self.losses += [float(r["loss"]) for r in rows if r.get("loss") is not None]
        last = rows[-1]
        self.tokens += sum(int(r.get("tokens") or 0) for r in rows)
        tokens = self.tokens
        step = int(last.get("step", 0))
        of = f"/{self.total_steps}" if self.total_steps else ""
        loss = last.get("loss")
        self.query_one("#run-metrics", Static).update(Text(
            f"step {step}{of} · loss {loss:.4f} · {tokens:,} tokens · {last.get('elapsed_s', 0):.1f} s"
            if loss is not None else f"step {step}{of}"))
        self.query_one("#run-progress", ProgressBar).update(progress=step)
        self.query_one("#run-loss", Sparkline).data = list(self.losses)
        self.query_one("#run-status", Static).update(Text("Running… (ctrl+g cancels)", style="bold"))

    def _run_finished(self, code: Optional[int], result: Optional[dict], run_dir: Optional[Path]) -> None:
        if self.closing:
            return
        self.proc = None
        self.running = False
        self.query_one("#cancel", Button).disabled = True
        result = result or {}
        status = result.get("status") or ("succeeded" if code == 0 else "failed")
        style = {"succeeded": "bold green", "interrupted": "bold yellow"}.get(status, "bold red")
        text = Text(f"Run {result.get('run_id', '')} {status}".replace("  ", " "), style=style)
        text.append(f" (exit {code})" if code is not None else "")
        if result.get("steps") is not None:
            text.append(f"\n{result.get('steps')} steps, eval loss "
                        f"{_before_after(result.get('eval_loss_before'), result.get('eval_loss_after'))}, "
                        f"probe loss {_before_after(result.get('forgetting_loss_before'), result.get('forgetting_loss_after'))}")
        if result.get("error"):
            text.append(f"\n{result['error']}", style="red")
        if run_dir is not None:
            text.append(f"\n{run_dir}", style="dim")
        self.query_one("#run-status", Static).update(text)
        self.notify(f"Run {status}", severity="information" if status == "succeeded" else "warning")
        self.action_refresh_runs()

    def on_unmount(self) -> None:
        """Do not leave a training process behind: interrupt it and give it a moment to record."""
        self.closing = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    # ------------------------------------------------------------------ runs tab

    def action_refresh_runs(self) -> None:
        """Reload the runs table from the run database."""
        from tuneplan.executor import store

        table = self.query_one("#runs-table", DataTable)
        status = self.query_one("#runs-status", Static)
        table.clear(columns=True)
        table.add_columns("run", "status", "method", "pred GiB", "meas GiB", "error",
                          "eval loss", "probe loss", "tok/s", "model")
        label = self.db or str(store.default_db_path())
        try:
            rows = store.list_runs(self.db)
        except store.StoreError as e:
            status.update(Text(str(e), style="yellow"))
            return
        for r in rows:
            err = r.get("memory_error")
            tps = r.get("tokens_per_second")
            table.add_row(
                r["run_id"], r["status"], METHOD_LABEL.get(r["method"], r["method"]),
                _gib(r.get("predicted_peak_bytes")), _gib(r.get("measured_peak_bytes")),
                "" if err is None else f"{err * 100:+.1f}%",
                _before_after(r.get("eval_loss_before"), r.get("eval_loss_after")),
                _before_after(r.get("forgetting_loss_before"), r.get("forgetting_loss_after")),
                "-" if tps is None else f"{tps:,.0f}", r["model"].rsplit("/", 1)[-1], key=r["run_id"])
        status.update(Text(f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {label} "
                           f"(F5 reloads; error = (predicted − measured) / measured)"))

    @on(Input.Submitted, "#sql")
    def _run_sql(self, event: Input.Submitted) -> None:
        from tuneplan.executor import store

        table = self.query_one("#sql-table", DataTable)
        status = self.query_one("#sql-status", Static)
        table.clear(columns=True)
        try:
            columns, rows = store.query(self.db, event.value)
        except store.StoreError as e:
            status.update(Text(str(e), style="bold red"))
            return
        table.add_columns(*columns)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        status.update(Text(f"{len(rows)} row{'s' if len(rows) != 1 else ''}", style="green"))
