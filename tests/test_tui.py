"""The `tuneplan tui` app: live plan, validation at the field, save, run/cancel, runs tab, SQL box,
snapshots, and a real terminal (tmux)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tuneplan.advisor import catalog
from tuneplan.schemas import MeasuredMemory, RunResult, load_plan_dict
from tuneplan.tui.app import TunePlanApp

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[1]

FAKE_RUN = textwrap.dedent(r'''
    """Stands in for `tuneplan run PLAN --output DIR ...`: mode "quick" writes 5 steps and
    succeeds; "slow" writes a step every 0.1 s until SIGINT, then records "interrupted"."""
    import json, os, signal, sys, time

    mode, plan, *rest = sys.argv[1:]
    out = rest[rest.index("--output") + 1]
    run_id = "20250101-000000-fake01"
    d = os.path.join(out, run_id)
    os.makedirs(d)
    with open(os.path.join(d, "argv.json"), "w") as f:
        json.dump([plan, *rest], f)
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    print(f"run {run_id}: lora on tiny (cpu), 5 steps, 8 train / 2 eval sequences",
          file=sys.stderr, flush=True)
    step = 0
    with open(os.path.join(d, "metrics.jsonl"), "a") as f:
        while not stop and not (mode == "quick" and step == 5):
            step += 1
            f.write(json.dumps({"step": step, "loss": 3.0 / step, "lr": 1e-4, "grad_norm": 1.0,
                                "tokens": 100, "elapsed_s": 0.1 * step}) + "\n")
            f.flush()
            time.sleep(0.1 if mode == "slow" else 0.02)
    status = "interrupted" if stop else "succeeded"
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump({"run_id": run_id, "status": status, "steps": step, "eval_loss_before": 3.0,
                   "eval_loss_after": 2.0, "forgetting_loss_before": 4.0,
                   "forgetting_loss_after": 4.1,
                   "error": "KeyboardInterrupt: interrupted" if stop else None}, f)
    sys.exit(130 if stop else 0)
''')


def a100():
    """Fixed detected hardware so nothing depends on this machine."""
    return catalog.gpu_hardware("A100-80GB")


def make_app(tmp_path: Path, **kw) -> TunePlanApp:
    kw.setdefault("db", str(tmp_path / "runs.duckdb"))
    return TunePlanApp(out=tmp_path / "plan.json", detect=a100, **kw)


def text(app: TunePlanApp, wid: str) -> str:
    """Plain text of a Static."""
    return str(app.query_one(f"#{wid}").content)


async def mounted(app, pilot, timeout: float = 15.0) -> None:
    """Wait for the parts mounted just after the first paint (the task questions, the tabs)."""
    end = time.monotonic() + timeout
    while not app.fully_mounted:
        if time.monotonic() > end:
            raise AssertionError("the app never finished mounting")
        await pilot.pause(0.02)


async def settle(app, pilot, timeout: float = 15.0) -> None:
    """Wait until the debounced recompute has run and its plan is shown."""
    await mounted(app, pilot, timeout)
    await pilot.pause()
    end = time.monotonic() + timeout
    while app.pending or app._timer is not None:
        if time.monotonic() > end:
            raise AssertionError("the plan never settled")
        await pilot.pause(0.02)


async def fill(app, pilot, **values) -> None:
    """Set fields by id (underscores for dashes) and let the app react."""
    await mounted(app, pilot)
    generation, changed = app.plan_generation, False
    for wid, value in values.items():
        widget = app.query_one("#" + wid.replace("_", "-"))
        changed |= widget.value != value
        widget.value = value
    await settle(app, pilot)
    end = time.monotonic() + 15
    while changed and app.plan_generation == generation:  # the change has reached the app
        assert time.monotonic() < end, "the plan never followed the change"
        await pilot.pause(0.02)
        await settle(app, pilot)


async def answer_llama(app, pilot) -> None:
    await fill(app, pilot, model="meta-llama/Llama-3.1-8B", domain="near", forgetting="medium")


async def wait_for(pilot, cond, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


# ---------------------------------------------------------------------------- plan pane


async def test_keyboard_answers_give_lora_then_small_card_gives_qlora(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await settle(app, pilot)
        assert "Answer the questions" in text(app, "rec-status")
        assert app.focused.id == "hw"  # the first question, top of the form
        await pilot.press("tab", "tab", "tab")  # GPUs, machines, then the model box (top to bottom)
        assert app.focused.id == "model"
        await pilot.press(*"llama 3.1")
        await pilot.press("down", "down", "enter")  # pick the 2nd match from the catalog list
        assert app.query_one("#model").value == "meta-llama/Llama-3.1-70B"
        await fill(app, pilot, model="")
        app.query_one("#model").focus()
        await pilot.press(*"llama 8b", "enter")  # enter takes the only match
        assert app.query_one("#model").value == "meta-llama/Llama-3.1-8B"
        assert app.focused.id == "domain"
        await pilot.press("enter", "n", "enter", "tab", "tab", "enter", "m", "enter")
        await settle(app, pilot)
        assert app.problems == []
        assert text(app, "rec-method").startswith("Method: LoRA")
        bars = text(app, "rec-bars")
        assert "of 80.0 GiB" in bars and "▶ LoRA" in bars
        assert "Rules that fired" in text(app, "rec-rules")
        before = app.plan

        await fill(app, pilot, hw="NVIDIA GeForce RTX 3060 12GB")
        assert app.plan is not before
        assert text(app, "rec-method").startswith("Method: QLoRA")
        assert "of 12.0 GiB" in text(app, "rec-bars")
        assert "▶ QLoRA" in text(app, "rec-bars")


async def test_small_terminal_and_custom_memory(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await mounted(app, pilot)
        await answer_llama(app, pilot)
        assert text(app, "rec-method").startswith("Method: LoRA")
        assert not app.query_one("#gpu-mem").parent.display
        await fill(app, pilot, hw="custom")
        assert app.query_one("#gpu-mem").parent.display
        assert "card memory" in text(app, "rec-status")  # asked for, plan kept meanwhile
        await fill(app, pilot, gpu_mem="16")
        assert "of 16.0 GiB" in text(app, "rec-bars")
        await fill(app, pilot, hw="cpu", gpus="1")
        assert app.plan.inputs.hardware.kind == "cpu"


async def test_bad_answers_show_at_their_field_and_freeze_the_plan(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await answer_llama(app, pilot)
        good = app.plan
        await fill(app, pilot, seq_len="5")
        assert "greater than or equal to 16" in text(app, "err-seq-len")
        assert app.query_one("#err-seq-len").display
        assert app.query_one("#seq-len").has_class("bad")
        assert app.plan is good  # no update while invalid
        assert "Fix 1 problem" in text(app, "rec-status")

        await fill(app, pilot, seq_len="2048", rank="0")
        assert not app.query_one("#seq-len").has_class("bad")
        assert "greater than or equal to 1" in text(app, "err-rank")
        assert app.query_one("#rank").has_class("bad")

        await fill(app, pilot, rank="", model="no-such-model-xyz")
        assert "unknown model" in text(app, "err-model") or "no model" in text(app, "err-model")
        assert app.plan is good

        await fill(app, pilot, model="7B")  # a parameter count works too
        assert app.problems == []
        assert app.plan.inputs.model.origin == "guess"


def test_no_torch_after_mounting(tmp_path):
    """Mount the app in a fresh interpreter: no torch or transformers on the TUI path."""
    code = textwrap.dedent(f"""
        import asyncio, sys
        from tuneplan.advisor import catalog
        from tuneplan.tui.app import TunePlanApp
        async def main():
            app = TunePlanApp(out={str(tmp_path / "p.json")!r}, db={str(tmp_path / "r.duckdb")!r},
                              detect=lambda: catalog.gpu_hardware("A100-80GB"))
            async with app.run_test(size=(100, 40)) as pilot:
                while not app.fully_mounted: await pilot.pause(0.02)
                app.query_one("#model").value = "meta-llama/Llama-3.1-8B"
                app.query_one("#domain").value = "near"
                app.query_one("#forgetting").value = "medium"
                for _ in range(200):
                    await pilot.pause(0.05)
                    if app.plan is not None and not app.pending:
                        break
                assert app.plan is not None
                await pilot.press("f4")  # the Runs tab opens DuckDB: still no torch
            print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_module_imports_only_argparse():
    code = (
        "import sys, argparse; import tuneplan.cli.tui as c; "
        "p = argparse.ArgumentParser(); s = p.add_subparsers(); c.add_tui(s); "
        "a = p.parse_args(['tui', '--db', 'x.duckdb']); "
        "print(a.out, a.db, 'textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["plan.json", "x.duckdb", "False"], out.stderr


# ---------------------------------------------------------------------------- save


async def test_ctrl_s_writes_a_valid_plan_or_says_what_to_fix(tmp_path):
    app = make_app(tmp_path)
    out = tmp_path / "plan.json"
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not out.exists()
        assert any("Fix first" in n.message for n in app._notifications)
        assert "not answered yet" in text(app, "err-domain")  # shown everywhere after a save try

        data = tmp_path / "train.jsonl"
        data.write_text('{"prompt": "a", "completion": "b"}\n')
        await answer_llama(app, pilot)
        await fill(app, pilot, data=str(data))
        await pilot.press("ctrl+s")
        await pilot.pause()
        saved = json.loads(out.read_text())
        assert saved["$schema"].startswith("https://")
        plan = load_plan_dict(saved)
        assert plan.method == "lora"
        assert plan.data.train_path == str(data)
        assert any(str(out) in n.message for n in app._notifications)


# ---------------------------------------------------------------------------- run / cancel


def fake_command(tmp_path: Path, mode: str):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    return lambda: [sys.executable, str(script), mode]


async def start_run(app, pilot, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    await answer_llama(app, pilot)
    await fill(app, pilot, data=str(data), max_steps="5")
    await pilot.press("ctrl+r")


async def test_run_tails_metrics_and_shows_the_outcome(tmp_path):
    app = make_app(tmp_path, command=fake_command(tmp_path, "quick"))
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await start_run(app, pilot, tmp_path)
        assert app.query_one("#tabs").active == "run"
        await wait_for(pilot, lambda: "succeeded" in text(app, "run-status"))
        assert app.run_pane.losses == [3.0 / s for s in range(1, 6)]
        assert app.query_one("#run-loss").data == app.run_pane.losses
        assert "step 5/5" in text(app, "run-metrics") and "500 tokens" in text(app, "run-metrics")
        assert "eval loss 3.000→2.000" in text(app, "run-status")
        run_dir = tmp_path / "runs" / "20250101-000000-fake01"
        argv = json.loads((run_dir / "argv.json").read_text())
        assert argv[0] == str((tmp_path / "plan.json").resolve())
        assert argv[argv.index("--db") + 1] == str(tmp_path / "runs.duckdb")
        assert argv[argv.index("--max-steps") + 1] == "5"
        assert argv[argv.index("--data") + 1] == str(tmp_path / "train.jsonl")
        assert app.query_one("#cancel").disabled


async def test_cancel_sends_sigint_and_the_run_is_interrupted(tmp_path):
    app = make_app(tmp_path, command=fake_command(tmp_path, "slow"))
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await start_run(app, pilot, tmp_path)
        await wait_for(pilot, lambda: len(app.run_pane.losses) >= 2)
        assert not app.query_one("#cancel").disabled
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.run_pane.proc is None)
        status = text(app, "run-status")
        assert "cancelled at your request" in status and "recorded as interrupted" in status
        assert "KeyboardInterrupt" not in status  # a cancel is not shown as an error
        assert any(n.message == "Run cancelled" for n in app._notifications)


async def test_run_needs_training_data(tmp_path):
    app = make_app(tmp_path, command=fake_command(tmp_path, "quick"))
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await answer_llama(app, pilot)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.run_pane.proc is None
        assert "needs training data" in text(app, "err-data")
        assert app.focused.id == "data"


# ---------------------------------------------------------------------------- runs tab


def recorded_db(tmp_path: Path) -> Path:
    """A run database with two hand-made runs."""
    from tuneplan.executor import ledger as store

    db = tmp_path / "runs.duckdb"
    for i, (method, status, measured, pred) in enumerate(
        [("lora", "succeeded", 2 * GIB, int(2.2 * GIB)), ("qlora", "interrupted", GIB, int(0.9 * GIB))]
    ):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        store.record(
            db,
            RunResult(
                run_id=f"20250101-00000{i}-abc00{i}",
                status=status,
                plan_hash="0" * 16,
                method=method,
                model="HuggingFaceTB/SmolLM2-135M",
                hardware="cpu (2 cores)",
                started_at=f"2025-01-01T00:00:0{i}+00:00",
                finished_at=f"2025-01-01T00:01:0{i}+00:00",
                run_dir=str(run_dir),
                predicted_peak_bytes=pred,
                measured=MeasuredMemory(device_kind="cpu", peak_bytes=measured),
                eval_loss_before=3.2,
                eval_loss_after=2.5 + i,
                forgetting_loss_before=4.0,
                forgetting_loss_after=4.2,
                steps=10,
                tokens=5000,
                tokens_per_second=1234.5 + i,
                wall_seconds=60.0,
            ),
        )
    return db


async def test_runs_tab_lists_runs_and_sql_box_is_read_only(tmp_path):
    db = recorded_db(tmp_path)
    app = make_app(tmp_path, db=str(db))
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await pilot.press("f4")
        assert app.query_one("#tabs").active == "runs"
        table = app.query_one("#runs-table")
        assert table.row_count == 2
        newest = [c.plain for c in table.get_row_at(0)]
        assert newest == [
            "20250101-000001-abc001",
            "interrupted",
            "QLoRA",
            "0.90",
            "1.00",
            "-10.0%",
            "3.200→3.500",
            "4.000→4.200",
            "1,236",
            "SmolLM2-135M",
        ]
        assert table.get_row_at(1)[5].plain == "+10.0%"
        assert "2 runs in" in text(app, "runs-status")

        sql = app.query_one("#sql")
        sql.focus()
        sql.text = ""
        await pilot.press(*"SELECT method,", "enter", *"  steps FROM runs", "enter", *"ORDER BY method")
        assert sql.text == "SELECT method,\n  steps FROM runs\nORDER BY method"  # enter adds a line
        await pilot.press("ctrl+o")
        await pilot.pause()
        result = app.query_one("#sql-table")
        assert result.row_count == 2 and [c.plain for c in result.get_row_at(0)] == ["lora", "10"]
        assert "2 rows" in text(app, "sql-status")

        sql.text = "INSERT INTO runs (run_id) VALUES ('x')"
        await pilot.press("f9")
        await pilot.pause()
        assert "refused" in text(app, "sql-status")
        assert app.query_one("#sql-table").row_count == 0
        from tuneplan.executor import ledger as store

        assert len(store.list_runs(db)) == 2

        await pilot.press("ctrl+up")  # history: the INSERT, then the SELECT
        assert sql.text.startswith("INSERT")
        await pilot.press("ctrl+up")
        assert sql.text.startswith("SELECT method,")
        await pilot.press("ctrl+down", "ctrl+down")
        assert sql.text == ""


async def test_runs_tab_without_database_says_so(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await mounted(app, pilot)
        await pilot.press("f4", "f5")
        assert "No runs recorded yet" in text(app, "runs-status")
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ != "HelpScreen"


# ---------------------------------------------------------------------------- snapshots


def _steady(app) -> None:
    for widget in app.query("Input"):
        widget.cursor_blink = False


def frozen_advise(inputs, **kw):
    """The real plan with every number and sentence the advisor's authors may retune pinned, so
    the snapshot checks the TUI's layout, not today's estimator."""
    from tuneplan.advisor.engine import advise
    from tuneplan.schemas import Decision, LoraSettings, Training

    plan = advise(inputs)
    assert plan.method == "lora"
    sizes = {"full": int(98.5 * GIB), "lora": int(45.5 * GIB), "qlora": int(35.9 * GIB)}
    usable = plan.memory.usable_bytes
    return plan.model_copy(
        update={
            "feasible": True,
            "warnings": ["Pinned numbers for the snapshot; the real advisor's warnings appear here."],
            "ways_out": [],
            "training": Training(
                learning_rate=2e-4,
                per_device_batch_size=4,
                gradient_accumulation_steps=2,
                num_epochs=3,
                seq_len=4096,
                gradient_checkpointing=True,
            ),
            "lora": LoraSettings(
                rank=16,
                alpha=32,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
            "memory": plan.memory.model_copy(update={"per_device_bytes": sizes["lora"], "fits": True}),
            "alternatives": [
                a.model_copy(
                    update={
                        "per_device_bytes": sizes[a.method],
                        "fits": sizes[a.method] <= usable,
                        "reason": f"{a.method}: pinned reason",
                    }
                )
                for a in plan.alternatives
            ],
            "decisions": [
                Decision(
                    rule="TP010",
                    name="target-all-linear",
                    source="test",
                    message="LoRA targets all linear layers.",
                ),
                Decision(
                    rule="TP011", name="rank-by-distance", source="test", message="LoRA rank 16: near domain."
                ),
            ],
        }
    )


@pytest.mark.parametrize("size", [(160, 50), (80, 24)], ids=["160x50", "80x24"])
def test_snapshot_plan_screen(snap_compare, tmp_path, monkeypatch, size):
    monkeypatch.setattr("tuneplan.tui.advising.advise", frozen_advise)

    async def run_before(pilot):
        app = pilot.app
        _steady(app)
        await answer_llama(app, pilot)
        await fill(app, pilot, seq_len="4096")
        await pilot.pause()

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(160, 50), (80, 24)], ids=["160x50", "80x24"])
def test_snapshot_runs_tab(snap_compare, tmp_path, monkeypatch, size):
    recorded_db(tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative --db keeps the absolute tmp path off the screen

    async def run_before(pilot):
        _steady(pilot.app)
        await mounted(pilot.app, pilot)
        await pilot.press("f4")
        await pilot.pause()

    app = TunePlanApp(out="plan.json", db="runs.duckdb", detect=a100)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


# ---------------------------------------------------------------------------- real terminal


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_real_terminal_with_tmux(tmp_path):
    session = f"tuneplan-test-{int(time.time() * 1000) % 10**8}"
    out = tmp_path / "p.json"
    cmd = (
        f"cd {tmp_path} && TUNEPLAN_DB={tmp_path / 'r.duckdb'} "
        f"{sys.executable} -m tuneplan.cli tui --out {out}"
    )

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", session)

    def wait_screen(needle: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = screen()
            if needle in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not on screen:\n{screen()}")

    def keys(*k: str) -> None:
        for key in k:
            tmux("send-keys", "-t", session, key)
            time.sleep(0.4)

    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", cmd)
    try:
        wait_screen("Answer the questions")
        keys("Tab", "Tab", "Tab")  # from the hardware question (focused first) to the model box
        keys("llama 8b")  # ranked search: words in any order
        wait_screen("1 match")  # a search in progress is a hint, not an error
        keys("Enter")  # enter takes the only match and moves on to the domain question
        keys("Enter", "n", "Enter", "Tab", "Tab", "Enter", "m", "Enter")
        shown = wait_screen("Method:")
        assert "Peak memory per device" in shown
        keys("C-s")
        wait_screen("plan saved")
        plan = load_plan_dict(json.loads(out.read_text()))
        assert plan.inputs.model.name == "meta-llama/Llama-3.1-8B"
        assert (
            f"Method: {'LoRA' if plan.method == 'lora' else 'QLoRA' if plan.method == 'qlora' else 'Full FT'}"
            in screen()
        )
        keys("C-q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
