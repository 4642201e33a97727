"""advise --data: token lengths -> seq_len, dataset tokens, rows -> steps; torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tuneplan.advisor import advise, catalog
from tuneplan.cli.main import main
from tuneplan.advisor.datastats import find_tokenizer, propose_seq_len, read_data_stats
from tuneplan.advisor.inputs import Answers, build_inputs

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "train.jsonl"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_embedded_tokenizer_counts_the_example_rows() -> None:
    model = catalog.get_model(SMOL)
    tok = find_tokenizer(model)
    assert tok.exact and "SmolLM2" in tok.source
    # ChatML special tokens stay whole; a date is digits and dashes.
    assert tok("<|im_start|>user\n")["input_ids"][0] == 1
    ds = read_data_stats(str(TRAIN), model)
    assert (ds.rows, ds.train_rows, ds.max_tokens, ds.proposed_seq_len) == (400, 360, 66, 72)
    assert ds.truncated_share == 0.0 and ds.shapes == ["messages"]
    assert 0 < ds.trained_tokens < ds.tokens


def test_percentile_rounding_and_context_cap() -> None:
    lengths = sorted([10] * 98 + [300, 5000])
    assert propose_seq_len(lengths, 4096) == (300, 304)  # p99 = 99th of 100 = 300
    assert propose_seq_len([3], 4096) == (3, 16)  # schema minimum
    assert propose_seq_len(lengths[:98] + [5000, 5000], 4096) == (5000, 4096)


def test_truncation_share_and_approximation(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached tokenizer for Llama
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": "q " * 10, "completion": "a " * 10}] * 90 + [
        {"prompt": "x" * 4000, "completion": "y"}
    ] * 10
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = Answers(
        model="Llama-3.1-8B",
        gpu="A100-80GB",
        data=str(data),
        task={"domain_distance": "near", "forgetting_tolerance": "medium"},
    )
    plan = advise(build_inputs(a))
    ds = plan.inputs.data_stats
    assert not ds.exact and "bytes / 4" in ds.tokenizer
    assert (
        ds.proposed_seq_len == plan.training.seq_len == 1008
    )  # ceil(4000/4) + 1 + EOS = 1002, rounded up to 1008
    assert any("approximate" in w for w in plan.warnings)
    a.task["seq_len"] = 64
    plan = advise(build_inputs(a))
    assert plan.inputs.data_stats.truncated_share == 0.1
    assert any("truncates 10% of the rows" in w for w in plan.warnings)


def test_bad_row_is_reported_with_file_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"nope": 1}\n')
    rc = main(
        [
            "advise",
            "--model",
            SMOL,
            "--cpu",
            "--domain",
            "near",
            "--forgetting",
            "medium",
            "--data",
            str(bad),
            "--domain-label",
            "nonsense",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:2" in err and "--domain-label" in err  # every problem at once


def test_advise_with_data_loads_no_heavy_module(tmp_path) -> None:
    code = (
        "import sys, json\n"
        "from tuneplan.cli.main import main\n"
        f"rc = main(['advise', '--model', {SMOL!r}, '--cpu', '--domain', 'near', '--forgetting', 'medium', "
        f"'--data', {str(TRAIN)!r}, '--json', '-o', {str(tmp_path / 'p.json')!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'transformers', 'peft', 'accelerate', 'duckdb', 'textual'})\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stderr.strip().splitlines()[-1]) == {"rc": 0, "heavy": []}
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["training"]["seq_len"] == 72 and plan["training"]["planned_steps"] == 180
    assert plan["inputs"]["task"]["dataset_tokens"] == plan["inputs"]["data_stats"]["trained_tokens"]
    assert plan["data"]["train_path"] == str(TRAIN)
