"""The rule anatomy shared by every group: Outcome, Rule, the @rule decorator and the formatters.

A rule takes the Draft and returns an Outcome (it fired: what to change, what to warn) or None (it
did not fire). Rules never mutate; the engine applies outcomes in the registry's order
(tuneplan.advisor.rules.RULES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..draft import Draft

GIB = 1024**3


@dataclass(frozen=True)
class Outcome:
    """What a rule decided: a message for people, field updates and warnings for the plan."""

    message: str
    updates: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    ways_out: tuple[str, ...] = ()


RuleFn = Callable[[Draft], Optional[Outcome]]


@dataclass(frozen=True)
class Rule:
    """A registered rule: id, kebab-case name, the source it rests on, and the function."""

    id: str
    name: str
    source: str
    fn: RuleFn

    def __call__(self, d: Draft) -> Optional[Outcome]:
        return self.fn(d)

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


def rule(id: str, name: str, source: str) -> Callable[[RuleFn], Rule]:
    """Attach an id, a name and a source to a rule function (registration is explicit: RULES)."""

    def wrap(fn: RuleFn) -> Rule:
        return Rule(id=id, name=name, source=source, fn=fn)

    return wrap


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def size_phrase(d: Draft) -> str:
    return f"{d.billions:.2f}B" if d.billions < 10 else f"{d.billions:.0f}B"


def method_word(m: str) -> str:
    return {"full": "full fine-tuning", "lora": "16-bit LoRA", "qlora": "QLoRA (4-bit NF4 base)"}[m]
