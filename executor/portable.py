"""Make saved artefacts mean the same on another machine.

PEFT writes `base_model_name_or_path` into adapter_config.json from the directory the base model
was loaded from: for a Hub model that is this machine's cache snapshot
(~/.cache/huggingface/hub/models--org--name/snapshots/<sha>), which does not exist elsewhere, so
`PeftModel.from_pretrained` / `AutoPeftModelForCausalLM` cannot find the base on another machine.
The plan's model name (a Hub id, or a path as `advisor.catalog.portable_path` stores it) is what a
user passes to load it, so that is what the artefact records. Stdlib only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _rewrite(path: Path, key: str, value: str) -> bool:
    """Set `key` in the JSON object at `path` to `value` when it is an absolute path; True if changed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    old = data.get(key) if isinstance(data, dict) else None
    if not isinstance(old, str) or not old or not os.path.isabs(os.path.expanduser(old)) or old == value:
        return False
    data[key] = value
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return True


def make_portable(artifact_dir: Path, model_name: str) -> list[str]:
    """Replace absolute base-model paths in a saved adapter or model with the plan's model name.

    Returns the files changed. A model named by an absolute path (a plan written before names were
    made portable) is left as it is: there is nothing more portable to write.
    """
    if os.path.isabs(os.path.expanduser(model_name)):
        return []
    changed = []
    for fname, key in (("adapter_config.json", "base_model_name_or_path"), ("config.json", "_name_or_path")):
        f = Path(artifact_dir) / fname
        if f.is_file() and _rewrite(f, key, model_name):
            changed.append(fname)
    return changed
