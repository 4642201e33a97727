"""Training data: read JSONL / JSON / CSV / Parquet, check every row, tokenise with loss masks.

Row shapes are detected per row:
  text                         -> loss on every token (continued pre-training)
  prompt / completion          -> loss on the completion only
  instruction / input / output -> Alpaca prompt, loss on the output only
  messages [{role, content}]   -> the tokenizer's chat template, loss on assistant turns only
A malformed row is an InputError naming `file:line` (JSON arrays: `file[index]`) and the fix,
unless skip_bad_rows is set, in which case it is skipped and counted.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

from tuneplan.base.errors import InputError, Problem

IGNORE_INDEX = -100
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
ROLES = {"system", "user", "assistant", "tool"}
MAX_REPORTED_PROBLEMS = 20

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass
class Row:
    """One validated record and where it came from."""

    where: str
    """`file:line` (or `file[index]`, `file:row N`) for messages."""
    shape: str
    """text | prompt-completion | alpaca | messages."""
    record: dict
    """The normalised record (only the keys the shape uses)."""


@dataclass
class Example:
    """One tokenised training sequence."""

    input_ids: list[int]
    labels: list[int]
    """Same length as input_ids; IGNORE_INDEX where no loss is taken."""
    position_ids: Optional[list[int]] = None
    """Packed sequences: positions restarting at 0 for each example packed in; None otherwise."""


@dataclass
class ReadResult:
    """Rows read from one file."""

    rows: list[Row]
    skipped: int = 0
    """Bad rows skipped under skip_bad_rows."""
    skipped_where: list[str] = field(default_factory=list)
    """Where the first skipped rows were (for the notes)."""


# --------------------------------------------------------------------------- reading


def _raw_records(path: Path) -> Iterator[tuple[str, object, Optional[str]]]:
    """Yield (where, record, parse_error) for every row of a data file."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "jsonl":
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{n}", json.loads(line), None
                except json.JSONDecodeError as exc:
                    yield f"{path}:{n}", None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    elif kind == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            yield f"{path}:{exc.lineno}", None, f"invalid JSON ({exc.msg})"
            return
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            yield str(path), None, "a .json data file must hold a list of objects"
            return
        for i, rec in enumerate(data):
            yield f"{path}[{i}]", rec, None
    elif kind == "csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for rec in reader:
                clean = {k: v for k, v in rec.items() if k is not None and v not in (None, "")}
                if isinstance(clean.get("messages"), str):
                    try:
                        clean["messages"] = json.loads(clean["messages"])
                    except json.JSONDecodeError:
                        pass  # reported by the shape check
                yield f"{path}:{reader.line_num}", clean, None
    elif kind == "parquet":
        import duckdb

        con = duckdb.connect()
        try:
            cur = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
            cols = [d[0] for d in cur.description]
            for i, values in enumerate(cur.fetchall(), 1):
                yield f"{path}:row {i}", {c: v for c, v in zip(cols, values) if v is not None}, None
        finally:
            con.close()


def _check_record(rec: object) -> tuple[Optional[str], Optional[dict], str]:
    """Return (shape, normalised record, problem). problem is "" when the row is good."""
    if not isinstance(rec, dict):
        return None, None, f"expected a JSON object, got {type(rec).__name__}"

    def _str(key: str, *, required: bool = True, nonempty: bool = True) -> str:
        val = rec.get(key)
        if val is None and not required:
            return ""
        if not isinstance(val, str):
            raise ValueError(f"'{key}' must be a string, got {type(val).__name__}")
        if nonempty and not val.strip():
            raise ValueError(f"'{key}' is empty")
        return val

    try:
        if "messages" in rec:
            msgs = rec["messages"]
            if not isinstance(msgs, list) or not msgs:
                raise ValueError("'messages' must be a non-empty list of {role, content} objects")
            out = []
            for i, m in enumerate(msgs):
                if (
                    not isinstance(m, dict)
                    or not isinstance(m.get("role"), str)
                    or not isinstance(m.get("content"), str)
                ):
                    raise ValueError(f"messages[{i}] must be an object with string 'role' and 'content'")
                if m["role"] not in ROLES:
                    raise ValueError(f"messages[{i}].role {m['role']!r} is not one of {sorted(ROLES)}")
                out.append({"role": m["role"], "content": m["content"]})
            order = _role_order_problem([m["role"] for m in out])
            if order:
                raise ValueError(order)
            if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
                raise ValueError("no non-empty assistant message: nothing to learn from this row")
            return "messages", {"messages": out}, ""
        if "prompt" in rec or "completion" in rec:
            return "prompt-completion", {"prompt": _str("prompt"), "completion": _str("completion")}, ""
        if "instruction" in rec or "output" in rec:
            return (
                "alpaca",
                {
                    "instruction": _str("instruction"),
                    "input": _str("input", required=False, nonempty=False),
                    "output": _str("output"),
                },
                "",
            )
        if "text" in rec:
            return "text", {"text": _str("text")}, ""
    except ValueError as exc:
        return None, None, str(exc)
    keys = ", ".join(sorted(map(str, rec))) or "none"
    return None, None, f"no known row shape (keys: {keys})"


