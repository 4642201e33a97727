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
    for pkg in ("base", "schemas", "advisor"):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = _top_level_imports(path) - allowed
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


def _module_level_imports(path: Path) -> set[str]:
    """Full names of the modules a file imports at module level (relative imports resolved
    within tuneplan.cli, the only package this is used on)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module if node.level == 0 else f"tuneplan.cli.{node.module or ''}".rstrip("."))
    return names


def test_cli_modules_load_only_argparse_stdlib_and_the_base_layer() -> None:
    """Every command group's module is imported to build the parser, so at module level each may
    import only the standard library, tuneplan.base and its siblings: the advisor, the executor,
    the TUI, rich and DuckDB load inside the handler of the command that needs them."""
    offenders = {}
    for path in sorted((ROOT / "cli").glob("*.py")):
        bad = sorted(
            n
            for n in _module_level_imports(path)
            if n.split(".")[0] not in sys.stdlib_module_names
            and not n.startswith(("tuneplan.base", "tuneplan.cli"))
        )
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, offenders


def test_advise_path_loads_no_heavy_module(tmp_path) -> None:
    code = (
        "import sys, json\n"
        "from tuneplan.cli.main import main\n"
        f"rc = main(['advise', '--model', 'Llama-3.1-8B', '--gpu', 'A100-80GB', '--domain', 'near', "
        f"'--forgetting', 'medium', '--json', '-o', {str(tmp_path / 'p.json')!r}])\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}
    assert json.loads((tmp_path / "p.json").read_text())["method"] == "lora"


# Deferred imports (inside functions) the advisor is allowed, each with why. Anything else found
# anywhere in schemas/ or advisor/ -- module level, inside a function, or via importlib -- fails.
DEFERRED_ALLOWED = {
    # `--model DIR` cross-checks parameter counts on the meta device when torch is installed.
    ("advisor/catalog/exact_counts.py", "torch"),
    ("advisor/catalog/exact_counts.py", "transformers"),
    # The people's view of a plan (a table with bars); --json never loads it.
    ("advisor/render.py", "rich"),
    # `advise --data` only (advisor/datastats.py): the model's tokenizer through `tokenizers` (Rust,
    # no torch), the embedded model's vocabulary read once from its GGUF with `gguf`, chat templates
    # rendered with jinja2 as transformers does, and the executor's stdlib-only row reader/encoder
    # and cache paths so the lengths counted are the ones trained on. tests/test_datastats.py runs
    # `advise --data` and checks that no torch/transformers/duckdb/textual module was loaded.
    ("advisor/datastats.py", "tokenizers"),
    ("advisor/datastats.py", "gguf"),
    ("advisor/datastats.py", "jinja2"),
    ("advisor/datastats.py", "tuneplan.executor"),
    # `--model ORG/NAME` outside the catalog only: config.json from the Hugging Face cache, or that
    # one file fetched (advisor/hub.py). Catalog ids and local directories never import it;
    # tests/test_hub_models.py checks that for a catalog id.
    ("advisor/hub.py", "huggingface_hub"),
}


def _every_import(path: Path) -> set[str]:
    """Every imported module name in the file, at any depth, plus importlib.import_module("x")."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _allowed_import(rel: str, name: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("pydantic", "__future__"):
        return True
    if name.startswith(("tuneplan.base", "tuneplan.schemas", "tuneplan.advisor")):
        return True
    return any(rel == f and (name == m or name.startswith(m + ".")) for f, m in DEFERRED_ALLOWED)


def test_no_hidden_imports_in_schemas_and_advisor() -> None:
    offenders = {}
    for pkg in ("base", "schemas", "advisor"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            bad = sorted(n for n in _every_import(path) if not _allowed_import(rel, n))
            if bad:
                offenders[rel] = bad
    assert not offenders, (
        f"imports outside stdlib + pydantic (add to DEFERRED_ALLOWED with a reason): {offenders}"
    )


def test_hidden_import_scan_sees_function_level_imports(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    import torch\n    import importlib\n    importlib.import_module('duckdb')\n"
    )
    assert {"torch", "duckdb"} <= _every_import(src)
    assert not _allowed_import("advisor/x.py", "torch")
