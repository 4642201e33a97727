"""The launcher moved to executor/distributed/launch.py; this name stays only until the command
line (executor/cli.py, moving to cli/) imports it from there."""

from .distributed.launch import dry_run_in_process, launch  # noqa: F401