_NEXT_ROLES = {
    None: ("user",),
    "user": ("assistant",),
    "assistant": ("user", "tool"),
    "tool": ("tool", "assistant"),
}


def _role_order_problem(roles: list[str]) -> str:
    """Chat turns in order: an optional system message first, then a user turn, then user and
    assistant alternating (tool results only after an assistant turn, answered by the
    assistant). "" when the order is right."""
    prev = None
    for i, role in enumerate(roles):
        if role == "system" and i == 0:
            continue
        if role == "system":
            return f"messages[{i}] is a system message after the first turn: only messages[0] may be system"
        allowed = _NEXT_ROLES[prev]
        if role not in allowed:
            return (
                f"messages[{i}].role is {role!r} where {' or '.join(map(repr, allowed))} is expected: turns "
                "start with the user (after an optional system message) and alternate user/assistant"
            )
        prev = role
    return ""


_SHAPE_FIX = (
    "each row must be an object with 'text', or 'prompt'+'completion', or "
    "'instruction'(+'input')+'output', or 'messages' [{role, content}] with an assistant turn; "
    "fix the row or set data.skip_bad_rows=true to skip bad rows"
)


def check_data_path(path: str | Path, field_name: str) -> Path:
    """Check that a data file exists and has a supported extension; return it as a Path."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError.one(
            field_name, f"data file {p} does not exist", "pass an existing file (--data PATH)"
        )
    if p.suffix.lower() not in SUFFIXES:
        raise InputError.one(
            field_name,
            f"{p} has an unsupported extension {p.suffix!r}",
            f"use one of {', '.join(sorted(SUFFIXES))}",
        )
    return p


def read_rows(
    path: str | Path, *, skip_bad_rows: bool = False, field_name: str = "data.train_path"
) -> ReadResult:
    """Read and validate every row of a data file.

    Raises InputError listing bad rows (`file:line`, what is wrong, the fix) unless skip_bad_rows,
    in which case they are counted in ReadResult.skipped. An empty file is always an error.
    """
    p = check_data_path(path, field_name)
    result = ReadResult(rows=[])
    problems: list[Problem] = []
    try:
        for where, rec, parse_error in _raw_records(p):
            shape, norm, problem = (None, None, parse_error) if parse_error else _check_record(rec)
            if problem:
                if skip_bad_rows:
                    result.skipped += 1
                    if len(result.skipped_where) < 5:
                        result.skipped_where.append(where)
                elif len(problems) < MAX_REPORTED_PROBLEMS:
                    problems.append(Problem(where, problem, _SHAPE_FIX))
                else:
                    break
                continue
            result.rows.append(Row(where, shape, norm))
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise InputError.one(str(p), f"cannot read the file: {exc}", "save it as UTF-8 text") from None
    except Exception as exc:  # duckdb / parquet errors
        raise InputError.one(
            str(p), f"cannot read the file: {type(exc).__name__}: {exc}", "check the file is valid Parquet"
        ) from None
    if problems:
        raise InputError(problems)
    if not result.rows:
        raise InputError.one(field_name, f"{p} has no usable rows", "add training rows to the file")
    return result


# --------------------------------------------------------------------------- tokenising


def _render_chat(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _messages_segments(tokenizer, messages: list[dict], where: str) -> list[tuple[str, bool]]:
    """Split a chat rendering into (text, trained) segments: assistant replies trained, rest not."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError.one(
            where,
            "chat 'messages' rows need a tokenizer with a chat template; this model has none",
            "use prompt/completion rows, or a model whose tokenizer defines chat_template",
        )
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant":
            before = _render_chat(tokenizer, messages[:i], True) if i else _render_chat(tokenizer, [], True)
            after = _render_chat(tokenizer, messages[: i + 1], False)
            if not before.startswith(done) or not after.startswith(before):
                raise InputError.one(
                    where,
                    "the chat template does not render turns as prefixes of each other",
                    "use prompt/completion rows for this model",
                )
            segments += [(before[len(done) :], False), (after[len(before) :], True)]
            done = after
    full = _render_chat(tokenizer, messages, False)
    if full.startswith(done) and len(full) > len(done):
        segments.append((full[len(done) :], False))
    return [(text, trained) for text, trained in segments if text]


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_row(row: Row, tokenizer, seq_len: int) -> Example:
    """Tokenise one row into input_ids and labels (IGNORE_INDEX on prompt tokens), truncated."""
    rec = row.record
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if row.shape == "text":
        ids = _ids(tokenizer, rec["text"], special=True) + eos
        labels = list(ids)
    elif row.shape == "messages":
        ids, labels = [], []
        for text, trained in _messages_segments(tokenizer, rec["messages"], row.where):
            seg = _ids(tokenizer, text)
            ids += seg
            labels += seg if trained else [IGNORE_INDEX] * len(seg)
    else:
        if row.shape == "alpaca":
            template = ALPACA_WITH_INPUT if rec["input"].strip() else ALPACA_NO_INPUT
            prompt, completion = template.format(**rec), rec["output"]
        else:
            prompt, completion = rec["prompt"], rec["completion"]
        p_ids = _ids(tokenizer, prompt, special=True)
        c_ids = _ids(tokenizer, completion) + eos
        ids = p_ids + c_ids
        labels = [IGNORE_INDEX] * len(p_ids) + c_ids
    return Example(ids[:seq_len], labels[:seq_len])


