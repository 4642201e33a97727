"""Problems in the TUI's words: the CLI flags in advisor messages become the names of fields."""

from __future__ import annotations

import re

# CLI flag -> what the questionnaire calls that answer.
FLAG_WORDS = {
    "--model": "the model box", "--params": "the model box", "--gpu": "the hardware list",
    "--cpu": "the hardware list", "--gpu-memory": "the card memory field",
    "--gpus": "the GPU count", "--nodes": "the machines field", "--domain": "the domain question",
    "--domain-label": "the kind-of-data list", "--forgetting": "the forgetting question",
    "--regime": "the regime list", "--seq-len": "the sequence length field",
    "--batch-size": "the batch size field", "--dataset-tokens": "the dataset size field",
    "--data": "the training data field", "--eval-data": "the eval file field",
    "--probe-data": "the probe file field", "--needs-fresh-facts": "the fresh-facts switch",
    "--method": "the method pin", "--lora-rank": "the rank pin", "--learning-rate": "the learning-rate pin",
    "--max-steps": "the max-steps pin", "--precision": "the precision pin", "--optimizer": "the optimizer pin",
    "--attention": "the attention pin", "--gradient-checkpointing": "the checkpointing pin",
    "--no-gradient-checkpointing": "the checkpointing pin", "--target-modules": "the target-modules pin",
    "--calibrated": "the calibrated switch",
}
_FLAG = re.compile(r"(?:\b(use|pass|give|try|set) )?`?(--[a-z][a-z0-9-]*)(?:[ =]([0-9][^\s,;)`]*|[a-z][a-z0-9.-]*(?=`|$|[,;)])))?`?")
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

    text = _COMMAND.sub(lambda m: "the list under the model box" if m.group(1) == "models"
                        else "the hardware list", text)
    return _FLAG.sub(flag, text)
