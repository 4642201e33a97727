"""The run's log file: third-party noise goes there, not to the user's terminal.

A CPU run of torch + transformers + peft + bitsandbytes + accelerate prints things the user can do
nothing about: bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (a
logging warning at import), transformers' and peft's FutureWarning / DeprecationWarning
(``warnings.warn``), accelerate's notices (logging), transformers' "Loading weights" /
"Writing model shards" tqdm bars, and the torch profiler's ``USDT: ... profiler_start`` lines
(libkineto's C++ logger, written straight to file descriptor 2). Inside :func:`run_log`:

* ``warnings`` are captured into logging (``logging.captureWarnings``: the "py.warnings" logger)
  and, with every other logging record that reaches the root logger, written to the log file;
* a stderr StreamHandler already on a logger (transformers' library handler, torch's) is raised to
  ERROR for the duration, so third-party errors still reach the terminal and everything below goes
  to the file (loggers that have no handler propagate to the root logger, whose console handler is
  ERROR-level too);
* transformers' (and huggingface_hub's) progress bars are off (``disable_progress_bar``);
* :func:`c_stderr_to_log` points fd 2 at the log file around the few C calls known to print (the
  profiler's start and stop) and restores it right after, so nothing of ours is ever redirected.

tuneplan's own output (progress lines, errors, the summary) is printed with ``print`` to
``sys.stderr`` / ``sys.stdout`` and is untouched. Records emitted before the run directory exists
are buffered and written when :meth:`RunLog.attach` names the file (dropped if it never does: a
bad plan exits 2 before anything is created, and third-party errors were already on the console).
Each process of a multi-process run appends to the same file, its rank in every line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

RUN_LOG = "run.log"
"""The log file's name in the run directory."""

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"

_ACTIVE: list["RunLog"] = []


class RunLog:
    """Routes logging records (and captured warnings) to a file; see the module docstring."""

    def __init__(self, rank: int = 0):
        self.rank = rank
        self.path: Optional[Path] = None
        self._file: Optional[logging.FileHandler] = None
        self._buffer = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
        self._buffer.setFormatter(self._formatter())
        self._console = logging.StreamHandler(sys.stderr)
        self._console.setLevel(logging.ERROR)
        self._console.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))
        self._raised: list[tuple[logging.Handler, int]] = []
        self._root_level = logging.WARNING
        self._bars_were_on: Optional[bool] = None

    def _formatter(self) -> logging.Formatter:
        fmt = (
            _FORMAT if self.rank == 0 else _FORMAT.replace("%(levelname)s", f"%(levelname)s rank{self.rank}")
        )
        return logging.Formatter(fmt)

    @property
    def handler(self) -> logging.Handler:
        """Where records go now: the file once attached, the buffer before."""
        return self._file if self._file is not None else self._buffer

    def start(self) -> None:
        root = logging.getLogger()
        self._root_level = root.level
        root.addHandler(self._buffer)
        root.addHandler(self._console)
        if root.level > logging.WARNING or root.level == logging.NOTSET:
            root.setLevel(logging.WARNING)
        logging.captureWarnings(True)
        self._quiet_transformers()
        self._raise_console_handlers()

    def _quiet_transformers(self) -> None:
        """transformers' library logger has its own stderr handler and does not propagate: give it
        ours too, and switch its progress bars off (which also switches huggingface_hub's)."""
        try:
            from transformers.utils import logging as tlog
        except Exception:  # transformers missing or broken: nothing of it to quiet
            return
        tlog.get_logger()  # creates the library handler now, so it is raised below
        self._bars_were_on = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()

    def _raise_console_handlers(self) -> None:
        """Every handler writing to the terminal on an existing logger: ERROR and above only; a
        logger that does not propagate gets the file handler as well."""
        names = list(logging.Logger.manager.loggerDict)
        for name in names:
            lg = logging.Logger.manager.loggerDict[name]
            if not isinstance(lg, logging.Logger) or not lg.handlers:
                continue
            for h in lg.handlers:
                if _is_console(h) and h.level < logging.ERROR:
                    self._raised.append((h, h.level))
                    h.setLevel(logging.ERROR)
            if not lg.propagate and not any(isinstance(h, _Forward) and h.log is self for h in lg.handlers):
                lg.addHandler(_Forward(self))

    def refresh(self) -> None:
        """Again for loggers created since start (torch's, after the runtime imports)."""
        self._raise_console_handlers()

    def attach(self, path: Path, header: str = "") -> None:
        """Write to ``path`` (appended: a resumed run adds to its log) from now on, the buffered
        records first."""
        if self._file is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, mode="a", encoding="utf-8")
        fh.setFormatter(self._formatter())
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fh.stream.write(f"--- {when} pid {os.getpid()} rank {self.rank} {header}\n".rstrip() + "\n")
        fh.flush()
        self.path = path
        self._buffer.setTarget(fh)
        self._buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self._buffer)
        root.addHandler(fh)
        self._file = fh

    def close(self) -> None:
        root = logging.getLogger()
        for h in (self._buffer, self._console, self._file):
            if h is not None:
                root.removeHandler(h)
        for lg in list(logging.Logger.manager.loggerDict.values()):
            if isinstance(lg, logging.Logger):
                for h in [h for h in lg.handlers if isinstance(h, _Forward) and h.log is self]:
                    lg.removeHandler(h)
        for h, level in self._raised:
            h.setLevel(level)
        self._raised = []
        root.setLevel(self._root_level)
        if not _ACTIVE:  # an enclosing run log (measure's, around a pilot run) keeps capturing
            logging.captureWarnings(False)
        if self._bars_were_on:
            from transformers.utils import logging as tlog

            tlog.enable_progress_bar()
        self._buffer.setTarget(None)
        self._buffer.buffer.clear()
        self._buffer.close()
        if self._file is not None:
            self._file.close()


