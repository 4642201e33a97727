"""Ranked model search for the model box: every word of the query must match, best first.

A word matches a name as a substring (ignoring case and the separators - _ . / and spaces), or,
failing that, as a subsequence scored by Textual's fuzzy matcher (so "lama" still finds Llama).
Ranking: substring matches before fuzzy ones; matches at the start of a name part (after /, - or
_) before ones inside it; then shorter names (the base model before its variants); then by name.
"""

from __future__ import annotations

import re
from typing import Iterable

_SEP = re.compile(r"[-_./\s]+")


def _squash(text: str) -> str:
    return _SEP.sub("", text.lower())


def _starts(name: str, word: str) -> bool:
    parts = [p for p in _SEP.split(name.lower()) if p]
    joined = ["".join(parts[i:]) for i in range(len(parts))]
    return any(j.startswith(word) for j in joined)


def rank(query: str, names: Iterable[str]) -> list[str]:
    """Names matching every word of `query`, best first; all names (in order) for an empty query."""
    names = list(names)
    words = [_squash(w) for w in query.split() if _squash(w)]
    if not words:
        return names
    from textual.fuzzy import Matcher

    scored = []
    for name in names:
        flat = _squash(name)
        score = 0.0
        for w in words:
            if w in flat:
                score += 10.0 + (5.0 if _starts(name, w) else 0.0)
            else:
                fuzzy = Matcher(w).match(flat)
                if fuzzy <= 0:
                    break
                score += fuzzy
        else:
            scored.append((-score, len(name), name))
    return [name for _, _, name in sorted(scored)]
