"""Helpers shared by the test files: the `tuneplan` command in this process and as a user runs it.

Import them from a test file (``from helpers import cli``); tests/ is on sys.path under pytest,
as for exec_fixtures.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from typing import Optional

TUNEPLAN = [sys.executable, "-m", "tuneplan.cli"]
"""The command line of `tuneplan` for a subprocess (the installed script's own entry point)."""


def cli(*argv: str) -> int:
    """`tuneplan ARGV...` in this process, through the root parser; returns the exit code.

    Output goes to sys.stdout / sys.stderr (read it with capsys). A usage error raises
    SystemExit(2) as argparse does; exceptions a handler does not turn into an exit code propagate.
    """
    from tuneplan.cli.main import build_parser, dispatch

    return dispatch(build_parser().parse_args(list(argv)))


def cli_captured(*argv: str) -> tuple[int, str, str]:
    """`cli(*argv)` with its stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(*argv)
    return code, out.getvalue(), err.getvalue()


def tuneplan(
    *argv: str,
    cwd=None,
    env: Optional[dict] = None,
    timeout: Optional[float] = None,
) -> subprocess.CompletedProcess:
    """`tuneplan ARGV...` in a fresh process as a user runs it; text stdout/stderr captured.

    ``env`` adds to (never replaces) this process's environment.
    """
    return subprocess.run(
        TUNEPLAN + list(argv),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        timeout=timeout,
    )


# Third-party output a CPU run prints that the user can do nothing about (executor/runlog.py routes
# it to the run's log file): one pattern per known source.
THIRD_PARTY_NOISE = {
    "bitsandbytes kernel hub": r"Failed to load CPU gemm_4bit_forward|kernels-community",
    "torch profiler (libkineto)": r"^(USDT|STAGE):|ActivityProfiler|profiler_(start|stop)",
    "python warnings": r"(Future|Deprecation|User|Runtime)Warning|warnings\.warn\(",
    "transformers progress bars": r"Loading weights|Writing model shards|it/s\]",
    "transformers/peft/accelerate loggers": r"\[(transformers|peft|accelerate|bitsandbytes|torch)[.\]]",
    "experiment trackers (--report-to)": r"^wandb: |\[(wandb|mlflow)[.\]]| mlflow\.\S+: ",
}


def noise_in(text: str) -> dict[str, list[str]]:
    """{source: matching lines} of THIRD_PARTY_NOISE found in ``text``."""
    import re

    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        for name, pattern in THIRD_PARTY_NOISE.items():
            if re.search(pattern, line):
                found.setdefault(name, []).append(line)
    return found


OUR_STDERR_LINE = (
    r"^(run \S+: (full|lora|qlora) on |evaluating (before|after) training|resuming from |"
    r"step \d+/\d+  loss |saving the (adapter|model) to |early stop at step |warning: |interrupted|tuneplan: |"
    r"compare: |sweep: |launching \d+ processes \(\w+\); run directory |\s*$)"
)
"""A line tuneplan itself prints on stderr during a non-TTY run."""
