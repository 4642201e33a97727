"""Layering: schemas/ and advisor/ import only the standard library and pydantic at module level,
and the advise path never loads torch, transformers, duckdb or textual."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "duckdb", "textual", "yaml")


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:  # module level only: lazy imports inside functions are allowed
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_schemas_and_advisor_import_only_stdlib_and_pydantic() -> None:
    allowed = set(sys.stdlib_module_names) | {"pydantic", "tuneplan", "__future__"}
    offenders = {}
    for pkg in ("schemas", "advisor"):
        for path in (ROOT / pkg).glob("*.py"):
            bad = _top_level_imports(path) - allowed
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


def test_advise_path_loads_no_heavy_module(tmp_path) -> None:
    code = (
        "import sys, json\n"
        "from tuneplan.advisor.cli import main\n"
        f"rc = main(['advise', '--model', 'Llama-3.1-8B', '--gpu', 'A100-80GB', '--domain', 'near', "
        f"'--forgetting', 'medium', '--json', '-o', {str(tmp_path / 'p.json')!r}])\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}
    assert json.loads((tmp_path / "p.json").read_text())["method"] == "lora"
