"""Gradient-energy maths on singular values: the rank holding a share of the energy, and the
share a given rank captures. The energy of a matrix is the sum of its squared singular values
(its squared Frobenius norm); the best rank-r approximation (Eckart-Young) keeps the r largest.
Torch-free except :func:`singular_values`.
"""

from __future__ import annotations

from typing import Sequence

ENERGY_SHARE = 0.9
"""The energy share the update rank is read at (Biderman et al. 2024 §4.6 read the rank needed to
explain 90% of the variance of the full fine-tuning perturbation)."""


def energies(singular_values: Sequence[float]) -> list[float]:
    """Squared singular values, largest first."""
    return sorted((float(s) ** 2 for s in singular_values), reverse=True)


def rank_for_energy(singular_values: Sequence[float], share: float = ENERGY_SHARE) -> int:
    """Smallest r whose top-r singular values hold at least `share` of the energy (0 for a zero
    matrix). share in (0, 1]."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    e = energies(singular_values)
    total = sum(e)
    if total <= 0:
        return 0
    running = 0.0
    for r, value in enumerate(e, 1):
        running += value
        if running >= share * total * (1 - 1e-12):
            return r
    return len(e)


def energy_at_rank(singular_values: Sequence[float], rank: int) -> float:
    """Share of the energy the best rank-`rank` approximation keeps, 0..1 (1.0 for a zero matrix:
    nothing is lost)."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    e = energies(singular_values)
    total = sum(e)
    if total <= 0:
        return 1.0
    return min(1.0, sum(e[:rank]) / total)


def singular_values(matrix) -> list[float]:
    """Singular values of a 2-D tensor (torch.linalg.svdvals in float32, on its device)."""
    import torch

    return torch.linalg.svdvals(matrix.detach().float()).cpu().tolist()
