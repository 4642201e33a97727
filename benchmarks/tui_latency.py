"""The TUI's first paint next to `tuneplan advise` in the same run, and keypress-to-plan latency.

Goal (issue 15): first paint within 2x `advise`; the plan follows the last key within ~100 ms
(the debounce is 80 ms; the advisor then runs off the UI loop). Prints figures; asserts nothing.

- first paint: wall time from spawning `tuneplan tui` in a 160x50 pseudo-terminal (a real
  terminal driver, hardware detection included) to the first question's text reaching the
  terminal, median of N; against the wall time of a fresh `tuneplan advise --json`.
- keypress-to-plan: in one app (Pilot, headless), a key typed in the batch-size field until the
  plan for the new value is on screen, median and worst of N keys.
Run: .venv/bin/python benchmarks/tui_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ADVISE = [
    sys.executable,
    "-m",
    "tuneplan.cli",
    "advise",
    "--model",
    "Llama-3.1-8B",
    "--gpu",
    "A100-80GB",
    "--domain",
    "near",
    "--forgetting",
    "medium",
    "--json",
]
TUI = [sys.executable, "-m", "tuneplan.cli", "tui", "--out"]
FIRST_SCREEN = b"Where will it train?"


def timed_advise(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(ADVISE, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        out.append(time.perf_counter() - t0)
    return out


def timed_paint(runs: int, tmp: str) -> list[float]:
    """Wall seconds from spawning `tuneplan tui` in a 160x50 pseudo-terminal to the first
    question's text arriving on the terminal (what a user sees first); then ctrl+q."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    out = []
    for _ in range(runs):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = dict(ENV, TERM="xterm-256color", COLORTERM="truecolor", TUNEPLAN_DB=f"{tmp}/r.duckdb")
        t0 = time.perf_counter()
        p = subprocess.Popen(
            TUI + [f"{tmp}/p.json"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            cwd=tmp,
        )
        os.close(slave)
        seen = b""
        painted = None
        end = t0 + 60
        while painted is None and time.perf_counter() < end:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
                if FIRST_SCREEN in seen:
                    painted = time.perf_counter() - t0
        os.write(master, b"\x11")  # ctrl+q
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        os.close(master)
        if painted is None:
            raise SystemExit("the TUI never painted its first question")
        out.append(painted)
    return out


async def keypress_to_plan(keys: int, tmp: str) -> list[float]:
    from tuneplan.advisor import catalog
    from tuneplan.tui.app import TunePlanApp

    app = TunePlanApp(
        out=f"{tmp}/p.json", db=f"{tmp}/r.duckdb", detect=lambda: catalog.gpu_hardware("A100-80GB")
    )
    out = []
    async with app.run_test(size=(160, 50)) as pilot:
        while not app.fully_mounted:
            await pilot.pause(0.02)
        for wid, value in (
            ("model", "meta-llama/Llama-3.1-8B"),
            ("domain", "near"),
            ("forgetting", "medium"),
            ("batch", "8"),
        ):
            app.query_one(f"#{wid}").value = value
        while app.pending or app.plan is None:
            await pilot.pause(0.02)
        box = app.query_one("#batch")
        box.focus()
        await pilot.pause()
        await pilot.press("end")
        for i in range(keys):
            key = "6" if i % 2 == 0 else "backspace"  # 8 -> 86 -> 8 -> 86 ...
            want = 86 if i % 2 == 0 else 8
            t0 = time.perf_counter()
            await pilot.press(key)
            end = time.perf_counter() + 10
            while app.pending or app.plan.inputs.task.batch_size != want:
                if time.perf_counter() > end:
                    raise SystemExit(f"no plan for batch {want}: field {box.value!r}")
                await asyncio.sleep(0.002)
            out.append(time.perf_counter() - t0)
            await pilot.pause(0.05)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keys", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        timed_advise(1)
        timed_paint(1, tmp)  # warm the page cache and the .pyc files
        adv, paint = [], []
        for _ in range(args.runs):  # interleaved, so machine load hits both alike
            adv += timed_advise(1)
            paint += timed_paint(1, tmp)
        lat = asyncio.run(keypress_to_plan(args.keys, tmp))
    a, p = statistics.median(adv), statistics.median(paint)
    print(f"{'measure':44s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    print(f"{'tuneplan advise --json (fresh process)':44s} {a:9.3f} {min(adv):7.3f} {max(adv):7.3f}")
    print(f"{'tuneplan tui: first paint (fresh process)':44s} {p:9.3f} {min(paint):7.3f} {max(paint):7.3f}")
    print(
        f"{'keypress -> plan on screen (80 ms debounce)':44s} {statistics.median(lat):9.3f} "
        f"{min(lat):7.3f} {max(lat):7.3f}"
    )
    print(
        f"\nfirst paint = {p / a:.2f}x advise (goal <= 2x: {'PASS' if p <= 2 * a else 'FAIL'}); "
        f"keypress-to-plan median {statistics.median(lat) * 1000:.0f} ms over {len(lat)} keys "
        f"(goal ~100 ms)"
    )


if __name__ == "__main__":
    main()
