"""Suite-wide settings: keep real-model CPU runs short and never touch the network."""

from __future__ import annotations

import os

# Eval/probe losses over one batch each: the before/after comparison stays real but cheap.
os.environ.setdefault("TUNEPLAN_EVAL_BATCHES", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