def encode_rows(rows: list[Row], tokenizer, seq_len: int) -> tuple[list[Example], list[str]]:
    """Tokenise rows; drop those with no trained token left after truncation. Returns notes."""
    out: list[Example] = []
    truncated = dropped = 0
    for row in rows:
        full = encode_row(row, tokenizer, 1 << 30)
        ex = Example(full.input_ids[:seq_len], full.labels[:seq_len])
        truncated += len(full.input_ids) > seq_len
        if all(lab == IGNORE_INDEX for lab in ex.labels[1:]):
            dropped += 1
            continue
        out.append(ex)
    notes = []
    if truncated:
        notes.append(f"{truncated} of {len(rows)} rows truncated to seq_len={seq_len}")
    if dropped:
        notes.append(f"{dropped} rows dropped: no trained tokens within seq_len={seq_len}")
    return out, notes


def split_eval(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Carve a deterministic (seeded) eval share off the training rows: (train, eval)."""
    if len(rows) < 2:
        raise InputError.one(
            "data.train_path",
            f"only {len(rows)} usable row(s): cannot hold out an eval split",
            "add rows, or pass data.eval_path",
        )
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


# --------------------------------------------------------------------------- forgetting probe


def probe_text(path: str | Path | None = None) -> str:
    """The general-English forgetting probe: the user's file, or the built-in executor/probe.txt."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError.one(
                "data.probe_path", f"probe file {p} does not exist", "pass an existing text file"
            )
        return p.read_text(encoding="utf-8")
    return resources.files("tuneplan.executor").joinpath("probe.txt").read_text(encoding="utf-8")


def probe_examples(tokenizer, seq_len: int, text: str) -> list[Example]:
    """Chunk the probe text into non-overlapping seq_len windows with loss on every token."""
    ids = _ids(tokenizer, text)
    out = []
    for start in range(0, len(ids), seq_len):
        chunk = ids[start : start + seq_len]
        if len(chunk) >= 2:
            out.append(Example(chunk, list(chunk)))
    return out


# --------------------------------------------------------------------------- batches


@dataclass
class Datasets:
    """Everything a run trains and evaluates on."""

    train: list[Example]
    eval: list[Example]
    probe: list[Example]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)


def pack(examples: list[Example], seq_len: int) -> list[Example]:
    """Greedily concatenate examples (in order) into sequences of at most seq_len tokens.

    Position ids restart at 0 for each example; the first token of every example after the first
    in a sequence gets IGNORE_INDEX, so the loss never predicts one example from the one before:
    the trained tokens are exactly those of the unpacked examples (labels[1:] of each)."""
    out: list[Example] = []
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for e in examples:
        if ids and len(ids) + len(e.input_ids) > seq_len:
            out.append(Example(ids, labels, pos))
            ids, labels, pos = [], [], []
        first = IGNORE_INDEX if ids else e.labels[0]
        ids = ids + e.input_ids
        labels = labels + [first] + e.labels[1:]
        pos = pos + list(range(len(e.input_ids)))
    if ids:
        out.append(Example(ids, labels, pos))
    return out


def collate(examples: list[Example], pad_id: int):
    """Right-pad a list of examples into input_ids, attention_mask and labels tensors (and
    position_ids for packed examples)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    packed = any(e.position_ids is not None for e in examples)
    positions = torch.zeros((len(examples), width), dtype=torch.long) if packed else None
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
        if positions is not None:
            positions[i, :n] = torch.tensor(e.position_ids if e.position_ids is not None else range(n))
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if positions is not None:
        out["position_ids"] = positions
    return out


def micro_batches(
    examples: list[Example], batch_size: int, seed: int, start: int = 0
) -> Iterator[list[Example]]:
    """Endless stream of micro-batches: a fresh seeded shuffle each epoch, last partial batch kept.

    ``start`` skips that many micro-batches (a resumed run continues where its checkpoint was)."""
    per_epoch = -(-len(examples) // batch_size)
    epoch, skip = divmod(start, per_epoch)
    while True:
        order = list(range(len(examples)))
        random.Random(seed + epoch).shuffle(order)
        for b in range(skip, per_epoch):
            yield [examples[i] for i in order[b * batch_size : (b + 1) * batch_size]]
        skip = 0
        epoch += 1
