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
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.lazy import Lazy
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
    TextArea,
)

from tuneplan.advisor import catalog, hardware
from tuneplan.advisor.engine import advise
from tuneplan.base.errors import InputError, Problem
from tuneplan.base.fileio import write_text_atomic
from tuneplan.advisor.inputs import Answers, build_inputs
from tuneplan.advisor.render import METHOD_LABEL, method_rows
from tuneplan.schemas import SCHEMA_ID, CPUHardware, DataSpec, GPUHardware, Plan

from .search import rank
from .words import tui_words

GIB = 1024**3
BAR_WIDTH = 24
DEBOUNCE_S = 0.08
"""Answers settle this long (no key for 80 ms) before the plan is recomputed, off the UI loop."""

HW_CUSTOM = "custom"
HW_CPU = "cpu"

# Which widget answers for each flag named in a Problem (advisor/inputs.py, catalog.py).
FIELD_FOR_FLAG = {
    "--model": "model", "--params": "model",
    "--gpu": "hw", "--cpu": "hw", "hardware": "hw", "--gpu-memory": "gpu-mem",
    "--gpus": "gpus", "--nodes": "nodes",
    "--domain": "domain", "--domain-label": "domain-label", "--forgetting": "forgetting",
    "--regime": "regime", "--seq-len": "seq-len", "--batch-size": "batch",
    "--dataset-tokens": "dataset-tokens", "--data": "data", "--eval-data": "eval-data",
    "--probe-data": "probe-data", "--needs-fresh-facts": "fresh-facts", "--calibrated": "calibrated",
    "--method": "method", "--lora-rank": "rank", "--learning-rate": "lr", "--max-steps": "max-steps",
    "--precision": "precision", "--optimizer": "optimizer", "--attention": "attention",
    "--gradient-checkpointing": "checkpointing", "--target-modules": "targets",
}

