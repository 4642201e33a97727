"""The GPU catalog: one row per card model (memory as nvidia-smi reports it), lookup and GPUHardware.

GPU memory convention: `memory_bytes` is what `nvidia-smi --query-gpu=memory.total` reports
(MiB) times 1024**2, i.e. the usable total a framework sees, not the marketed GB. Where no
nvidia-smi total is known the marketed size is taken as GiB (N * 1024 MiB); each row's
`source` says which.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import ValidationError

from tuneplan.schemas import GPUHardware

from tuneplan.base.errors import InputError, pydantic_problems


MiB = 1024**2
GiB = 1024**3


Vendor = Literal["nvidia", "amd", "intel", "other"]
"""GPUHardware.vendor."""


@dataclass(frozen=True)
class GPURow:
    """One GPU model: display name, lookup aliases, memory of one card, bf16, vendor, source."""

    name: str
    aliases: tuple[str, ...]
    memory_mib: int
    bf16: bool
    vendor: Vendor
    source: str

    @property
    def memory_bytes(self) -> int:
        """Memory of one card in bytes."""
        return self.memory_mib * MiB


_SMI = "nvidia-smi memory.total as seen in public nvidia-smi output"
_SMI_TYPICAL = "typical nvidia-smi memory.total (not re-checked)"


def _marketed(gb: int) -> str:
    """Source note for a card whose nvidia-smi total is unknown."""
    return f"marketed {gb} GB taken as {gb} GiB (no nvidia-smi total known)"


_GPU_ROWS: tuple[GPURow, ...] = (
    GPURow("NVIDIA T4", ("t4", "tesla t4"), 15360, False, "nvidia", f"{_SMI}; Turing, no bf16"),
    GPURow(
        "NVIDIA V100 16GB",
        ("v100-16gb", "v100-sxm2-16gb", "v100-pcie-16gb"),
        16160,
        False,
        "nvidia",
        f"{_SMI}; Volta, no bf16",
    ),
    GPURow(
        "NVIDIA V100 32GB",
        ("v100-32gb", "v100-sxm2-32gb", "v100-pcie-32gb", "v100s"),
        32510,
        False,
        "nvidia",
        f"{_SMI}; Volta, no bf16",
    ),
    GPURow("NVIDIA A10G", ("a10g",), 23028, True, "nvidia", f"{_SMI} (AWS g5)"),
    GPURow("NVIDIA A10", ("a10",), 23028, True, "nvidia", f"{_SMI_TYPICAL}; same board as A10G"),
    GPURow("NVIDIA L4", ("l4",), 23034, True, "nvidia", _SMI),
    GPURow(
        "NVIDIA GeForce RTX 3060 12GB",
        ("rtx 3060", "3060", "rtx 3060 12gb"),
        12288,
        True,
        "nvidia",
        _SMI_TYPICAL,
    ),
    GPURow("NVIDIA GeForce RTX 3090", ("rtx 3090", "3090"), 24576, True, "nvidia", _SMI_TYPICAL),
    GPURow(
        "NVIDIA GeForce RTX 4060 Ti 16GB",
        ("rtx 4060 ti", "4060 ti", "rtx 4060 ti 16gb", "4060ti 16gb"),
        16380,
        True,
        "nvidia",
        _SMI,
    ),
    GPURow("NVIDIA GeForce RTX 4070 Ti", ("rtx 4070 ti", "4070 ti"), 12282, True, "nvidia", _SMI),
    GPURow("NVIDIA GeForce RTX 4080", ("rtx 4080", "4080"), 16376, True, "nvidia", _SMI),
    GPURow("NVIDIA GeForce RTX 4090", ("rtx 4090", "4090"), 24564, True, "nvidia", _SMI_TYPICAL),
    GPURow("NVIDIA GeForce RTX 5090", ("rtx 5090", "5090"), 32607, True, "nvidia", _SMI),
    GPURow("NVIDIA RTX A4000", ("a4000", "rtx a4000"), 16376, True, "nvidia", _SMI_TYPICAL),
    GPURow("NVIDIA RTX A5000", ("a5000", "rtx a5000"), 24564, True, "nvidia", _SMI),
    GPURow(
        "NVIDIA RTX A6000",
        ("a6000", "rtx a6000"),
        49140,
        True,
        "nvidia",
        f"{_SMI} (ECC off; 46068 MiB with ECC on)",
    ),
    GPURow(
        "NVIDIA RTX 6000 Ada",
        ("rtx 6000 ada", "6000 ada", "rtx 6000 ada generation"),
        49140,
        True,
        "nvidia",
        _SMI,
    ),
    GPURow("NVIDIA L40S", ("l40s",), 46068, True, "nvidia", _SMI),
    GPURow(
        "NVIDIA A100 40GB",
        ("a100-40gb", "a100-sxm4-40gb", "a100-pcie-40gb", "a100 40gb pcie"),
        40960,
        True,
        "nvidia",
        _SMI,
    ),
    GPURow(
        "NVIDIA A100 80GB",
        ("a100-80gb", "a100-sxm4-80gb", "a100-pcie-80gb", "a100 80gb pcie"),
        81920,
        True,
        "nvidia",
        _SMI,
    ),
    GPURow(
        "NVIDIA H100 80GB",
        ("h100", "h100-80gb", "h100 sxm", "h100 pcie", "h100-sxm5-80gb", "h100 80gb hbm3"),
        81559,
        True,
        "nvidia",
        f"{_SMI}; PCIe and SXM have the same memory",
    ),
    GPURow("NVIDIA H100 NVL", ("h100 nvl", "h100-nvl-94gb"), 95830, True, "nvidia", _SMI),
    GPURow("NVIDIA H200", ("h200", "h200-141gb", "h200 nvl"), 143771, True, "nvidia", _SMI),
    GPURow("NVIDIA B200", ("b200", "b200-180gb"), 183359, True, "nvidia", _SMI),
    GPURow(
        "AMD Instinct MI250X (one GCD)",
        ("mi250x", "mi250"),
        64 * 1024,
        True,
        "amd",
        f"{_marketed(64)}; an MI250X card is two 64 GB GCDs, each its own device: count GCDs",
    ),
    GPURow("AMD Instinct MI300X", ("mi300x", "mi300"), 192 * 1024, True, "amd", _marketed(192)),
)

# Names that fit several rows: the lookup asks which one instead of guessing.
_AMBIGUOUS = {
    "a100": ("NVIDIA A100 40GB", "NVIDIA A100 80GB"),
    "v100": ("NVIDIA V100 16GB", "NVIDIA V100 32GB"),
}


def _norm_gpu(name: str) -> str:
    """Lower-case, drop vendor words and non-alphanumerics and a trailing "gb"."""
    text = re.sub(r"nvidia|geforce|tesla|amd|instinct", "", name.lower())
    text = re.sub(r"[^a-z0-9]", "", text)
    return text[:-2] if text.endswith("gb") else text


def _gpu_index() -> dict[str, GPURow]:
    """Normalised display names and aliases -> row."""
    index: dict[str, GPURow] = {}
    for row in _GPU_ROWS:
        for key in (row.name, *row.aliases):
            index[_norm_gpu(key)] = row
    return index


_GPUS_BY_KEY = _gpu_index()


def list_gpus() -> list[GPURow]:
    """The GPU catalog rows in catalog order (for `tuneplan gpus`)."""
    return list(_GPU_ROWS)


def get_gpu(name: str) -> GPURow:
    """The GPU row for a name ("a100-80gb", "A100 80GB", "rtx4090", "4090"); InputError on --gpu."""
    key = _norm_gpu(name)
    row = _GPUS_BY_KEY.get(key)
    if row is not None:
        return row
    if key in _AMBIGUOUS:
        choices = _AMBIGUOUS[key]
        raise InputError.one(
            "--gpu", f"{name!r} names {len(choices)} cards", f"say which: {', '.join(choices)}"
        )
    import difflib  # only for a name not found: the suggestions

    close = difflib.get_close_matches(key, list(_GPUS_BY_KEY), n=10, cutoff=0.5)
    suggestions = list(dict.fromkeys(_GPUS_BY_KEY[k].name for k in close))[:5]
    fix = "run `tuneplan gpus` for the catalog, or give the memory with --gpu-memory GIB"
    if suggestions:
        fix = f"did you mean {', '.join(suggestions)}? Otherwise {fix}"
    raise InputError.one("--gpu", f"unknown GPU {name!r}", fix)


def _gpu(name: str, memory_bytes: int, count: int, nodes: int, bf16: bool, vendor: Vendor) -> GPUHardware:
    """GPUHardware, with count/nodes problems reported on --gpus/--nodes."""
    try:
        return GPUHardware(
            name=name, memory_bytes=memory_bytes, count=count, nodes=nodes, bf16=bf16, vendor=vendor
        )
    except ValidationError as exc:
        raise InputError(
            pydantic_problems(
                exc, flags={"count": "--gpus", "nodes": "--nodes", "memory_bytes": "--gpu-memory"}
            )
        ) from exc


def gpu_hardware(name: str, count: int = 1, nodes: int = 1) -> GPUHardware:
    """GPUHardware for `count` catalog cards per node on `nodes` nodes."""
    row = get_gpu(name)
    return _gpu(row.name, row.memory_bytes, count, nodes, row.bf16, row.vendor)


def custom_gpu(memory_gib: float, count: int = 1, nodes: int = 1) -> GPUHardware:
    """GPUHardware for a card given only by its memory (--gpu-memory GIB); assumes bf16."""
    if not (memory_gib > 0 and math.isfinite(memory_gib)):
        raise InputError.one(
            "--gpu-memory",
            f"{memory_gib!r} GiB is not a positive size",
            "give one card's memory in GiB, e.g. --gpu-memory 24",
        )
    return _gpu(f"custom {memory_gib:g} GiB", int(memory_gib * GiB), count, nodes, True, "nvidia")


def lookup_gpu(name: str) -> Optional[GPURow]:
    """The catalog row an exact (normalised) name or alias matches, or None (no fuzzy match)."""
    return _GPUS_BY_KEY.get(_norm_gpu(name))
