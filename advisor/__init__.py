"""tuneplan.advisor — rules-based advice: hardware, model and task in; a validated plan out.

Imports only the standard library and pydantic (layering rule): `tuneplan advise` must answer in
well under half a second, with no torch, transformers, duckdb or textual on its path.
"""

from .engine import advise, run_rules
from .rules import RULES, RULES_BY_ID

__all__ = ["advise", "run_rules", "RULES", "RULES_BY_ID"]
