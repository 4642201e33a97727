"""Which process owns a run directory, and whether it is still alive.

``run_plan`` writes ``<run_dir>/process.json`` (pid, host, the process's start time) when it
creates the directory. ``tuneplan runs ingest`` uses it to tell a run that is still going from one
whose process is gone (SIGKILL, out-of-memory killer, power loss): a pid that no longer exists, or
exists but started at another time (the pid was reused), means the run is lost and is recorded as
interrupted with its metrics so far. The start time comes from psutil (a dependency of
accelerate); without it, from /proc on Linux; elsewhere only the pid's existence is checked.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Optional

FILE = "process.json"
_START_TOLERANCE_S = 2.0


def _start_time(pid: int) -> Optional[float]:
    """Seconds since the epoch when process ``pid`` started; None when it does not exist.
    Raises LookupError when the start time cannot be read (but the process may exist)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return float(psutil.Process(pid).create_time())
        except psutil.NoSuchProcess:
            return None
        except psutil.Error as exc:  # AccessDenied, zombie...
            raise LookupError(str(exc)) from None
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return None
        ticks = int(fields[19])  # field 22: starttime in clock ticks after boot
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    raise LookupError("no way to read a process start time here")


def identity() -> dict:
    """This process: pid, host, start time (epoch seconds, or None when unknown)."""
    try:
        started = _start_time(os.getpid())
    except LookupError:
        started = None
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_started": started}


def write(run_dir: Path) -> None:
    """Record this process as the owner of ``run_dir``."""
    (Path(run_dir) / FILE).write_text(json.dumps(identity(), indent=2) + "\n", encoding="utf-8")


def gone(run_dir: Path) -> tuple[Optional[bool], str]:
    """(True, why) when the run's process is gone, (False, why) when it is alive, (None, why)
    when that cannot be told (no process.json, another host, unreadable)."""
    path = Path(run_dir) / FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info["host"])
        started = info.get("process_started")
    except FileNotFoundError:
        return None, f"no {FILE} (written by tuneplan since this check exists)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{path} is unreadable ({exc})"
    who = f"process {pid} on {host}"
    if host != socket.gethostname():
        return None, f"{who}: another host, cannot tell from here whether it is alive"
    try:
        now_started = _start_time(pid)
    except LookupError as exc:
        return None, f"{who}: cannot read its start time ({exc})"
    if now_started is None:
        return True, f"{who} no longer exists"
    if started is not None and abs(float(started) - now_started) > _START_TOLERANCE_S:
        return True, f"{who} is gone (that pid now belongs to a process started later)"
    return False, f"{who} is still running"
