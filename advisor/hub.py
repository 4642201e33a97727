"""`--model ORG/NAME` for a model outside the catalog: its config.json from the Hugging Face cache,
or that one small file fetched from the Hub when online. Never weights.

huggingface_hub is imported lazily, only on this path (catalog models and local directories never
load it, so `tuneplan advise` stays fast). Offline mode is read from the environment at call time
(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, as huggingface_hub.constants reads them), and so is the
cache location (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub), because
huggingface_hub itself reads them once at import. Tokens for gated repositories come from where
huggingface_hub looks by default (HF_TOKEN, then the file `hf auth login` writes).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

from tuneplan.schemas import ModelSpec

from tuneplan.base.errors import InputError

# A Hub model id: "org/name" (letters, digits, "-", "_", "."), as huggingface_hub validates it.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TRUE = {"1", "on", "yes", "true"}


def looks_like_repo_id(name: str) -> bool:
    """Whether `name` has the shape of a Hub id (and is not a path)."""
    return bool(_REPO_ID.match(name)) and ".." not in name


def offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as huggingface_hub reads them, but now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def hub_cache_dir() -> str:
    """The Hub cache directory, by huggingface_hub's rules, read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(os.environ["HUGGINGFACE_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def _local_fix(repo_id: str) -> str:
    return (
        f"pass a local directory that holds its config.json (--model ./{repo_id.split('/')[-1]}), "
        f"or fetch that one file first where there is internet: "
        f"`hf download {repo_id} config.json` (or unset HF_HUB_OFFLINE)"
    )


def config_path(repo_id: str, revision: Optional[str] = None) -> tuple[Path, str]:
    """(path of the cached config.json, how it was found); InputError on --model when unavailable."""
    try:
        import huggingface_hub as hh
    except ImportError:  # pragma: no cover - a dependency of transformers, installed with tuneplan
        raise InputError.one(
            "--model",
            f"{repo_id!r} is not in the catalog and huggingface_hub is not installed to find its config.json",
            _local_fix(repo_id),
        ) from None
    cache = hub_cache_dir()
    cached = hh.try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return Path(cached), "Hugging Face cache"
    if offline():
        raise InputError.one(
            "--model",
            f"{repo_id!r} is not in the catalog, and its config.json is not "
            f"in the Hugging Face cache ({cache}) while HF_HUB_OFFLINE is set",
            _local_fix(repo_id),
        )
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:  # exactly one small file; the token is huggingface_hub's default (HF_TOKEN / saved login)
        path = hh.hf_hub_download(repo_id, "config.json", cache_dir=cache, revision=revision)
    except GatedRepoError:
        raise InputError.one(
            "--model",
            f"{repo_id} is a gated repository and this machine's token may not read it",
            "accept its licence on huggingface.co, then "
            "`hf auth login` or set HF_TOKEN; or pass a local directory",
        ) from None
    except RepositoryNotFoundError:
        raise InputError.one(
            "--model",
            f"unknown model {repo_id!r}: not in the catalog and not a "
            "repository on the Hugging Face Hub (or private without a token)",
            "check the id on huggingface.co, run `tuneplan models` for the catalog, "
            "or pass a local directory",
        ) from None
    except EntryNotFoundError:
        raise InputError.one(
            "--model",
            f"{repo_id} has no config.json (not a transformers model?)",
            "pass a local directory with the model's config.json",
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise InputError.one(
            "--model",
            f"{repo_id!r} is not in the catalog, not cached, and its "
            f"config.json could not be fetched ({type(exc).__name__})",
            _local_fix(repo_id),
        ) from None
    return Path(path), "fetched from the Hugging Face Hub (config.json only)"


def model_from_hub(repo_id: str, revision: Optional[str] = None) -> ModelSpec:
    """The ModelSpec of a Hub model from its config.json (origin "config", named by its Hub id so
    `tuneplan run` finds it in the cache on any machine)."""
    from .catalog import model_from_config_dict

    path, how = config_path(repo_id, revision)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError.one(
            "--model",
            f"{repo_id}: its cached config.json cannot be read ({exc})",
            f"delete {path} and fetch it again",
        ) from None
    if not isinstance(cfg, dict):
        raise InputError.one(
            "--model", f"{repo_id}: config.json is not a JSON object", f"delete {path} and fetch it again"
        )
    commit = path.parent.name if path.parent.parent.name == "snapshots" else None
    source = f"huggingface.co/{repo_id} config.json" + (f" at {commit[:12]}" if commit else "") + f" ({how})"
    return model_from_config_dict(cfg, repo_id, origin="config", source=source)
