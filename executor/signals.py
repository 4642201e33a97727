"""Signal handling for a run: SIGINT and SIGTERM end it cleanly, and never in the middle of a write.

:class:`RunSignals` is installed by ``run_plan`` before anything is created (before the run
directory exists) and restored only after the last write (result.json and the database row).
Outside a critical section a signal raises ``KeyboardInterrupt`` where the main thread is, so
training stops and the run is recorded as interrupted. Inside :meth:`RunSignals.critical` (creating
the run directory and its first files, the final result.json + database write) the signal is
held and raised when the section ends, so a run is never left half-written. Only the first
signal raises; later ones are held (a second Ctrl-C during the final write does not abort it).

:class:`Recorded` says what actually reached disk, so the message printed on an interrupt or a
failure states what was recorded, never what was meant to be.

Test hook (hidden, for the adversarial tests): ``TUNEPLAN_TEST_PAUSE_AT=<phase>`` makes
:func:`pause` print ``tuneplan-test: paused at <phase>`` on stderr and wait (up to 60 s) until a
signal arrives, so a test can aim a signal at one phase deterministically. Phases, in order:
``preflight`` (handlers installed, nothing created), ``created`` (run directory made, no
result.json yet; critical), ``started`` (result.json and row say running), ``training`` (after
the first optimizer step), ``final`` (final result.json written, database row not yet;
critical), ``recorded`` (row written, handlers still installed; critical), ``returned``
(handlers restored, before the summary is printed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

PAUSE_ENV = "TUNEPLAN_TEST_PAUSE_AT"
PHASES = ("preflight", "created", "started", "training", "final", "recorded", "returned")
_HANDLED = (signal.SIGINT, signal.SIGTERM)


class RunSignals:
    """SIGINT/SIGTERM -> KeyboardInterrupt, held inside :meth:`critical` sections.

    A no-op outside the main thread (Python delivers signals only there)."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        """Print the "finishing this step" notice (one rank of several: only the main one does)."""
        self.received: Optional[str] = None
        """Name of the first signal received (SIGINT, SIGTERM), or None."""
        self._pending: Optional[str] = None
        self._raised = False
        self._depth = 0
        self._soft = 0
        self.stop_requested: Optional[str] = None
        """Inside :meth:`soft`: the signal that asked training to stop at the next step boundary."""
        self._old: dict[int, object] = {}

    def install(self) -> "RunSignals":
        """Install the handlers (main thread only); returns self."""
        if threading.current_thread() is threading.main_thread():
            for sig in _HANDLED:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
        if self._soft and not self._depth and not self._raised:
            if self.stop_requested is None:
                self.stop_requested = name
                if self.announce:
                    print(
                        f"tuneplan: {name} received: finishing this step and writing a checkpoint; "
                        "Ctrl-C again stops at once",
                        file=sys.stderr,
                        flush=True,
                    )
                return
            if name != "SIGINT":  # launchers forward SIGTERM again: keep checkpointing
                return
            self._raised = True
            raise KeyboardInterrupt(f"received {name} twice: stopped at once, without a checkpoint")
        if self._depth or self._raised:
            self._pending = self._pending or name
            return
        self._raised = True
        raise KeyboardInterrupt(f"received {name}")

    @contextmanager
    def soft(self) -> Iterator[None]:
        """The training loop: the first signal only sets :attr:`stop_requested` (the loop ends
        the step, checkpoints and raises); a second SIGINT raises at once (a repeated SIGTERM,
        as torchrun forwards to its workers, is ignored so the checkpoint completes)."""
        self._soft += 1
        try:
            yield
        finally:
            self._soft -= 1

    def stop_now(self) -> None:
        """Raise the KeyboardInterrupt a soft stop deferred (after the checkpoint)."""
        self._raised = True
        raise KeyboardInterrupt(f"received {self.stop_requested}")

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Hold signals for the duration; a held signal is raised when the outermost section ends
        (unless one was raised already, or the section is ending with an exception)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending and not self._raised:
            name, self._pending, self._raised = self._pending, None, True
            raise KeyboardInterrupt(f"received {name}")


@dataclass
class Recorded:
    """What a run actually wrote, for an honest message."""

    run_dir: Optional[str] = None
    """The run directory once it exists."""
    result_status: Optional[str] = None
    """The status in the last result.json written, or None when none was written."""
    result_error: Optional[str] = None
    """Why the last result.json write failed."""
    db_status: Optional[str] = None
    """The status of the last database row written, or None."""
    db_error: Optional[str] = None
    """Why the last database write failed."""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One sentence: where the run's outcome is recorded (or that nothing was)."""
        if self.run_dir is None:
            return "nothing was recorded (the run had not started: no run directory, no database row)"
        parts = []
        if self.result_status:
            parts.append(f"result.json says {self.result_status}")
        else:
            parts.append(
                "no result.json could be written" + (f" ({self.result_error})" if self.result_error else "")
            )
        if self.db_status and self.db_status == self.result_status:
            parts.append("the database row matches")
        elif self.db_status:
            parts.append(
                f"the database row says {self.db_status}"
                + (f" (the final write failed: {self.db_error})" if self.db_error else "")
            )
        else:
            parts.append("no database row" + (f" ({self.db_error})" if self.db_error else ""))
        text = f"run directory {self.run_dir}: " + ", ".join(parts)
        if self.result_status and self.db_status != self.result_status:
            text += f"; `tuneplan runs ingest {self.run_dir}` rebuilds the row"
        return text


class RunInterrupted(KeyboardInterrupt):
    """A run ended by SIGINT/SIGTERM; ``recorded`` says what was written."""

    def __init__(self, message: str, recorded: Recorded) -> None:
        super().__init__(message)
        self.recorded = recorded
        self.run_dir = recorded.run_dir


class RecordingFailed(Exception):
    """The run ended but its outcome could not be fully written (full disk, database locked)."""

    def __init__(self, message: str, recorded: Recorded, result=None) -> None:
        super().__init__(message)
        self.recorded = recorded
        self.run_dir = recorded.run_dir
        self.result = result


def no_space(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) is a full disk."""
    import errno

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def pause(phase: str, signals: Optional[RunSignals] = None) -> None:
    """Test hook: wait at ``phase`` when TUNEPLAN_TEST_PAUSE_AT names it (see the module doc)."""
    if os.environ.get(PAUSE_ENV) != phase:
        return
    print(f"tuneplan-test: paused at {phase}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if signals is not None and signals.received:
            return
        time.sleep(0.02)
