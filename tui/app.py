"""The `tuneplan tui` app: the components wired together.

Plan tab: the questions (tui/questions.py) beside the live plan (tui/planview.py); Run tab: a
run followed as it goes (tui/runpane.py); Runs tab: past runs and the SQL box
(tui/runspane.py); F1: the keys (tui/help.py); what the app says: tui/messages.py.

Start-up: the form is painted first, with nothing from the advisor; just after the first paint a
worker imports the advisor (tui/advising.py: schemas, catalog, engine), probes the hardware, and
the form is completed (the card list, the task questions whose choices come from the schema).
Then every answer change is debounced and re-advised off the UI loop (the same `build_inputs` and
`advise` as `tuneplan advise`), so the plan pane follows the last change. The run database is
opened only when the Runs tab is first shown; torch is never imported (training runs in a child).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Union

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.lazy import Lazy
from textual.widgets import Button, Footer, Input, OptionList, Select, Static, TabbedContent, TabPane

from tuneplan.base.errors import Problem
from tuneplan.base.fileio import write_text_atomic

from . import messages
from .help import HelpScreen
from .planview import PlanView
from .fields import FIELD_FOR_FLAG
from .questions import Questions
from .runpane import RunPane
from .runspane import RunsPane, SQLBox

DEBOUNCE_S = 0.08
"""Answers settle this long (no key for 80 ms) before the plan is recomputed, off the UI loop."""


def run_prefix() -> list[str]:
    """The command that runs a plan file, before its arguments: ``tuneplan run``."""
    return [sys.executable, "-m", "tuneplan.cli", "run"]


class TunePlanApp(App[int]):
    """Interactive planner: answer, watch the plan change, save it, run it, compare runs."""

    CSS_PATH = ["questions.tcss", "app.tcss", "planview.tcss", "runpane.tcss", "runspane.tcss", "help.tcss"]
    """Each component's styles beside its module; the questions' before the shared focus style
    (an equal-specificity rule later in the list wins: focus over a field marked bad)."""
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
    LATER = ("advisor", "task-body", "run-body", "runs-body")
    """The parts that arrive after the first paint: the advisor and the task questions, the Run
    and Runs tabs' bodies (textual.lazy.Lazy)."""

    def __init__(
        self,
        out: Union[str, Path] = "plan.json",
        db: Optional[str] = None,
        detect: Optional[Callable[[], object]] = None,
        command: Callable[[], list[str]] = run_prefix,
    ) -> None:
        """out: where ctrl+s writes; db: run database (None: the store's default); detect: the
        hardware probe (None: the advisor's hardware.detect_hardware, run after the first paint);
        command: the `tuneplan run` prefix (tests swap in a fake)."""
        super().__init__()
        self.out = Path(out).expanduser()
        self.db = db
        self.command = command
        self.detect = detect
        self.bridge: Optional[ModuleType] = None
        """tui.advising once loaded."""
        self.detected = None
        self.plan = None
        self.problems: list[Problem] = []
        self.closing = False
        self.recompute_count = 0
        self.plan_generation = 0
        self.pending = True
        self._generation = 0
        self._timer = None
        self._in_flight = False
        self._again = False
        self._later: set[str] = set()
        self._calibrated = False
        self._focus_when_mounted: Optional[str] = None
        self.distance_evidence = None
        """The measured domain distance (tuneplan.schemas.DistanceEvidence) of "measure it from
        my data", attached to the plan while the model and data answered are the measured ones."""
        self.measuring = False
        self.measure_options: dict = {}
        """Measurement options over `tuneplan measure`'s defaults (tests make them small)."""

    # ------------------------------------------------------------------ parts

    @property
    def questions(self) -> Questions:
        return self.query_one("#questions", Questions)

    @property
    def plan_view(self) -> PlanView:
        return self.query_one("#recommendation", PlanView)

    @property
    def run_pane(self) -> RunPane:
        return self.query_one("#run-body", RunPane)

    @property
    def runs_pane(self) -> RunsPane:
        return self.query_one("#runs-body", RunsPane)

    def _run_going(self) -> bool:
        try:
            return self.run_pane.running
        except NoMatches:
            return False

    def compose(self) -> ComposeResult:
        with TabbedContent(id="tabs", initial="plan"):
            with TabPane("Plan", id="plan"):
                with Horizontal(id="plan-body"):
                    yield Questions(id="questions")
                    yield PlanView(id="recommendation")
            with TabPane("Run", id="run"):
                yield Lazy(RunPane(id="run-body"))
            with TabPane("Runs", id="runs"):
                yield Lazy(RunsPane(self.db, id="runs-body"))
        yield Footer()

    def on_mount(self) -> None:
        """Focus the first question and paint; the advisor loads just after the first paint."""
        self.query_one("#hw", Select).focus()
        self.call_after_refresh(self._load_advisor)

    @work(thread=True, exclusive=True, group="load")
    def _load_advisor(self) -> None:
        """Import the advisor and probe the hardware off the UI loop, then complete the form."""
        from . import advising

        detected = advising.detect(self.detect)
        try:
            self.call_from_thread(self._advisor_loaded, advising, detected)
        except RuntimeError:  # the app has gone
            pass

    async def _advisor_loaded(self, bridge: ModuleType, detected) -> None:
        self.bridge = bridge
        self.detected = detected
        self._later.add("advisor")
        await self.questions.load(bridge, detected)
        self._later.add("task-body")
        self.schedule_recompute()

    @property
    def fully_mounted(self) -> bool:
        """Every part that arrives after the first paint is there (a fraction of a second later)."""
        return self._later >= set(self.LATER)

    @on(messages.PartMounted)
    def _part_mounted(self, event: messages.PartMounted) -> None:
        self._later.add(event.part)
        tabs = self.query_one("#tabs", TabbedContent)
        if event.part == "runs-body" and tabs.active == "runs":
            self._load_runs_once()
        tab = self._focus_when_mounted
        if tab is not None and tabs.active == tab:
            try:
                self.query_one(self.FIRST_CONTROL[tab]).focus()
                self._focus_when_mounted = None
            except NoMatches:
                pass

    # ------------------------------------------------------------------ the live plan

    def _advise(self, answers, problems: list[Problem]):
        """Validate and advise (pure; runs in a worker thread). Returns (plan or None, problems)."""
        self.recompute_count += 1
        assert self.bridge is not None
        plan, problems = self.bridge.advise_answers(answers, problems, self._calibrated, self.db)
        return self.bridge.with_distance(plan, self.distance_evidence, answers), problems

    def recompute(self) -> None:
        """Validate and advise now, on the UI loop (save and run need the current answers)."""
        if self.bridge is None:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._generation += 1
        self._calibrated = self.questions.choice("calibrated") == "yes"
        answers, problems = self.questions.collect()
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
        if self.bridge is None or self.closing:  # not loaded yet: _advisor_loaded schedules one
            return
        try:
            questions = self.questions
        except NoMatches:  # shutting down: the form has gone
            return
        if self._in_flight:
            self._again = True
            return
        self._generation += 1
        self.pending = True
        self._calibrated = questions.choice("calibrated") == "yes"
        answers, problems = questions.collect()
        self._in_flight = True
        self._again = False
        self._advise_worker(self._generation, answers, problems)

    @work(thread=True, exclusive=True, group="advise")
    def _advise_worker(self, generation: int, answers, problems: list[Problem]) -> None:
        try:
            plan, problems = self._advise(answers, problems)
        except BaseException:
            plan = None
        try:
            self.call_from_thread(self._worker_done, generation, plan, problems)
        except RuntimeError:  # the app has gone
            pass

    def _worker_done(self, generation: int, plan, problems: list[Problem]) -> None:
        self._in_flight = False
        if self._again and self._timer is None:
            self._kick()  # the answers changed while advising: once more, with the latest
        self._apply(generation, plan, problems)

    def _apply(self, generation: int, plan, problems: list[Problem]) -> None:
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

    def _show_problems(self) -> None:
        self.questions.show_problems(self.problems)

    def _show_plan(self) -> None:
        self.plan_view.show(self.plan, self.problems, self.questions.visible, FIELD_FOR_FLAG.get)

    def on_resize(self) -> None:
        if self.plan is not None:
            self.call_after_refresh(self._show_plan)

    @on(Input.Changed)
    @on(Select.Changed)
    def _answer_changed(self) -> None:
        self.schedule_recompute()

    # ------------------------------------------------------------------ measured distance

    @on(Button.Pressed, "#measure-domain")
    def action_measure_distance(self) -> None:
        """Measure the domain distance of the data file on the chosen model, in a worker thread
        (it imports torch and loads the model: the form stays live meanwhile)."""
        if self.bridge is None or self.measuring:
            return
        q = self.questions
        data, model = q.text("data"), q.text("model")
        say = self.query_one("#domain-evidence", Static)
        if not model:
            say.update("Choose the model first: the distance is measured on it.")
            return
        if not data or not Path(data).expanduser().is_file():
            say.update("Give the training data file first.")
            return
        self.measuring = True
        self.query_one("#measure-domain", Button).disabled = True
        say.update(f"Measuring on {model}… (loads the model; the form stays usable)")
        self._measure_worker(model, str(Path(data).expanduser()))

    @work(thread=True, exclusive=True, group="measure")
    def _measure_worker(self, model: str, data: str) -> None:
        from tuneplan.base.errors import InputError

        from . import measuring

        evidence, error = None, None
        try:
            evidence = measuring.measure_data(model, data, db=self.db, options=self.measure_options)
        except InputError as e:
            error = "; ".join(f"{p.message}" + (f" ({p.fix})" if p.fix else "") for p in e.problems)
        except Exception as e:  # noqa: BLE001 - a failed measurement must not take the form down
            error = f"{type(e).__name__}: {e}"
        try:
            self.call_from_thread(self._measured, evidence, error)
        except RuntimeError:  # the app has gone
            pass

    def _measured(self, evidence, error: Optional[str]) -> None:
        self.measuring = False
        try:
            self.query_one("#measure-domain", Button).disabled = False
            say = self.query_one("#domain-evidence", Static)
        except NoMatches:
            return
        if evidence is None:
            say.update(f"✗ Not measured: {error}")
            return
        from tuneplan.executor.distance.evidence import summary_lines

        self.distance_evidence = evidence
        say.update("Measured: " + "\n".join(line.strip() for line in summary_lines(evidence)[:3]))
        self.query_one("#domain", Select).value = evidence.measured
        self.questions.touched.add("domain")
        self.schedule_recompute()

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

    FIRST_CONTROL = {"plan": "#hw", "run": "#run-log", "runs": "#runs-table"}

    def action_tab(self, tab: str) -> None:
        """Switch to a tab by id and focus its first control (once it is there: a tab's body
        arrives just after the first paint)."""
        self.query_one("#tabs", TabbedContent).active = tab
        try:
            self.query_one(self.FIRST_CONTROL[tab]).focus()
        except NoMatches:
            self._focus_when_mounted = tab

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        """The run database is opened the first time the Runs tab is shown, not at start-up."""
        if event.pane.id == "runs":
            self._load_runs_once()
        self.refresh_bindings()

    def _load_runs_once(self) -> None:
        try:
            pane = self.runs_pane
        except NoMatches:  # not mounted yet: _part_mounted loads it
            return
        if not pane.loaded:
            self.action_refresh_runs()

    def check_action(self, action: str, parameters: tuple) -> Optional[bool]:
        """The footer shows the keys that apply here: cancel only while a run goes, run only
        when none is going, refresh on the Runs tab (False hides a key from the footer)."""
        try:
            tab = self.query_one("#tabs", TabbedContent).active
        except Exception:
            return True
        if action == "cancel_run":
            return self._run_going()
        if action == "refresh_runs":
            return tab == "runs"
        if action == "run":
            return not self._run_going()
        return True

    def get_system_commands(self, screen):
        """App commands in the command palette (ctrl+p), next to Textual's own."""
        yield SystemCommand("Save plan", "Write the plan to the --out file (ctrl+s)", self.action_save)
        yield SystemCommand(
            "Run plan", "Save, then train in a subprocess and follow it (ctrl+r)", self.action_run
        )
        yield SystemCommand(
            "Cancel run", "Stop the run; it is recorded as interrupted (ctrl+g)", self.action_cancel_run
        )
        yield SystemCommand("Help: keys", "Every key and what it does (F1)", self.action_help)
        yield SystemCommand(
            "Show Plan tab", "Questions and the live plan (F2)", lambda: self.action_tab("plan")
        )
        yield SystemCommand("Show Run tab", "The current run (F3)", lambda: self.action_tab("run"))
        yield SystemCommand(
            "Show Runs tab", "Recorded runs and the SQL box (F4)", lambda: self.action_tab("runs")
        )
        yield SystemCommand("Reload runs", "Read the run database again (F5)", self.action_refresh_runs)
        yield from super().get_system_commands(screen)

    def _focus_first_problem(self) -> None:
        if any(FIELD_FOR_FLAG.get(p.where) for p in self.problems):
            self.action_tab("plan")
            self.questions.focus_problem(self.problems)

    def action_save(self) -> bool:
        """Write the validated plan to --out; when invalid, say what to fix instead."""
        if self.bridge is None:
            self.notify("Still loading the advisor; try again in a moment.", severity="warning")
            return False
        self.questions.show_all_errors = True
        self.recompute()
        if self.problems or self.plan is None:
            messages.not_saved(self, self.problems)
            self._focus_first_problem()
            return False
        from tuneplan.base.planio import plan_to_json
        from tuneplan.schemas import SCHEMA_ID, DataSpec

        plan = self.plan
        data = self.questions.text("data")
        if data:
            plan = plan.model_copy(
                update={"data": DataSpec(train_path=str(Path(data).expanduser().resolve()))}
            )
        try:
            write_text_atomic(self.out, plan_to_json(plan, SCHEMA_ID))
        except OSError as e:
            messages.write_failed(self, self.out, e)
            return False
        messages.saved(self, self.out, self.bridge.METHOD_LABEL[plan.method], plan.feasible)
        return True

    def action_run(self) -> None:
        """Save the plan, then run it in a subprocess and follow its metrics."""
        if self._run_going():
            self.notify("A run is already going; ctrl+g cancels it.", severity="warning")
            return
        data = self.questions.text("data")
        if not data:
            self.problems.append(
                Problem("--data", "a run needs training data", "give a JSONL/JSON/CSV/Parquet file")
            )
            self.questions.touched.add("data")
            self._show_problems()
            messages.needs_data(self)
            self._focus_first_problem()
            return
        if not self.action_save():
            return
        output = self.out.resolve().parent / "runs"
        cmd = self.command() + [str(self.out.resolve()), "--output", str(output)]
        if self.db:
            cmd += ["--db", self.db]
        max_steps = self.questions.text("max-steps")
        if max_steps:
            cmd += ["--max-steps", max_steps]
        cmd += ["--data", str(Path(data).expanduser().resolve())]
        self.run_pane.start(cmd, output)
        self.refresh_bindings()
        self.action_tab("run")

    def action_cancel_run(self) -> None:
        """Send SIGINT to the running plan so it stops and is recorded as interrupted."""
        self.run_pane.cancel()

    @on(messages.RunFinished)
    def _run_finished(self) -> None:
        self.refresh_bindings()
        self.action_refresh_runs()

    def action_refresh_runs(self) -> None:
        """Reload the runs table from the run database."""
        self.runs_pane.reload()

    def action_run_sql(self) -> None:
        """Run the SQL box's statement through the sealed read-only connection."""
        self.runs_pane.run_sql()

    def action_sql_history(self, delta: int) -> None:
        """Walk the SQL history; past the newest entry the box is empty for a new query."""
        self.runs_pane.walk_history(delta)

    def on_unmount(self) -> None:
        self.closing = True


__all__ = ["DEBOUNCE_S", "SQLBox", "TunePlanApp", "run_prefix"]
