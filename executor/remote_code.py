"""Who may turn on ``trust_remote_code``: only the person at the command line.

A model directory can ship its own modeling/configuration ``.py`` files; transformers runs them
when ``trust_remote_code=True``. A plan file is data that travels (shared, downloaded, generated),
so it must never be what turns that on. The rule, applied where every executor path loads its
plan (``runner.load_plan``):

* the effective value is the ``--trust-remote-code`` flag of ``tuneplan run`` / ``compare`` /
  ``merge`` (passed on to multi-process workers), never the plan's field;
* a plan that asks for it without the flag gets a warning on stderr saying it was ignored and
  how to allow it;
* with the flag, a loud warning on stderr names the model whose code will run;
* ``validate``, ``advise`` and every ``--dry-run`` never allow it (a dry run of an FSDP plan reads
  the model's config with ``trust_remote_code=False``);
* the plan's field then records what was used: the run directory's plan.json and result.json
  carry the effective value.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tuneplan.schemas import Plan

__all__ = ["FLAG", "effective_plan", "warn_enabled", "warn_ignored"]

FLAG = "--trust-remote-code"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def warn_ignored(model: str) -> None:
    _say(
        f"warning: the plan sets trust_remote_code: true for {model}; ignored — a plan file "
        f"cannot allow a model's own Python to run. If you trust that model's code, pass "
        f"{FLAG} on the command line (run, compare, merge)."
    )


def warn_enabled(model: str) -> None:
    bar = "!" * 78
    _say(
        f"{bar}\nWARNING: {FLAG}: Python files shipped with the model {model} (modeling_*.py, "
        f"configuration_*.py) WILL RUN with your permissions. Use it only for a model "
        f"directory whose code you have read or whose source you trust.\n{bar}"
    )


def effective_plan(plan: "Plan", allowed: bool) -> "Plan":
    """The plan with ``trust_remote_code`` set to ``allowed`` (the command-line flag), warning on
    stderr when the plan asked for it without the flag, or when it is on."""
    model = plan.inputs.model.name
    if allowed:
        warn_enabled(model)
    elif plan.trust_remote_code:
        warn_ignored(model)
    if plan.trust_remote_code == allowed:
        return plan
    return plan.model_copy(update={"trust_remote_code": allowed})
