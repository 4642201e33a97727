"""`tuneplan advise --check plan.json` (issue 13): a lockfile check for committed plans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tuneplan.cli.main import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "plan.json"
    shutil.copy(EXAMPLES / "plans" / "lora.json", dst)
    return dst


def test_current_plan_passes(tmp_path, capsys) -> None:
    assert main(["advise", "--check", str(_copy(tmp_path))]) == 0
    assert "current" in capsys.readouterr().out


def test_stale_plan_exits_1_with_a_readable_diff(tmp_path, capsys) -> None:
    path = _copy(tmp_path)
    plan = json.loads(path.read_text())
    good_lr, good_rank = plan["training"]["learning_rate"], plan["lora"]["rank"]
    plan["training"]["learning_rate"] = 0.123
    plan["lora"]["rank"] = 64
    plan["lora"]["target_modules"] = ["q_proj", "v_proj"]
    plan["memory"]["per_device_bytes"] = int(plan["memory"]["per_device_bytes"] * 0.5)
    path.write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["advise", "--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "STALE" in out and "4 settings differ" in out
    assert "training.learning_rate" in out and f"0.123  ->  {good_lr}" in out
    assert "lora.rank" in out and f"64  ->  {good_rank}" in out
    assert "lora.target_modules" in out and "q_proj,v_proj  ->  q_proj,k_proj" in out
    assert "memory.per_device_bytes" in out and "+100.0%" in out
    assert "--update" in out


def test_memory_within_tolerance_is_current(tmp_path, capsys) -> None:
    path = _copy(tmp_path)
    plan = json.loads(path.read_text())
    plan["memory"]["per_device_bytes"] = int(plan["memory"]["per_device_bytes"] * 0.97)
    path.write_text(json.dumps(plan))
    assert main(["advise", "--check", str(path)]) == 0
    assert main(["advise", "--check", str(path), "--tolerance", "0.01"]) == 1


def test_update_rewrites_and_keeps_data(tmp_path, capsys) -> None:
    path = _copy(tmp_path)
    plan = json.loads(path.read_text())
    plan["training"]["learning_rate"] = 0.123
    path.write_text(json.dumps(plan))
    assert main(["advise", "--check", str(path), "--update"]) == 0
    fresh = json.loads(path.read_text())
    assert fresh["training"]["learning_rate"] != 0.123
    assert fresh["data"] == plan["data"] and fresh["$schema"] == plan["$schema"]
    assert main(["advise", "--check", str(path)]) == 0


def test_unreadable_plan_exits_2(tmp_path, capsys) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["advise", "--check", str(tmp_path / "bad.json")]) == 2
    assert main(["advise", "--check", str(tmp_path / "missing.json")]) == 2
    assert "--check" in capsys.readouterr().err
