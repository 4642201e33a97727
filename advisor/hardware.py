"""This machine's hardware: the GPUs nvidia-smi reports, else the CPU and its RAM (cgroup-capped).

Probing never raises for GPUs (a missing or hanging nvidia-smi means "no GPU"); only a host whose
RAM size cannot be read raises InputError. The catalogs (tuneplan.advisor.catalog) are data;
this module is the only one that looks at the machine.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Union


from tuneplan.schemas import CPUHardware, GPUHardware

from tuneplan.base.errors import InputError, Problem
from .catalog.gpus import lookup_gpu

MiB = 1024**2
GiB = 1024**3

# --------------------------------------------------------------------------- this machine

# Ampere-or-newer names, for cards that nvidia-smi reports but the catalog lacks.
_BF16_NAME = re.compile(
    r"\b(a100|a800|a10g?|a16|a2|a30|a40|l4|l20|l40s?|h100|h800|h200|h20|gh200|b100|b200|gb200)\b"
    r"|geforce rtx [345]0[5-9]0|rtx a\d000|ada generation|blackwell"
)


def _read(path: str) -> str:
    """A file's text, or "" if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _ram_bytes() -> Optional[int]:
    """MemTotal from /proc/meminfo (os.sysconf fallback), capped by a cgroup memory limit."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", _read("/proc/meminfo"), re.MULTILINE)
    total: Optional[int] = int(m.group(1)) * 1024 if m else None
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        limit = _read(limit_file).strip()
        if limit.isdigit() and (total is None or int(limit) < total):
            total = int(limit)
    return total if total and total > 0 else None


def cpu_hardware(
    name: Optional[str] = None, memory_gib: Optional[float] = None, cores: Optional[int] = None
) -> CPUHardware:
    """This machine as CPUHardware, with any of name / RAM (GiB) / cores pinned instead.

    RAM is MemTotal (not MemAvailable, which swings with whatever else runs: the plan states
    what training may use, and the fit check keeps its own margin), lowered to the cgroup
    limit inside a container. Cores are the ones this process may run on. Pinned values
    (--cpu-name, --cpu-memory, --cpu-cores) replace detection so a committed plan means the
    same on every machine; with all three pinned nothing is read from this host.
    """
    problems = []
    if memory_gib is not None and not (memory_gib > 0 and math.isfinite(memory_gib)):
        problems.append(
            Problem(
                "--cpu-memory",
                f"{memory_gib!r} GiB is not a positive size",
                "give the RAM training may use in GiB, e.g. --cpu-memory 64",
            )
        )
    if cores is not None and cores < 1:
        problems.append(Problem("--cpu-cores", f"must be at least 1, got {cores}", "e.g. --cpu-cores 8"))
    if name is not None and not name.strip():
        problems.append(Problem("--cpu-name", "is empty", "give a CPU name, e.g. --cpu-name 'Xeon 8480'"))
    if problems:
        raise InputError(problems)
    if memory_gib is not None:
        ram: Optional[int] = int(memory_gib * GiB)
    else:
        ram = _ram_bytes()
    if ram is None:
        raise InputError.one(
            "hardware",
            "cannot read this machine's RAM size",
            "give it with --cpu-memory GIB, or name the hardware with --gpu",
        )
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if name is None:
        m = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.MULTILINE)
        name = m.group(1).strip() if m else "cpu"
    return CPUHardware(name=name.strip(), memory_bytes=ram, cores=max(1, cores))


def _nvidia_gpus() -> Optional[GPUHardware]:
    """The GPUs nvidia-smi lists (None when it is absent or fails).

    Mixed cards: the first card's name with the smallest memory, counted all together. bf16
    comes from the catalog row when the name matches, else from an Ampere-or-newer name.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        ).stdout
        cards = [line.rsplit(",", 1) for line in out.splitlines() if line.strip()]
        name = cards[0][0].strip()
        row = lookup_gpu(name)
        return GPUHardware(
            name=name,
            memory_bytes=min(int(float(mib)) for _, mib in cards) * MiB,
            count=min(len(cards), 4096),
            bf16=row.bf16 if row else bool(_BF16_NAME.search(name.lower())),
            vendor="nvidia",
        )
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):  # ValidationError too
        return None


def detect_hardware() -> Union[GPUHardware, CPUHardware]:
    """The GPUs nvidia-smi reports, else this machine's CPU and RAM.

    GPU probing never raises; only a host whose RAM size cannot be read raises InputError.
    """
    return _nvidia_gpus() or cpu_hardware()