# Field ids -> the words shown to people in problem lists.
FIELD_LABEL = {
    "model": "model", "hw": "hardware", "gpu-mem": "card memory", "gpus": "GPU count",
    "nodes": "machines", "eval-data": "eval file", "probe-data": "probe file",
    "fresh-facts": "fresh facts", "calibrated": "calibration",
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
# Lines of the child's output that are libraries talking, not tuneplan: kept out of the view
# (they are still written to the run's full log file).
_NOISE = re.compile(
    r"site-packages/|\b[A-Z]\w*Warning\b|^\s*warnings\.warn\(|\d+(\.\d+)?\s*(it/s|s/it)\]"
    r"|\|[█▏▎▍▌▋▊▉ ]{3,}\||^\s*$|^`?torch_dtype`? is deprecated|Some weights of|You are using a model of type")
PHASES = {
    "loading": "Loading the model and data…",
    "eval-before": "Evaluating before training (eval and probe loss)…",
    "training": "Training",
    "eval-after": "Evaluating after training (eval and probe loss)…",
    "saving": "Saving…",
}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_prefix() -> list[str]:
    """The command that runs a plan file, before its arguments: ``tuneplan run``."""
    return [sys.executable, "-m", "tuneplan.advisor.cli", "run"]



def _gib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def _cell(value) -> Text:
    """One SQL result value as plain text, never markup (floats to 6 significant digits)."""
    if value is None:
        return Text("NULL", style="dim")
    return Text(f"{value:.6g}" if isinstance(value, float) else str(value))


def _before_after(before: Optional[float], after: Optional[float]) -> str:
    if before is None and after is None:
        return "-"
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return f"{fmt(before)}→{fmt(after)}"


def memory_bars(plan: Plan, width: int = BAR_WIDTH, narrow: bool = False) -> Text:
    """The three methods' peaks on ONE scale (the largest method or the card, whichever is
    bigger), names in a fixed column so the chosen marker never shifts a bar, and the usable
    line (the card less the headroom the plan keeps free) drawn as ┃ on every bar."""
    cap = plan.memory.device_capacity_bytes
    usable = plan.memory.usable_bytes
    rows = method_rows(plan)
    scale = max([cap] + [r["bytes"] for r in rows])
    u = min(width - 1, round(width * usable / scale))
    text = Text()
    text.append("Peak memory per device", style="bold")
    text.append(f" · usable {usable / GIB:.1f} of {cap / GIB:.1f} GiB (┃)\n")
    for r in rows:
        colour = "green" if r["fits"] else "red"
        text.append("▶ " if r["chosen"] else "  ", style="bold")
        text.append(f"{METHOD_LABEL[r['method']]:<8}", style="bold" if r["chosen"] else "")
        filled = round(width * r["bytes"] / scale)
        for i in range(width):
            if i == u:
                text.append("┃", style="bold yellow")
            else:
                text.append("█" if i < filled else "·", style=colour if i < filled else "dim")
        if narrow:  # 80 columns: the pane is half of it
            text.append(f" {r['bytes'] / GIB:6.1f}G ")
            text.append("✓" if r["fits"] else "✗", style=colour)
        else:
            text.append(f" {r['bytes'] / GIB:7.1f} GiB ")
            text.append(f"{'fits' if r['fits'] else 'too big':<7}", style=colour)
        text.append("\n")
    return text


class Later(Vertical):
    """A part of the app mounted just after the first paint (textual.lazy.Lazy); it tells the app
    when it is there, so the plan is recomputed with its fields."""

    def on_mount(self) -> None:
        app = self.app
        if isinstance(app, TunePlanApp):
            app._later_mounted(self.id or "")


class ModelInput(Input):
    """The model box: down moves into the catalog matches below it; enter takes the only match."""

    BINDINGS = [Binding("down", "app.model_list", "Matches")]


class SQLBox(TextArea):
    """Multi-line read-only SQL with history: ctrl+o (or F9) runs, ctrl+up/down walk history."""

    BINDINGS = [
        Binding("ctrl+o,f9", "app.run_sql", "Run query"),
        Binding("ctrl+up", "app.sql_history(-1)", "Older query"),
        Binding("ctrl+down", "app.sql_history(1)", "Newer query"),
    ]


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
            ("ctrl+o / F9 (SQL)", "run the read-only query (enter adds a line)"),
            ("ctrl+up / down", "older / newer query from the SQL history"),
            ("ctrl+p", "command palette: save, run, help, tabs"),
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
        # Focus moves are priority bindings, handled by the app as each key is dequeued: keys
        # typed right after Tab then go to the field Tab moved to, however fast they arrive.
        Binding("tab", "app.focus_next", "Next", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", "Previous", show=False, priority=True),
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
                 detect: Callable[[], Union[GPUHardware, CPUHardware]] = hardware.detect_hardware,
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
        self.hidden_lines = 0
        self.full_log: Optional[Path] = None
        self.recompute_count = 0
        self.plan_generation = 0
        self.pending = True
        self._generation = 0
        self._timer = None
        self._in_flight = False
        self._again = False
        self._later: set[str] = set()
        self._choice_cache: dict[str, Optional[str]] = {}
        self.sql_history: list[str] = []
        self._sql_pos = 0
        self.runs_loaded = False
        self.phase = ""
        self.cancel_requested = False
        self.step_times: list[tuple[float, int]] = []

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
                                Input(custom, id="gpu-mem",
                                      placeholder="e.g. 24", compact=True))
                        yield f("How many GPUs (per machine)?",
                                Input(count, id="gpus", placeholder="1", compact=True))
                        yield f("How many machines (nodes)?",
                                Input("", id="nodes", placeholder="1", compact=True))
                        yield Static("Model", classes="group")
                        yield f("Which model? (catalog name, local folder, or a size like 7B)",
                                ModelInput(id="model", placeholder="type to search, e.g. llama-3.1-8b",
                                      compact=True))
                        yield OptionList(id="model-list", compact=True)  # filled as you type
                        # Below the first screen: mounted just after the first paint (a fast start).
                        with Lazy(Later(id="task-body")):
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
                            yield f("Training data file (JSONL/JSON/CSV/Parquet; needed to run)",
                                    Input(id="data", placeholder="path/to/train.jsonl", compact=True),
                                    "read as you type: sequence length, dataset size and steps come from it")
                            yield f("Eval file (optional; else 10% of the training rows)",
                                    Input(id="eval-data", placeholder="path/to/eval.jsonl", compact=True))
                            yield f("Forgetting probe text (optional; else the built-in probe)",
                                    Input(id="probe-data", placeholder="path/to/general.txt", compact=True))
                            yield f("Sequence length (tokens)",
                                    Input("", id="seq-len", placeholder="from the data, else 2048",
                                          compact=True))
                            yield f("Batch size (sequences per step)",
                                    Input("", id="batch", placeholder="8", compact=True))
                            yield f("Dataset size in tokens (optional)",
                                    Input(id="dataset-tokens", placeholder="from the data, e.g. 5e7",
                                          compact=True))
                            yield f("Must it learn facts that change or must be cited?",
                                    Select([("no", "no"), ("yes: retrieval comes first", "yes")],
                                           id="fresh-facts", value="no", allow_blank=False, compact=True))
                            yield f("Apply calibration from measured runs?",
                                    Select([("no", "no"), ("yes (tuneplan calibrate)", "yes")],
                                           id="calibrated", value="no", allow_blank=False, compact=True))
                            with Collapsible(title="Pins (optional: fix choices yourself)", id="pins"):
                                yield f("Method", Select([("full fine-tuning", "full"), ("LoRA", "lora"),
                                                          ("QLoRA", "qlora")], id="method", **auto))
                                yield f("LoRA rank", Input(id="rank",
                                                           placeholder="advisor decides", compact=True))
                                yield f("Learning rate", Input(id="lr",
                                                               placeholder="advisor decides", compact=True))
                                yield f("Max steps", Input(id="max-steps",
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
                        yield Static("", id="rec-ways")
                        yield Static("", id="rec-details")
                        yield Static("", id="rec-bars")
                        yield Static("", id="rec-rules")
                        yield Static("", id="rec-warnings")
            with TabPane("Run", id="run"):
                with Lazy(Later(id="run-body")):
                    yield Static("No run yet: ctrl+s saves the plan, ctrl+r runs it.", id="run-status")
                    yield ProgressBar(id="run-progress", show_eta=False)
                    yield Static("", id="run-metrics")
                    yield Static("", id="run-loss-note")
                    yield Sparkline([], id="run-loss")
                    yield Button("Cancel run (ctrl+g)", id="cancel", variant="error", disabled=True)
                    yield RichLog(id="run-log", max_lines=500, wrap=True)
            with TabPane("Runs", id="runs"):
                with Lazy(Later(id="runs-body")):
                    yield Static("", id="runs-status")
                    yield DataTable(id="runs-table", zebra_stripes=True, cursor_type="row")
                    yield Static("Read-only SQL (ctrl+o or F9 runs; ctrl+up/down: history)",
                                 classes="q")
                    yield SQLBox("SELECT * FROM method_summary", id="sql", language=None,
                                 soft_wrap=True, show_line_numbers=False)
                    yield Static("", id="sql-status")
                    yield DataTable(id="sql-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        """Focus the first question and paint; the plan follows off the UI loop, and the run
        database is only opened when the Runs tab is first shown (first paint stays fast)."""
        self._sync_hw_visibility()
        self.query_one("#model-list", OptionList).display = False
        self.query_one("#hw", Select).focus()
        self._kick()

    # ------------------------------------------------------------------ answers

    def _text(self, wid: str) -> str:
        try:
            return self.query_one(f"#{wid}", Input).value.strip()
        except NoMatches:  # a lazily mounted field (the pins) before it is mounted: unanswered
            return ""

    def _choice(self, wid: str) -> Optional[str]:
        try:
            value = self.query_one(f"#{wid}", Select).value
        except NoMatches:
            return None
        return None if value == Select.NULL else str(value)

    def _number(self, wid: str, kind: type, problems: list[Problem]):
        """The field's number, or None when empty; text that is not one is a problem shown at
        the field (never silently reinterpreted)."""
        text = self._text(wid)
        if not text:
            return None
        flag = next(k for k, v in FIELD_FOR_FLAG.items() if v == wid)
        try:
            value = float(text.replace("_", ""))
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            problems.append(Problem(flag, f"{text!r} is not {what}", f"type {what}, e.g. "
                                    + ("8" if kind is int else "24 or 5e7")))
            return None
        if kind is int:
            if value != int(value):
                problems.append(Problem(flag, f"{text!r} is not a whole number", f"type {int(value) or 1}"))
                return None
            return int(value)
        return value

    def collect(self) -> tuple[Answers, list[Problem]]:
        """The fields as Answers, plus problems found while reading them (non-numbers, files)."""
        problems: list[Problem] = []
        hw = self._choice("hw")
        model = self._text("model")
        is_params = bool(model) and _PARAMS.fullmatch(model) is not None
        gpus = self._number("gpus", int, problems)
        nodes = self._number("nodes", int, problems)
        mem = self._number("gpu-mem", float, problems) if hw == HW_CUSTOM else None
        if hw == HW_CUSTOM and mem is None and not any(p.where == "--gpu-memory" for p in problems):
            problems.append(Problem("--gpu-memory", "no card memory given", "type one card's GiB, e.g. 24"))
        tokens = self._number("dataset-tokens", float, problems)
        ckpt = self._choice("checkpointing")
        targets = [t.strip() for t in self._text("targets").split(",") if t.strip()] or None
        files = {}
        for wid, flag in (("data", "--data"), ("eval-data", "--eval-data"), ("probe-data", "--probe-data")):
            path = self._text(wid)
            if path and not Path(path).expanduser().is_file():
                problems.append(Problem(flag, f"no file {path!r}", "give the path of an existing file"))
                path = ""
            files[wid] = str(Path(path).expanduser()) if path else None
        answers = Answers(
            model=None if is_params else (model or None), params=model if is_params else None,
            gpu=hw if hw not in (HW_CUSTOM, HW_CPU) else None, gpu_memory=mem, cpu=hw == HW_CPU,
            gpus=gpus if gpus is not None else 1, nodes=nodes if nodes is not None else 1,
            task={"domain_distance": self._choice("domain"), "forgetting_tolerance": self._choice("forgetting"),
                  "domain_label": self._choice("domain-label"), "regime": self._choice("regime"),
                  "seq_len": self._number("seq-len", int, problems),
                  "batch_size": self._number("batch", int, problems),
                  "dataset_tokens": None if tokens is None else int(tokens),
                  "needs_fresh_facts": True if self._choice("fresh-facts") == "yes" else None},
            pins={"method": self._choice("method"), "lora_rank": self._number("rank", int, problems),
                  "learning_rate": self._number("lr", float, problems),
                  "max_steps": self._number("max-steps", int, problems), "target_modules": targets,
                  "precision": self._choice("precision"), "optimizer": self._choice("optimizer"),
                  "attention": self._choice("attention"),
                  "gradient_checkpointing": None if ckpt is None else ckpt == "on"},
            data=files["data"], eval_data=files["eval-data"],
        )
        return answers, problems

    def _advise(self, answers: Answers, problems: list[Problem]) -> tuple[Optional[Plan], list[Problem]]:
        """Validate and advise (pure; runs in a worker thread). Returns (plan or None, problems)."""
        self.recompute_count += 1
        plan = None
        try:
            inputs = build_inputs(answers)
            if self._choice_cache.get("calibrated") == "yes":
                from tuneplan.advisor.calibration import load_factors

                inputs = inputs.model_copy(update={"calibrated": True})
                calibration = load_factors(self.db, inputs)
            else:
                calibration = None
        except InputError as e:
            problems = problems + [Problem(p.where, "not answered yet", "choose one") if
                                   p.message == "Field required" else p for p in e.problems]
        else:
            if not problems:
                try:
                    plan = advise(inputs, calibration=calibration)
                except Exception as e:  # an advisor bug must not take the questionnaire down
                    problems.append(Problem("advisor", f"{type(e).__name__}: {e}"))
        return plan, problems

    def recompute(self) -> None:
        """Validate and advise now, on the UI loop (save and run need the current answers)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._generation += 1
        self._choice_cache = {"calibrated": self._choice("calibrated")}
        answers, problems = self.collect()
        plan, problems = self._advise(answers, problems)
        self._apply(self._generation, plan, problems)

    def schedule_recompute(self) -> None:
        """Debounce: restart the timer on every change; the plan follows the last one."""
        self._generation += 1
        self.pending = True
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._kick)

    def _kick(self) -> None:
        """Read the fields (cheap, on the UI loop) and advise in a worker thread. One advisor
        call at a time: changes made while it runs are coalesced into one call after it."""
        self._timer = None
        if self._in_flight:
            self._again = True
            return
        self._generation += 1
        self.pending = True
        self._choice_cache = {"calibrated": self._choice("calibrated")}
        answers, problems = self.collect()
        self._in_flight = True
        self._again = False
        self._advise_worker(self._generation, answers, problems)

    @work(thread=True, exclusive=True, group="advise")
    def _advise_worker(self, generation: int, answers: Answers, problems: list[Problem]) -> None:
        try:
            plan, problems = self._advise(answers, problems)
        except BaseException:
            plan = None
        try:
            self.call_from_thread(self._worker_done, generation, plan, problems)
        except RuntimeError:  # the app has gone
            pass

    def _worker_done(self, generation: int, plan: Optional[Plan], problems: list[Problem]) -> None:
        self._in_flight = False
        if self._again and self._timer is None:
            self._kick()  # the answers changed while advising: once more, with the latest
        self._apply(generation, plan, problems)

    def _apply(self, generation: int, plan: Optional[Plan], problems: list[Problem]) -> None:
        """Show a result unless newer answers have been given since it was started."""
        if generation != self._generation or self.closing:
            return
        if plan is not None:
            self.plan = plan
        self.problems = problems
        self.pending = False
        self.plan_generation += 1
        self._show_problems()
        self._show_plan()

    def _visible(self, wid: str) -> bool:
        """Whether to show a field's problem now: always, except for unanswered, untouched
        questions before the first save (a fresh form is not a wall of red)."""
        if wid == "model" and self._searching():
            return False
        if self.show_all_errors or wid in self.touched:
            return True
        try:
            widget = self.query_one(f"#{wid}")
        except NoMatches:
            return False
        value = widget.value
        return not (value == Select.NULL or value == "")

    def on_resize(self) -> None:
        if self.plan is not None:
            self.call_after_refresh(self._show_plan)

    LATER = ("task-body", "run-body", "runs-body")

    @property
    def fully_mounted(self) -> bool:
        """Every lazily mounted part is in the DOM (a fraction of a second after the first paint)."""
        return self._later >= set(self.LATER)

    def _later_mounted(self, part: str) -> None:
        self._later.add(part)
        if part == "task-body":
            self.schedule_recompute()

    def _searching(self) -> bool:
        """The model box holds a search in progress (matches listed below it)."""
        return bool(self.query_one("#model-list", OptionList).display)

    def _show_problems(self) -> None:
        by_field: dict[str, list[Problem]] = {}
        for p in self.problems:
            by_field.setdefault(FIELD_FOR_FLAG.get(p.where, ""), []).append(p)
        for wid in FIELD_LABEL:
            found = by_field.get(wid, [])
            shown = found and self._visible(wid)
            try:
                err = self.query_one(f"#err-{wid}", Static)
            except NoMatches:
                continue
            err.update(Text("\n".join(f"✗ {tui_words(p.message)}" + (f" — {tui_words(p.fix)}" if p.fix else "")
                                      for p in found)) if shown else "")
            err.display = bool(shown)
            err.remove_class("hint")
            self.query_one(f"#{wid}").set_class(bool(shown), "bad")
        if self._searching() and not self.show_all_errors:
            n = self.query_one("#model-list", OptionList).option_count
            hint = self.query_one("#err-model", Static)
            hint.update(Text(f"{n} match{'es' if n != 1 else ''}: ↓ to choose, enter takes "
                             f"{'it' if n == 1 else 'the top one'}", style="italic"))
            hint.display = True
            hint.set_class(True, "hint")

    def _problem_lines(self) -> Text:
        text = Text()
        for p in self.problems:
            wid = FIELD_FOR_FLAG.get(p.where)
            text.append(f"\n • {FIELD_LABEL.get(wid, p.where)}: ", style="bold")
            text.append(tui_words(p.message))
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

        room = self.query_one("#recommendation").content_region.width or 80
        narrow = room < 30 + BAR_WIDTH
        width = max(6, min(BAR_WIDTH, room - (22 if narrow else 33)))  # less a scrollbar
        self.query_one("#rec-bars", Static).update(memory_bars(plan, width, narrow))

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
        ways = Text()
        if plan.ways_out:  # an infeasible plan leads with what would make it fit
            ways.append("Nothing fits. Ways out:", style="bold red")
            for w in plan.ways_out:
                ways.append(f"\n→ {w}")
        ways_box = self.query_one("#rec-ways", Static)
        ways_box.update(ways)
        ways_box.display = bool(plan.ways_out)
        for a in plan.alternatives:
            warn.append(f"\n{METHOD_LABEL[a.method]}: {a.reason}", style="dim")
        self.query_one("#rec-warnings", Static).update(warn)

    # ------------------------------------------------------------------ events

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        wid = event.input.id
        if wid == "model":
            self._filter_models(event.value)
        if event.input.has_focus:
            self.touched.add(wid)
        self.schedule_recompute()

    @on(Input.Submitted, "#model")
    def _model_submitted(self, event: Input.Submitted) -> None:
        """Enter in the model box takes the only match (or the top one), then moves on."""
        box = self.query_one("#model-list", OptionList)
        if box.display and box.option_count >= 1:
            option = box.get_option_at_index(box.highlighted or 0)
            self._pick_model(str(option.id))
        else:
            self.query_one("#domain", Select).focus()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.has_focus or event.select.expanded:
            self.touched.add(event.select.id)
        if event.select.id == "hw":
            self._sync_hw_visibility()
        self.schedule_recompute()

    @on(OptionList.OptionSelected, "#model-list")
    def _model_picked(self, event: OptionList.OptionSelected) -> None:
        self._pick_model(str(event.option.id))

    def _pick_model(self, name: str) -> None:
        model = self.query_one("#model", Input)
        self.touched.add("model")
        model.value = name
        model.cursor_position = len(model.value)
        self.query_one("#model-list", OptionList).display = False
        self.query_one("#domain", Select).focus()

    def _sync_hw_visibility(self) -> None:
        custom = self._choice("hw") == HW_CUSTOM
        self.query_one("#gpu-mem", Input).parent.display = custom

    @staticmethod
    def _model_matches(text: str) -> list:
        from textual.widgets.option_list import Option

        return [Option(name, id=name) for name in rank(text, (m.name for m in catalog.list_models()))]

    def _filter_models(self, text: str) -> None:
        box = self.query_one("#model-list", OptionList)
        names = {m.name.lower() for m in catalog.list_models()}
        text = text.strip()
        hide = (text.lower() in names or _PARAMS.fullmatch(text) is not None
                or text.startswith((".", "/", "~")))
        box.clear_options()
        if not hide:
            box.add_options(self._model_matches(text))
        box.display = not hide and box.option_count > 0 and bool(text)
        if box.display:
            box.highlighted = 0

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
        self.query_one({"plan": "#hw", "run": "#run-log", "runs": "#runs-table"}[tab]).focus()

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        """The run database is opened the first time the Runs tab is shown, not at start-up."""
        if event.pane.id == "runs" and not self.runs_loaded:
            self.action_refresh_runs()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> Optional[bool]:
        """The footer shows the keys that apply here: cancel only while a run goes, run only
        when none is going, refresh on the Runs tab (False hides a key from the footer)."""
        try:
            tab = self.query_one("#tabs", TabbedContent).active
        except Exception:
            return True
        if action == "cancel_run":
            return self.running
        if action == "refresh_runs":
            return tab == "runs"
        if action == "run":
            return not self.running
        return True

    def get_system_commands(self, screen):
        """App commands in the command palette (ctrl+p), next to Textual's own."""
        yield SystemCommand("Save plan", "Write the plan to the --out file (ctrl+s)", self.action_save)
        yield SystemCommand("Run plan", "Save, then train in a subprocess and follow it (ctrl+r)",
                            self.action_run)
        yield SystemCommand("Cancel run", "Stop the run; it is recorded as interrupted (ctrl+g)",
                            self.action_cancel_run)
        yield SystemCommand("Help: keys", "Every key and what it does (F1)", self.action_help)
        yield SystemCommand("Show Plan tab", "Questions and the live plan (F2)", lambda: self.action_tab("plan"))
        yield SystemCommand("Show Run tab", "The current run (F3)", lambda: self.action_tab("run"))
        yield SystemCommand("Show Runs tab", "Recorded runs and the SQL box (F4)", lambda: self.action_tab("runs"))
        yield SystemCommand("Reload runs", "Read the run database again (F5)", self.action_refresh_runs)
        yield from super().get_system_commands(screen)

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
            fixes = "; ".join(f"{FIELD_LABEL.get(FIELD_FOR_FLAG.get(p.where), p.where)}: {tui_words(p.message)}"
                              for p in self.problems[:4])
            self.notify(f"Not saved. Fix first — {fixes}", title="Plan is not valid",
                        severity="error", timeout=8, markup=False)
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
            self.notify(f"Could not write {self.out}: {e}", severity="error", timeout=8, markup=False)
            return False
        if not plan.feasible:
            self.notify(f"Saved to {self.out.resolve()}, marked infeasible: nothing fits this "
                        "hardware. The ways out are at the top of the plan.",
                        title="Infeasible plan saved", severity="warning", timeout=8, markup=False)
            return True
        self.notify(f"Plan saved to {self.out.resolve()}", title=f"{METHOD_LABEL[plan.method]} plan saved",
                    markup=False)
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
        self.cancel_requested = False
        self.hidden_lines = 0
        self.step_times = []
        self.refresh_bindings()
        self.losses = []
        self.tokens = 0
        self.total_steps = None
        self.query_one("#run-log", RichLog).clear()
        self.query_one("#run-loss", Sparkline).data = []
        self.query_one("#run-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#run-metrics", Static).update("")
        self._draw_losses()
        self._set_phase("loading")
        self.query_one("#run-log", RichLog).write(Text("$ tuneplan " + " ".join(cmd[3:]), style="dim"))
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
        self.cancel_requested = True
        self.query_one("#run-status", Static).update(Text(
            "Cancelling… the run stops at the next step and is recorded as interrupted.", style="bold yellow"))
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
        env = dict(os.environ, PYTHONUNBUFFERED="1", TRANSFORMERS_VERBOSITY="error",
                   TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
        self.full_log = output / f"tui-run-{time.strftime('%Y%m%d-%H%M%S')}.log"
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
        """Copy the child's output to the full log file and into the view (thread)."""
        try:
            full = open(self.full_log, "w", encoding="utf-8")
        except OSError:
            full = None
        try:
            for line in stream:
                if full is not None:
                    full.write(line)
                    full.flush()
                try:
                    self.call_from_thread(self._log_line, line.rstrip("\n"))
                except RuntimeError:  # the app has gone
                    return
        finally:
            if full is not None:
                full.close()

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
        if _NOISE.search(line):
            self.hidden_lines += 1
            return
        if re.match(r"step \d+/\d+\s", line):  # the progress lines: the bar and metrics show them
            return
        self.query_one("#run-log", RichLog).write(Text(line))  # data, never markup
        m = _TOTAL_STEPS.search(line)
        if line.startswith("run ") and m and self.total_steps is None:
            self.total_steps = int(m.group(1))
            self.query_one("#run-progress", ProgressBar).update(total=self.total_steps)
            self._set_phase("eval-before")
        elif line.startswith("evaluating before"):
            self._set_phase("eval-before")
        elif line.startswith("evaluating after"):
            self._set_phase("eval-after")
        elif line.startswith("saving "):
            self._set_phase("saving")

    def _set_phase(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        if self.cancel_requested:
            return
        words = PHASES[phase] + (f" {detail}" if detail else "")
        self.query_one("#run-status", Static).update(Text(words + "   (ctrl+g cancels)", style="bold"))

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
        now = time.monotonic()
        self.step_times.append((now, step))
        eta = ""
        first_t, first_step = self.step_times[0]
        if self.total_steps and step > first_step and now > first_t:
            rate = (step - first_step) / (now - first_t)
            left = max(0.0, (self.total_steps - step) / rate)
            eta = f"step {step}/{self.total_steps}, about {_duration(left)} left"
        else:
            eta = f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")
        self._set_phase("training", "— " + eta)
        if self.total_steps and step >= self.total_steps:
            self._set_phase("eval-after")
        self._draw_losses()

    def _draw_losses(self) -> None:
        """One point is a number, not a bar; from two the curve is drawn one column per step
        (up to the width), so a short run is not stretched into a solid block."""
        spark = self.query_one("#run-loss", Sparkline)
        note = self.query_one("#run-loss-note", Static)
        losses = self.losses
        if len(losses) < 2:
            spark.display = False
            note.update(Text(f"loss {losses[0]:.4f} at the first step; the curve starts at the second"
                             if losses else ""))
            return
        spark.display = True
        avail = max(8, (self.query_one("#run-body").size.width or 80) - 4)
        shown = losses[-avail:]
        spark.styles.width = len(shown)
        spark.data = list(shown)
        note.update(Text(f"loss {shown[0]:.4f} → {shown[-1]:.4f} over {len(losses)} steps "
                         f"(min {min(losses):.4f})", style="dim"))

    def _run_finished(self, code: Optional[int], result: Optional[dict], run_dir: Optional[Path]) -> None:
        if self.closing:
            return
        self.proc = None
        self.running = False
        self.query_one("#cancel", Button).disabled = True
        result = result or {}
        status = result.get("status") or ("succeeded" if code == 0 else "failed")
        cancelled = self.cancel_requested and status in ("interrupted", "failed")
        style = {"succeeded": "bold green", "interrupted": "bold yellow"}.get(status, "bold red")
        if cancelled:
            text = Text(f"Run {result.get('run_id', '')} cancelled".replace("  ", " "), style="bold yellow")
            text.append(" at your request; recorded as interrupted, nothing lost")
        else:
            text = Text(f"Run {result.get('run_id', '')} {status}".replace("  ", " "), style=style)
            text.append(f" (exit {code})" if code is not None else "")
        if result.get("steps") is not None:
            text.append(f"\n{result.get('steps')} steps, eval loss "
                        f"{_before_after(result.get('eval_loss_before'), result.get('eval_loss_after'))}, "
                        f"probe loss {_before_after(result.get('forgetting_loss_before'), result.get('forgetting_loss_after'))}")
        if result.get("error") and not cancelled:
            text.append(f"\n{result['error']}", style="red")
        if self.hidden_lines:
            text.append(f"\n{self.hidden_lines} lines of library output kept out of view; full log: "
                        f"{self.full_log}", style="dim")
        if run_dir is not None:
            text.append(f"\n{run_dir}", style="dim")
        self.query_one("#run-status", Static).update(text)
        self.cancel_requested = False
        self.refresh_bindings()
        self.notify("Run cancelled" if cancelled else f"Run {status}",
                    severity="information" if status == "succeeded" else "warning")
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
        self.runs_loaded = True
        try:
            rows = store.list_runs(self.db)
        except store.NoDatabase:
            status.update(Text(f"No runs recorded yet in {label}: ctrl+r on the Plan tab runs one.",
                               style="yellow"))
            return
        except store.StoreError as e:
            status.update(Text(f"Could not read the run database: {e}", style="yellow"))
            return
        for r in rows:
            err = r.get("memory_error")
            tps = r.get("tokens_per_second")
            cells = (
                r["run_id"], r["status"], METHOD_LABEL.get(r["method"], r["method"]),
                _gib(r.get("predicted_peak_bytes")), _gib(r.get("measured_peak_bytes")),
                "" if err is None else f"{err * 100:+.1f}%",
                _before_after(r.get("eval_loss_before"), r.get("eval_loss_after")),
                _before_after(r.get("forgetting_loss_before"), r.get("forgetting_loss_after")),
                "-" if tps is None else f"{tps:,.0f}", str(r["model"]).rsplit("/", 1)[-1])
            table.add_row(*(Text(str(c)) for c in cells), key=r["run_id"])  # data, never markup
        status.update(Text(f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {label} "
                           f"(F5 reloads; error = (predicted − measured) / measured)"))

    def action_run_sql(self) -> None:
        """Run the SQL box's statement through the sealed read-only connection."""
        box = self.query_one("#sql", SQLBox)
        sql = box.text.strip()
        if not sql:
            return
        if not self.sql_history or self.sql_history[-1] != sql:
            self.sql_history.append(sql)
        self._sql_pos = len(self.sql_history)
        table = self.query_one("#sql-table", DataTable)
        status = self.query_one("#sql-status", Static)
        table.clear(columns=True)
        try:
            columns, rows, truncated = sql_query(self.db, sql)
        except Exception as e:  # refused, bad SQL, no database: said in words, never raised
            status.update(Text(_store_error_words(e), style="bold red"))
            return
        table.add_columns(*(Text(str(c)) for c in columns))
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        more = " (the first ones; more exist — add a LIMIT or use `tuneplan sql --no-limit`)" if truncated else ""
        status.update(Text(f"{len(rows)} row{'s' if len(rows) != 1 else ''}{more}", style="green"))

    def action_sql_history(self, delta: int) -> None:
        """Walk the SQL history; past the newest entry the box is empty for a new query."""
        if not self.sql_history:
            return
        self._sql_pos = max(0, min(len(self.sql_history), self._sql_pos + delta))
        box = self.query_one("#sql", SQLBox)
        box.text = self.sql_history[self._sql_pos] if self._sql_pos < len(self.sql_history) else ""
        box.move_cursor(box.document.end)


def sql_query(db: Optional[str], sql: str) -> tuple[list[str], list[tuple], bool]:
    """The one call the SQL box makes: `tuneplan sql`'s sealed connection (executor/sqlsafe.py:
    read-only, the statement checked by DuckDB's parser, external access limited to the same
    default read paths, the same row limit). Returns (columns, rows, truncated)."""
    from tuneplan.executor import sqlsafe

    return sqlsafe.fetch(sql, db, read_paths=sqlsafe.default_read_paths(), limit=sqlsafe.DEFAULT_ROW_LIMIT)


def _store_error_words(e: Exception) -> str:
    from tuneplan.executor import store

    if isinstance(e, store.NoDatabase):
        return "No run database yet: nothing to query until a run is recorded (ctrl+r on the Plan tab)."
    if isinstance(e, store.StoreError):
        return tui_words(str(e))
    return f"{type(e).__name__}: {e}"
