"""Framework overhead terms: the CUDA context (or the CPU process) and allocator fragmentation."""

from __future__ import annotations

from .citations import cite
from .common import GiB, MiB, Terms, num


CUDA_CONTEXT_BYTES = 3 * GiB // 4
"""CUDA context + cuBLAS workspace + kernel images: facts 6c/R-memory "about 1-2 GB" [S]; 0.75 GiB
is the low end of what nvidia-smi shows for an idle torch process on recent GPUs."""
CPU_RUNTIME_BYTES = 384 * MiB
"""Resident memory of `import torch, transformers, peft` + model classes: measured VmRSS 386 MiB
(torch 2.13 CPU, transformers 5, this repository's .venv)."""
FRAGMENTATION_SHARE = 0.05
"""Share of the churned allocations (activations, logits) lost to caching-allocator
fragmentation (reserved minus allocated); an assumption, kept small because DEFAULT_HEADROOM
also absorbs it."""


def overhead_terms(t: Terms, device: str) -> None:
    """The runtime's fixed bytes plus a fragmentation share of the churned allocations
    (activations and logits), appended after every other term."""
    churn = sum(x.bytes for x in t.items if x.component in ("activations", "logits_and_loss"))
    frag = int(churn * FRAGMENTATION_SHARE)
    if device == "cuda":
        t.add(
            "framework_overhead",
            "CUDA context, cuBLAS workspace and kernels",
            CUDA_CONTEXT_BYTES,
            f"0.75 GiB = {num(CUDA_CONTEXT_BYTES)} B",
            cite("cuda-context"),
        )
    else:
        t.add(
            "framework_overhead",
            "Python + torch + transformers + peft process",
            CPU_RUNTIME_BYTES,
            f"384 MiB = {num(CPU_RUNTIME_BYTES)} B",
            cite("cpu-runtime"),
        )
    t.add(
        "framework_overhead",
        "allocator fragmentation",
        frag,
        f"{FRAGMENTATION_SHARE} × (activations + logits) {num(churn)} B = {num(frag)} B",
        cite("fragmentation"),
    )
