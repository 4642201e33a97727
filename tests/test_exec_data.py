"""Executor data: every row shape, loss masks, file formats, bad rows, eval split, probe."""

from __future__ import annotations

import json

import pytest

from exec_fixtures import tiny_tokenizer, write_jsonl
from tuneplan.base.errors import InputError
from tuneplan.executor import data as D


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _trained_text(tok, ex: D.Example) -> str:
    return tok.decode([i for i, lab in zip(ex.input_ids, ex.labels) if lab != D.IGNORE_INDEX])


def _read_one(tmp_path, row) -> D.Row:
    rows = D.read_rows(write_jsonl(tmp_path / "d.jsonl", [row])).rows
    assert len(rows) == 1
    return rows[0]


def test_text_rows_train_on_every_token(tmp_path, tok):
    row = _read_one(tmp_path, {"text": "the cat sat on the mat"})
    assert row.shape == "text"
    ex = D.encode_row(row, tok, 64)
    assert ex.labels == ex.input_ids
    assert ex.input_ids[-1] == tok.eos_token_id


def test_prompt_completion_masks_the_prompt(tmp_path, tok):
    row = _read_one(tmp_path, {"prompt": "March 5, 2021 ->", "completion": " 2021-03-05"})
    ex = D.encode_row(row, tok, 64)
    n_prompt = len(tok("March 5, 2021 ->", add_special_tokens=True)["input_ids"])
    assert ex.labels[:n_prompt] == [D.IGNORE_INDEX] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert _trained_text(tok, ex) == " 2021-03-05<|im_end|>"


def test_alpaca_rows_use_the_template_and_train_on_output(tmp_path, tok):
    row = _read_one(
        tmp_path, {"instruction": "convert the date", "input": "May 1, 2020", "output": "2020-05-01"}
    )
    assert row.shape == "alpaca"
    ex = D.encode_row(row, tok, 512)
    assert "### Input:\nMay 1, 2020" in tok.decode(ex.input_ids)
    assert _trained_text(tok, ex) == "2020-05-01<|im_end|>"
    no_input = _read_one(tmp_path, {"instruction": "say hello", "output": "hello"})
    assert "### Input" not in tok.decode(D.encode_row(no_input, tok, 512).input_ids)


def test_messages_train_on_assistant_turns_only(tmp_path, tok):
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "date?"},
        {"role": "assistant", "content": "2021-03-05"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "2021-03-06"},
    ]
    row = _read_one(tmp_path, {"messages": msgs})
    assert row.shape == "messages"
    ex = D.encode_row(row, tok, 512)
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(ex.input_ids) == full
    assert _trained_text(tok, ex) == "2021-03-05<|im_end|>\n2021-03-06<|im_end|>\n"
    assert "user" not in _trained_text(tok, ex)


def test_truncation_to_seq_len_and_dropping_rows_without_targets(tmp_path, tok):
    long_prompt = {"prompt": "the cat sat on the mat " * 20, "completion": " yes"}
    ok = {"prompt": "a", "completion": " the dog sat on the log"}
    rows = D.read_rows(write_jsonl(tmp_path / "d.jsonl", [long_prompt, ok])).rows
    exs, notes = D.encode_rows(rows, tok, 16)
    assert len(exs) == 1 and all(len(e.input_ids) <= 16 for e in exs)
    assert any("truncated" in n for n in notes) and any("dropped" in n for n in notes)


def test_json_csv_and_parquet_files(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(3)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("prompt,completion\n" + "".join(f"p{i},c{i}\n" for i in range(3)))
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_json_auto('{tmp_path / 'd.json'}')) TO '{tmp_path / 'd.parquet'}' (FORMAT parquet)"
    )
    con.close()
    for name in ("d.json", "d.csv", "d.parquet"):
        got = D.read_rows(tmp_path / name).rows
        assert [r.record for r in got] == rows, name
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    con = duckdb.connect()
    (tmp_path / "chat.json").write_text(json.dumps(chat))
    con.execute(
        f"COPY (SELECT * FROM read_json_auto('{tmp_path / 'chat.json'}')) TO '{tmp_path / 'chat.parquet'}' (FORMAT parquet)"
    )
    con.close()
    assert D.read_rows(tmp_path / "chat.parquet").rows[0].record == chat[0]


def test_bad_rows_name_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "ok", "completion": "fine"},
            "[1, 2]",
            {"prompt": "p", "completion": ""},
            "{not json",
            {"prompt": 3, "completion": "x"},
            {"foo": "bar"},
            {"messages": [{"role": "user", "content": "hi"}]},
        ],
    )
    with pytest.raises(InputError) as err:
        D.read_rows(path)
    wheres = [p.where for p in err.value.problems]
    assert wheres == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7)]
    text = str(err.value)
    assert "expected a JSON object" in text and "'completion' is empty" in text
    assert "invalid JSON" in text and "'prompt' must be a string" in text
    assert "no known row shape" in text and "no non-empty assistant message" in text
    assert all("skip_bad_rows" in p.fix for p in err.value.problems)


def test_skip_bad_rows_counts(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a b"}, "{oops", {"text": ""}, {"text": "c d"}])
    got = D.read_rows(path, skip_bad_rows=True)
    assert len(got.rows) == 2 and got.skipped == 2
    assert got.skipped_where == [f"{path}:2", f"{path}:3"]


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        D.read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported extension"):
        D.read_rows(tmp_path / "d.txt")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no usable rows"):
        D.read_rows(tmp_path / "empty.jsonl")


def test_eval_split_is_deterministic_and_disjoint(tmp_path):
    rows = D.read_rows(write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(50)])).rows
    train, held = D.split_eval(rows, 0.1, seed=7)
    again_train, again_held = D.split_eval(rows, 0.1, seed=7)
    assert len(held) == 5 and len(train) == 45
    assert [r.where for r in held] == [r.where for r in again_held]
    assert not {r.where for r in held} & {r.where for r in train}
    assert [r.where for r in D.split_eval(rows, 0.1, seed=8)[1]] != [r.where for r in held]


def test_probe_is_several_kb_of_prose_chunked_to_seq_len(tok):
    text = D.probe_text()
    assert len(text) > 5000
    exs = D.probe_examples(tok, 32, text)
    assert len(exs) > 10 and all(len(e.input_ids) <= 32 and e.labels == e.input_ids for e in exs)


def test_collate_pads_and_masks(tok):
    batch = D.collate([D.Example([1, 2, 3], [-100, 2, 3]), D.Example([4], [4])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