class _Forward(logging.Handler):
    """On a non-propagating third-party logger: hands its records to the run log's current handler."""

    def __init__(self, log: RunLog):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        h = self.log.handler
        if record.levelno >= h.level:
            h.handle(record)


def _is_console(h: logging.Handler) -> bool:
    stream = getattr(h, "stream", None)
    return (
        isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and (
            stream is sys.stderr
            or stream is sys.__stderr__
            or stream is sys.stdout
            or stream is sys.__stdout__
        )
    )


@contextmanager
def run_log(rank: int = 0) -> Iterator[RunLog]:
    """Third-party logging and warnings to a run log (see the module docstring) while inside."""
    log = RunLog(rank)
    log.start()
    _ACTIVE.append(log)
    try:
        yield log
    finally:
        _ACTIVE.remove(log)
        log.close()


def active() -> Optional[RunLog]:
    """The innermost run log, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def refresh() -> None:
    """:meth:`RunLog.refresh` on the active run log, if any."""
    log = active()
    if log is not None:
        log.refresh()


@contextmanager
def c_stderr_to_log() -> Iterator[None]:
    """File descriptor 2 pointed at the run log's file for the duration: around a C call known to
    print there (the torch profiler's start/stop). A no-op without an attached run log, or when fd
    2 cannot be duplicated. Python's sys.stderr is flushed on both sides so no line of ours crosses."""
    log = active()
    if log is None or log.path is None or log._file is None:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        log._file.flush()
        target = os.open(log.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.dup2(target, 2)
        finally:
            os.close(target)
        yield
    finally:
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - restoring fd 2 matters more
            pass
        os.dup2(saved, 2)
        os.close(saved)


MEASURE_LOG = "measure.log"


@contextmanager
def measure_log(what: str) -> Iterator[RunLog]:
    """A run log for a command without a run directory (`tuneplan measure`, advise's
    --measure-distance): appended to ``<tuneplan cache>/logs/measure.log``."""
    from .models import cache_root

    with run_log() as log:
        try:
            log.attach(cache_root() / "logs" / MEASURE_LOG, what)
        except OSError:  # an unwritable cache: the records stay buffered and are dropped
            pass
        yield log
