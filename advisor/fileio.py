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
