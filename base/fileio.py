"""Atomic text writes shared by every command that writes a file a user or CI relies on.

Stdlib only. A crash or Ctrl-C mid-write leaves the previous file (or none), never half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: "str | Path", text: str, *, fsync: bool = False) -> Path:
    """Write `text` to `path` through a temporary file in the same directory and a rename.

    The file gets the usual permissions (0666 less the umask, not mkstemp's 0600); `fsync=True`
    also flushes it to disk before the rename (result.json, which must survive a power cut).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


MAX_JSON_DEPTH = 64
"""Deepest JSON nesting read from a user's file (json.loads would recurse out of the stack)."""


def _depth(text: str) -> int:
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def read_json_file(path: Path, what: str, fix: str) -> tuple[object, str]:
    """Parse a JSON file; InputError (never a traceback) for a directory, unreadable bytes, invalid
    UTF-8, bad syntax or nesting deeper than MAX_JSON_DEPTH. Returns (value, text)."""
    import json

    from .errors import InputError

    if path.is_dir():
        raise InputError.one(str(path), f"is a directory, not a {what}", fix)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError.one(str(path), f"cannot read the {what}: {exc.strerror or exc}", fix) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError.one(
            f"{path}:{line}", f"not UTF-8 text (byte {exc.start}: {exc.reason})", "save the file as UTF-8"
        ) from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise InputError.one(str(path), f"JSON nested deeper than {MAX_JSON_DEPTH} levels", fix)
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        raise InputError.one(
            f"{path}:{exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})", "fix the JSON syntax"
        ) from None
    except (RecursionError, ValueError) as exc:
        raise InputError.one(str(path), f"invalid JSON: {exc}", fix) from None
