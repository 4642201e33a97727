"""The run's progress: a rich progress bar on a TTY, plain log lines on stderr otherwise."""

from __future__ import annotations

import sys
from typing import Optional


class Progress:
    """A rich progress bar on a TTY, plain log lines on stderr otherwise: one line per logged step
    (every tenth of the run, the last step, and each evaluated step with its eval and probe loss),
    nothing else; third-party output goes to the run's log file (executor/runlog.py)."""

    def __init__(self, total: int, enabled: Optional[bool]):
        self.total = total
        self.fancy = sys.stderr.isatty() if enabled is None else enabled
        self.every = max(1, total // 10)
        self.tokens = 0
        self.bar = None
        if self.fancy:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("train", total=total, loss="-", tps="-")
            self.bar.start()

    def log(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def step(self, m: dict) -> None:
        """Show one optimizer step."""
        self.tokens += m["tokens"]
        tps = self.tokens / m["elapsed_s"] if m["elapsed_s"] > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=m["step"], loss=f"{m['loss']:.4f}", tps=f"{tps:,.0f}")
        elif m["step"] % self.every == 0 or m["step"] == self.total or "eval_loss" in m:
            evaluated = "".join(
                f"  {name} {m[key]:.4f}"
                for name, key in (("eval", "eval_loss"), ("probe", "probe_loss"))
                if isinstance(m.get(key), (int, float))
            )
            print(
                f"step {m['step']}/{self.total}  loss {m['loss']:.4f}  lr {m['lr']:.3g}  "
                f"grad_norm {m['grad_norm']:.3g}  {tps:,.0f} tok/s{evaluated}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        """Stop the bar."""
        if self.bar is not None:
            self.bar.stop()
