"""Problems in the TUI's words: the CLI flags in advisor messages become the names of fields."""

from __future__ import annotations

import re

from .fields import QUESTIONS

# CLI flag -> what the questionnaire calls that answer (from the one table of questions).
FLAG_WORDS = {flag: q.said for q in QUESTIONS for flag in (q.flag, *q.aliases) if flag.startswith("--")}
_FLAG = re.compile(
    r"(?:\b(use|pass|give|try|set) )?`?(--[a-z][a-z0-9-]*)(?:[ =]([0-9][^\s,;)`]*|[a-z][a-z0-9.-]*(?=`|$|[,;)])))?`?"
)
_COMMAND = re.compile(r"`?tuneplan (models|gpus)`?")


def tui_words(text: str) -> str:
    """Rewrite "use --gpus 1" as "set the GPU count to 1", "see `tuneplan models`" as the list."""

    def flag(m: re.Match) -> str:
        verb, name, value = m.group(1), m.group(2), m.group(3)
        words = FLAG_WORDS.get(name)
        if words is None:
            return m.group(0)
        if verb:
            return f"set {words} to {value}" if value else f"set {words}"
        return f"{words} = {value}" if value else words

    text = _COMMAND.sub(
        lambda m: "the list under the model box" if m.group(1) == "models" else "the hardware list", text
    )
    return _FLAG.sub(flag, text)
