"""A fixed-seed fuzzer over plan.json and data files through `validate` and `run --dry-run`:
never a traceback, exit codes only 0, 2 or 3, nothing created. Hand-rolled mutator (seed 9,
CASES cases): drop a key, retype a value, flip a byte, truncate, nest deeply, break data rows."""

from __future__ import annotations

import json
import random

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
import tuneplan.cli.main as cli

SEED, CASES = 9, 120
VALUES = [None, -1, 0, 1e308, "x", "", [], {}, True, 2**70, float("nan"), "99.0", ["q_proj", "nope"]]


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


def _mutate(rng, raw: dict, text: str) -> bytes:
    kind = rng.randrange(5)
    if kind == 0 or kind == 1:
        path = rng.choice(list(_paths(raw)))
        node = raw
        for k in path[:-1]:
            node = node[k]
        if kind == 0:
            del node[path[-1]]
        else:
            node[path[-1]] = rng.choice(VALUES)
        return json.dumps(raw).encode()
    data = bytearray(text.encode())
    if kind == 2:
        i = rng.randrange(len(data))
        data[i] = rng.randrange(256)
        return bytes(data)
    if kind == 3:
        return bytes(data[: rng.randrange(len(data))])
    return b"[" * 5000 + b"]" * 5000


def test_fuzz_plans_and_data(tmp_path, capsys):
    tiny = tiny_llama_dir(tmp_path)
    rng = random.Random(SEED)
    counts = {"cases": 0, "tracebacks": 0, "wrong_exit": 0, "created": 0}
    base_rows = overfit_rows(8)
    for case in range(CASES):
        rows = [dict(r) for r in base_rows]
        if rng.random() < 0.3:
            rows[rng.randrange(len(rows))] = rng.choice(
                [{"messages": [{"role": "assistant", "content": "a"}]}, {"prompt": 3}, "not json {", {}]
            )
        train = tmp_path / f"train{case}.jsonl"
        write_jsonl(train, rows)
        raw = json.loads(make_plan("lora", str(tiny), train_path=str(train)).model_dump_json())
        plan = tmp_path / f"plan{case}.json"
        plan.write_bytes(_mutate(rng, raw, json.dumps(raw)))
        out = tmp_path / f"runs{case}"
        for argv in (
            ["validate", str(plan)],
            ["run", str(plan), "--dry-run", "--output", str(out), "--db", str(tmp_path / f"db{case}.duckdb")],
        ):
            counts["cases"] += 1
            try:
                rc = cli.main(argv)
            except SystemExit as exc:
                rc = exc.code
            except BaseException:  # noqa: BLE001 - the thing under test
                counts["tracebacks"] += 1
                continue
            err = capsys.readouterr().err
            if "Traceback" in err:
                counts["tracebacks"] += 1
            if rc not in (0, 2, 3):
                counts["wrong_exit"] += 1
        if out.exists() or (tmp_path / f"db{case}.duckdb").exists():
            counts["created"] += 1
    print(f"fuzz: {counts}")
    assert counts == {"cases": 2 * CASES, "tracebacks": 0, "wrong_exit": 0, "created": 0}
