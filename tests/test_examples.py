"""The committed example plans are exactly what the advisor produces today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_plans():
    spec = importlib.util.spec_from_file_location("make_plans", ROOT / "examples" / "make_plans.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_plans_are_current() -> None:
    for path, text in _make_plans().expected_files().items():
        assert path.exists(), f"missing {path}; run examples/make_plans.py"
        assert path.read_text() == text, f"{path.name} is stale; run examples/make_plans.py"


def test_example_plans_cover_three_methods() -> None:
    import json

    methods = {
        json.loads((ROOT / "examples" / "plans" / f"{m}.json").read_text())["method"]
        for m in ("full", "lora", "qlora")
    }
    assert methods == {"full", "lora", "qlora"}
    main = json.loads((ROOT / "examples" / "plan.json").read_text())
    assert main["inputs"]["model"]["name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert main["inputs"]["hardware"]["kind"] == "cpu" and main["data"]["train_path"]
