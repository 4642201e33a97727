"""Several processes for one run (`tuneplan run --num-processes N`).

- :mod:`.layout`: the launcher side, torch-free: rank/world from the environment, the layout of a
  launch and the accelerate / FSDP / DeepSpeed config generated for it;
- :mod:`.launch`: the launcher: checks, writes ``accelerate_config.yaml`` and ``launch.json``,
  starts the workers (torchrun on CPU, ``accelerate launch`` on GPUs), waits, records what rank 0
  could not;
- :mod:`.worker`: one rank (``python -m tuneplan.executor.distributed.worker``): joins the group and
  runs the same stages as one process, with its context passed explicitly;
- :mod:`.context`: the context the stages are given, :class:`SingleProcess` or :class:`DistContext`.
"""

from .context import DistContext, SingleProcess, init_worker, read_errors, shard, write_error
from .layout import (
    ENV_FAIL_RANK,
    ENV_CONSOLE,
    ENV_OFFLOAD,
    ENV_RUN_DIR,
    ENV_RUN_ID,
    ENV_STRATEGY,
    STRATEGIES,
    Layout,
    accelerate_config,
    deepspeed_section,
    dump_yaml,
    env_local_rank,
    env_rank,
    env_world_size,
    fsdp_section,
    layout_for,
    transformer_layer_classes,
)

__all__ = [
    "DistContext",
    "SingleProcess",
    "init_worker",
    "read_errors",
    "shard",
    "write_error",
    "ENV_FAIL_RANK",
    "ENV_CONSOLE",
    "ENV_OFFLOAD",
    "ENV_RUN_DIR",
    "ENV_RUN_ID",
    "ENV_STRATEGY",
    "STRATEGIES",
    "Layout",
    "accelerate_config",
    "deepspeed_section",
    "dump_yaml",
    "env_local_rank",
    "env_rank",
    "env_world_size",
    "fsdp_section",
    "layout_for",
    "transformer_layer_classes",
]
