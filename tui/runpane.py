"""The Run tab: a plan running in a child process (`tuneplan run`), followed as it goes.

The phase in words (loading, evaluating before, training with an ETA, evaluating after, saving),
a progress bar, the loss as a number from one point and as a curve from two, and the child's
own lines with the libraries' noise kept out of view (all of it goes to a full log file). The
cancel sends SIGINT, so the run stops at the next step and is recorded as interrupted. torch is
never imported here: training happens in the child.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Button, ProgressBar, RichLog, Sparkline, Static

from . import messages

_TOTAL_STEPS = re.compile(r"\b(\d+) steps\b")
# Lines of the child's output that are libraries talking, not tuneplan: kept out of the view
# (they are still written to the run's full log file).
_NOISE = re.compile(
    r"site-packages/|\b[A-Z]\w*Warning\b|^\s*warnings\.warn\(|\d+(\.\d+)?\s*(it/s|s/it)\]"
    r"|\|[█▏▎▍▌▋▊▉ ]{3,}\||^\s*$|^`?torch_dtype`? is deprecated|Some weights of|You are using a model of type"
)
PHASES = {
    "loading": "Loading the model and data…",
    "eval-before": "Evaluating before training (eval and probe loss)…",
    "training": "Training",
    "eval-after": "Evaluating after training (eval and probe loss)…",
    "saving": "Saving…",
}


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def read_metrics(path: Path, offset: int) -> tuple[int, list[dict]]:
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


class RunPane(Vertical):
    """The Run tab's body (id "run-body"): `start` launches a run, `cancel` interrupts it."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.proc: Optional[subprocess.Popen] = None
        self.running = False
        self.losses: list[float] = []
        self.tokens = 0
        self.total_steps: Optional[int] = None
        self.closing = False
        self.hidden_lines = 0
        self.full_log: Optional[Path] = None
        self.phase = ""
        self.cancel_requested = False
        self.step_times: list[tuple[float, int]] = []

    def compose(self) -> ComposeResult:
        yield Static("No run yet: ctrl+s saves the plan, ctrl+r runs it.", id="run-status")
        yield ProgressBar(id="run-progress", show_eta=False)
        yield Static("", id="run-metrics")
        yield Static("", id="run-loss-note")
        yield Sparkline([], id="run-loss")
        yield Button("Cancel run (ctrl+g)", id="cancel", variant="error", disabled=True)
        yield RichLog(id="run-log", max_lines=500, wrap=True)

    def on_mount(self) -> None:
        self.post_message(messages.PartMounted(self.id or ""))

    def on_unmount(self) -> None:
        self.stop()

    def _status(self) -> Static:
        return self.query_one("#run-status", Static)

    def start(self, cmd: list[str], output: Path) -> None:
        """Run `cmd` (a `tuneplan run` line writing under `output`) and follow it."""
        self.running = True
        self.cancel_requested = False
        self.hidden_lines = 0
        self.step_times = []
        self.losses = []
        self.tokens = 0
        self.total_steps = None
        self.query_one("#run-log", RichLog).clear()
        self.query_one("#run-loss", Sparkline).data = []
        self.query_one("#run-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#run-metrics", Static).update("")
        self.draw_losses()
        self.set_phase("loading")
        self.query_one("#run-log", RichLog).write(Text("$ tuneplan " + " ".join(cmd[3:]), style="dim"))
        self.query_one("#cancel", Button).disabled = False
        self._run_worker(cmd, output)

    def cancel(self) -> None:
        """Send SIGINT to the running plan so it stops and is recorded as interrupted."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.app.notify("No run is going.", severity="warning")
            return
        proc.send_signal(signal.SIGINT)
        self.cancel_requested = True
        self._status().update(
            Text(
                "Cancelling… the run stops at the next step and is recorded as interrupted.",
                style="bold yellow",
            )
        )
        self.app.notify("Cancelling the run…")

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.cancel()

    # ------------------------------------------------------------------ the child

    @work(thread=True, exclusive=True, group="run")
    def _run_worker(self, cmd: list[str], output: Path) -> None:
        """Launch the run, tail <output>/<run_id>/metrics.jsonl, report the outcome."""
        call = self.app.call_from_thread
        output.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in output.iterdir()}
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            TRANSFORMERS_VERBOSITY="error",
            TQDM_DISABLE="1",
            PYTHONWARNINGS="ignore",
        )
        self.full_log = output / f"tui-run-{time.strftime('%Y%m%d-%H%M%S')}.log"
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            call(self.finished, None, {"error": str(e)}, None)
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
                offset, rows = read_metrics(run_dir / "metrics.jsonl", offset)
                if rows:
                    call(self.show_metrics, rows)
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
        call(self.finished, proc.returncode, result, run_dir)

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
                    self.app.call_from_thread(self.log_line, line.rstrip("\n"))
                except RuntimeError:  # the app has gone
                    return
        finally:
            if full is not None:
                full.close()

    # ------------------------------------------------------------------ the view

    def log_line(self, line: str) -> None:
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
            self.set_phase("eval-before")
        elif line.startswith("evaluating before"):
            self.set_phase("eval-before")
        elif line.startswith("evaluating after"):
            self.set_phase("eval-after")
        elif line.startswith("saving "):
            self.set_phase("saving")

    def set_phase(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        if self.cancel_requested:
            return
        words = PHASES[phase] + (f" {detail}" if detail else "")
        self._status().update(Text(words + "   (ctrl+g cancels)", style="bold"))

    def show_metrics(self, rows: list[dict]) -> None:
        if self.closing:
            return
        self.losses += [float(r["loss"]) for r in rows if r.get("loss") is not None]
        last = rows[-1]
        self.tokens += sum(int(r.get("tokens") or 0) for r in rows)
        step = int(last.get("step", 0))
        of = f"/{self.total_steps}" if self.total_steps else ""
        loss = last.get("loss")
        self.query_one("#run-metrics", Static).update(
            Text(
                f"step {step}{of} · loss {loss:.4f} · {self.tokens:,} tokens · {last.get('elapsed_s', 0):.1f} s"
                if loss is not None
                else f"step {step}{of}"
            )
        )
        self.query_one("#run-progress", ProgressBar).update(progress=step)
        now = time.monotonic()
        self.step_times.append((now, step))
        first_t, first_step = self.step_times[0]
        if self.total_steps and step > first_step and now > first_t:
            rate = (step - first_step) / (now - first_t)
            left = max(0.0, (self.total_steps - step) / rate)
            eta = f"step {step}/{self.total_steps}, about {duration(left)} left"
        else:
            eta = f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")
        if self.phase not in ("eval-after", "saving"):  # a late poll of the last steps: no going back
            self.set_phase("training", "— " + eta)
            if self.total_steps and step >= self.total_steps:
                self.set_phase("eval-after")
        self.draw_losses()

    def draw_losses(self) -> None:
        """One point is a number, not a bar; from two the curve is drawn one column per step
        (up to the width), so a short run is not stretched into a solid block."""
        spark = self.query_one("#run-loss", Sparkline)
        note = self.query_one("#run-loss-note", Static)
        losses = self.losses
        if len(losses) < 2:
            spark.display = False
            note.update(
                Text(
                    f"loss {losses[0]:.4f} at the first step; the curve starts at the second"
                    if losses
                    else ""
                )
            )
            return
        spark.display = True
        avail = max(8, (self.size.width or 80) - 4)
        shown = losses[-avail:]
        spark.styles.width = len(shown)
        spark.data = list(shown)
        note.update(
            Text(
                f"loss {shown[0]:.4f} → {shown[-1]:.4f} over {len(losses)} steps (min {min(losses):.4f})",
                style="dim",
            )
        )

    def finished(self, code: Optional[int], result: Optional[dict], run_dir: Optional[Path]) -> None:
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
            text.append(
                f"\n{result.get('steps')} steps, eval loss "
                f"{messages.before_after(result.get('eval_loss_before'), result.get('eval_loss_after'))}, "
                f"probe loss {messages.before_after(result.get('forgetting_loss_before'), result.get('forgetting_loss_after'))}"
            )
        if result.get("error") and not cancelled:
            text.append(f"\n{result['error']}", style="red")
        if self.hidden_lines:
            text.append(
                f"\n{self.hidden_lines} lines of library output kept out of view; full log: {self.full_log}",
                style="dim",
            )
        if run_dir is not None:
            text.append(f"\n{run_dir}", style="dim")
        self._status().update(text)
        self.cancel_requested = False
        messages.run_outcome(self.app, status, cancelled)
        self.post_message(messages.RunFinished())

    def stop(self) -> None:
        """Do not leave a training process behind: interrupt it and give it a moment to record."""
        self.closing = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
