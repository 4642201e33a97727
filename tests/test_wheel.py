"""The wheel installs one top-level package, `tuneplan`, with its data files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_only_tuneplan_top_level(tmp_path) -> None:
    # built from a copy without build/: setuptools reuses build/lib, whose stale files (a module
    # since moved into a package) would hide a package missing from pyproject's list
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "runs", ".tuneplan"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tuneplan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"tuneplan"}
    for sub in ("schemas", "advisor", "executor", "tui"):
        assert f"tuneplan/{sub}/__init__.py" in names
    # every module of the source tree, sub-packages included (pyproject lists them one by one)
    source = {
        f"tuneplan/{path.relative_to(src).as_posix()}"
        for top in ("base", "schemas", "advisor", "executor", "tui", "cli")
        for path in (src / top).rglob("*.py")
    }
    assert source - set(names) == set()
    assert "tuneplan/schemas/plan.schema.json" in names
    assert "tuneplan/executor/probe.txt" in names
    assert not any(n.startswith("tuneplan/tests") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "tuneplan = tuneplan.cli.main:main" in zipfile.ZipFile(wheel).read(meta).decode()
