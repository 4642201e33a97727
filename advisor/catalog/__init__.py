"""The catalogs: known models and GPUs as data, config.json models and --params guesses.

Pure at import time: stdlib + pydantic only. Detecting this machine's hardware is not a catalog
concern: it lives in tuneplan.advisor.hardware.

  models.py        the model catalog (public config.json values), list_models / get_model
  configs.py       config.json -> ModelSpec (catalog rows, local directories, Hub configs)
  exact_counts.py  `--model DIR` only: exact counts on the meta device when torch is installed
  guesses.py       --params: a Llama-shaped guess for a bare parameter count
  gpus.py          the GPU catalog and GPUHardware for named or custom cards
"""

from __future__ import annotations

from .configs import MODEL_TYPES, model_from_config_dict, model_from_dir, portable_path
from .exact_counts import param_kind
from .gpus import GPURow, custom_gpu, get_gpu, gpu_hardware, list_gpus, lookup_gpu
from .guesses import guess_model, parse_params
from .models import ModelRow, get_model, list_models

__all__ = [
    "GPURow",
    "MODEL_TYPES",
    "ModelRow",
    "custom_gpu",
    "get_gpu",
    "get_model",
    "gpu_hardware",
    "guess_model",
    "list_gpus",
    "list_models",
    "lookup_gpu",
    "model_from_config_dict",
    "model_from_dir",
    "param_kind",
    "parse_params",
    "portable_path",
]
