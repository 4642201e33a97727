"""Clean logs (issue 12 item 7): third-party noise goes to the run's log file, not the terminal.

The real `tuneplan run` subprocesses that already run elsewhere carry the end-to-end checks (no
extra run here): tests/test_resume.py's SIGTERM + `--resume latest` (tiny LoRA: stderr holds only
tuneplan's own lines, one per logged step; run.log holds the profiler's USDT lines and both
attempts) and tests/test_examples_run.py's `compare` of full/LoRA/QLoRA and `run` of the example
plan on the embedded model (bitsandbytes' kernel-hub warning, transformers' FutureWarning and
progress bars: in each run.log, not on stderr). Here: our errors still reach stderr (a bad plan
exits 2 with its message), a third-party ERROR still reaches the terminal (console handlers are
raised to ERROR, not silenced), warnings and buffered records land in the file, fd 2 is restored.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

from helpers import noise_in, tuneplan
from tuneplan.executor import runlog


def test_bad_plan_still_exits_2_with_its_message(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"method": "lora", "bogus": 1}))
    r = tuneplan("run", str(plan), "--output", str(tmp_path / "runs"), "--db", str(tmp_path / "db.duckdb"))
    assert r.returncode == 2
    assert "bogus" in r.stderr and noise_in(r.stderr) == {}
    assert not (tmp_path / "runs").exists()


def test_warnings_and_third_party_logs_go_to_the_file_errors_also_to_the_terminal(tmp_path, capfd):
    before = logging.getLogger().handlers[:]
    with runlog.run_log() as log:
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("buffered before the file exists")
        log.attach(tmp_path / "run.log", "run x")
        warnings.warn("`old` is deprecated", FutureWarning, stacklevel=1)
        logging.getLogger("accelerate.utils").warning("a notice")
        logging.getLogger("peft.tuners").error("a real third-party error")
        with runlog.c_stderr_to_log():
            os.write(2, b"USDT:2026 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        print("our own line", file=sys.stderr)
    assert logging.getLogger().handlers == before  # everything undone
    text = (tmp_path / "run.log").read_text()
    for expected in (
        "buffered before the file exists",
        "FutureWarning",
        "a notice",
        "a real third-party error",
        "profiler_start",
    ):
        assert expected in text, text
    err = capfd.readouterr().err
    assert "a real third-party error" in err and "our own line" in err
    assert noise_in(err.replace("ERROR [peft.tuners] a real third-party error", "")) == {}, err


def test_c_stderr_redirect_is_a_no_op_without_an_attached_log(capfd):
    with runlog.c_stderr_to_log():
        os.write(2, b"still on the terminal\n")
    with runlog.run_log():  # never attached (a bad plan): nothing goes anywhere but the terminal
        with runlog.c_stderr_to_log():
            os.write(2, b"also on the terminal\n")
    err = capfd.readouterr().err
    assert "still on the terminal" in err and "also on the terminal" in err
