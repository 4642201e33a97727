"""issue 15: the TUI driven as a new user would — focus, keys under load, honest bars, data as
text, infeasible plans, data-driven sequence length, search, words, numbers, the run view,
palette and footer."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

from rich.color import Color, ColorSystem
from textual.widgets import RichLog

from test_tui import fill, make_app, mounted, recorded_db, settle, text

from tuneplan.advisor import catalog
from tuneplan.schemas import MeasuredMemory, RunResult
from tuneplan.tui.planview import memory_bars
from tuneplan.tui.runpane import RunPane

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "train.jsonl"
EVAL = ROOT / "examples" / "data" / "eval.jsonl"


def _luminance(c) -> float:
    def f(v):
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * f(c.red) + 0.7152 * f(c.green) + 0.0722 * f(c.blue)


async def burst(app, pilot, keys) -> None:
    """Keys arriving all at once, as a terminal delivers a fast typist's or a paste's: every
    event is queued before the app handles the first (Pilot.press waits after each key)."""
    from textual import events

    for key in keys:
        char = key if len(key) == 1 else None
        app.post_message(events.Key(key, char))
    await pilot.pause()


def contrast(a, b) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def in_256(c):
    return Color.from_triplet(c).downgrade(ColorSystem.EIGHT_BIT).get_truecolor()


async def test_focus_is_visible_in_truecolor_and_256_colours_and_runs_top_to_bottom(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await settle(app, pilot)
        assert app.focused.id == "hw"  # the first question, not the model box below it
        order = [app.focused.id]
        for _ in range(11):
            await pilot.press("tab")
            order.append(app.focused.id)
        assert order == [
            "hw",
            "gpus",
            "nodes",
            "model",
            "domain",
            "domain-label",
            "forgetting",
            "regime",
            "data",
            "eval-data",
            "probe-data",
            "seq-len",
        ]
        ys = [app.query_one(f"#{w}").region.y for w in order[:8]]
        assert ys == sorted(ys)  # on screen, top to bottom
        for wid in ("hw", "gpus", "model", "domain"):
            widget = app.query_one(f"#{wid}")
            target = widget.query_one("SelectCurrent") if wid in ("hw", "domain") else widget
            widget.focus()
            await pilot.pause()
            focused = target.rich_style.bgcolor.get_truecolor()
            assert target.styles.border_left[0] != ""  # an accent edge, not only a tint
            app.query_one("#batch").focus()
            await pilot.pause()
            plain = target.rich_style.bgcolor.get_truecolor()
            assert contrast(focused, plain) >= 2.0, (wid, focused, plain)
            assert contrast(in_256(focused), in_256(plain)) >= 2.0, (wid, "256 colours")


async def test_burst_of_keys_under_a_slow_advisor_lands_in_the_right_fields(tmp_path, monkeypatch):
    from tuneplan.advisor.engine import advise as real_advise

    def slow_advise(inputs, **kw):
        time.sleep(0.4)  # a loaded machine
        return real_advise(inputs, **kw)

    monkeypatch.setattr("tuneplan.tui.advising.advise", slow_advise)
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        for wid, value in (
            ("model", "meta-llama/Llama-3.1-8B"),
            ("domain", "near"),
            ("forgetting", "medium"),
        ):
            app.query_one(f"#{wid}").value = value
        await settle(app, pilot)
        before = app.recompute_count
        app.query_one("#seq-len").focus()
        t0 = time.monotonic()
        await burst(app, pilot, [*"4096", "tab", *"16", "tab", *"5e7"])
        typing = time.monotonic() - t0
        await settle(app, pilot)
        assert app.query_one("#seq-len").value == "4096"
        assert app.query_one("#batch").value == "16"
        assert app.query_one("#dataset-tokens").value == "5e7"
        assert typing < 0.4 * 10  # the UI loop never waited for the advisor once per key
        assert app.recompute_count - before <= 3  # debounced: not one per key (10 keys)
        t = app.plan.training
        assert (t.seq_len, app.plan.inputs.task.batch_size, app.plan.inputs.task.dataset_tokens) == (
            4096,
            16,
            50_000_000,
        )


async def test_recompute_is_debounced_and_follows_the_last_change(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await settle(app, pilot)
        before = app.recompute_count
        app.query_one("#model").focus()
        await burst(app, pilot, list("meta-llama/Llama-3.1-8B"))  # 23 keys
        await settle(app, pilot)
        assert app.recompute_count - before <= 2
        assert app.plan is None or app.plan.inputs.model.name == "meta-llama/Llama-3.1-8B"
        await pilot.press("enter")  # the exact name: the list is hidden, enter moves on
        app.query_one("#domain").value = "near"
        app.query_one("#forgetting").value = "medium"
        start = time.monotonic()
        await settle(app, pilot)
        assert time.monotonic() - start < 2.0
        assert app.plan.inputs.model.name == "meta-llama/Llama-3.1-8B"


async def test_bars_share_one_scale_with_the_usable_line(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        await mounted(app, pilot)
        await fill(
            app,
            pilot,
            model="meta-llama/Llama-3.1-8B",
            domain="near",
            forgetting="medium",
            hw="NVIDIA GeForce RTX 3060 12GB",
        )
        plan = app.plan
        lines = memory_bars(plan, 24).plain.splitlines()
        assert "usable" in lines[0] and "of 12.0 GiB" in lines[0]
        rows = lines[1:]
        assert len(rows) == 3 and len({len(r) for r in rows}) == 1  # aligned columns
        assert rows[2].startswith("▶ QLoRA") and rows[0].startswith("  Full FT")
        assert len({r.index("┃") for r in rows}) == 1  # the usable line: same column on every bar
        from tuneplan.advisor.render import method_rows

        sizes = [m["bytes"] for m in method_rows(plan)]
        scale = max([plan.memory.device_capacity_bytes] + sizes)
        assert scale == max(sizes)  # here the largest method sets the scale, not the card
        for row, size in zip(rows, sizes):
            cells = row[10 : 10 + 24]
            filled = cells.count("█")
            u = cells.index("┃")
            expect = round(24 * size / scale)
            assert filled + (1 if u < expect else 0) == expect, (row, expect)
        assert rows[0][10:34].count("█") > 2 * rows[2][10:34].count("█")  # 124 vs 35 GiB differ


async def test_data_is_shown_as_text_never_markup(tmp_path):
    from tuneplan.executor import ledger as store

    db = recorded_db(tmp_path)
    run_dir = tmp_path / "run9"
    run_dir.mkdir()
    store.record(
        db,
        RunResult(
            run_id="20250101-000009-abc009",
            status="failed",
            plan_hash="0" * 16,
            method="lora",
            model="[red]hi :x:",
            hardware="cpu",
            started_at="2025-01-01T00:00:09+00:00",
            finished_at="2025-01-01T00:01:09+00:00",
            run_dir=str(run_dir),
            predicted_peak_bytes=1,
            measured=MeasuredMemory(device_kind="cpu", peak_bytes=1),
            steps=1,
            tokens=1,
            wall_seconds=1.0,
            error="[bold]boom[/bold] :x:",
        ),
    )
    app = make_app(tmp_path, db=str(db))
    async with app.run_test(size=(160, 50)) as pilot:
        await mounted(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        table = app.query_one("#runs-table")
        assert table.row_count == 3, text(app, "runs-status")
        assert table.get_row_at(0)[-1].plain == "[red]hi :x:"
        sql = app.query_one("#sql")
        sql.focus()
        sql.text = "SELECT '[red]hi :x:' AS a, 'postgres:x:101' AS b, NULL AS c"
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.query_one("#sql-table").row_count == 1, text(app, "sql-status")
        row = app.query_one("#sql-table").get_row_at(0)
        assert [c.plain for c in row] == ["[red]hi :x:", "postgres:x:101", "NULL"]
        sql.text = "SELECT * FROM read_text('/etc/passwd')"  # the sealed connection refuses it
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.query_one("#sql-table").row_count == 0
        assert text(app, "sql-status").startswith("refused")
        screen = app.export_screenshot()
        assert "[red]hi :x:" in screen.replace("&#x27;", "'").replace("&#160;", " ") or "[red]hi" in screen
        assert "❌" not in screen
        await pilot.press("f3")
        app.run_pane.log_line("[bold]loss[/] :x: 1.0")
        await pilot.pause(0.2)
        log = app.query_one("#run-log", RichLog)
        assert "[bold]loss[/] :x: 1.0" in log.lines[-1].text


async def test_infeasible_plan_leads_with_ways_out_and_saving_says_so(tmp_path):
    app = make_app(tmp_path)
    out = tmp_path / "plan.json"
    async with app.run_test(size=(160, 50)) as pilot:
        await mounted(app, pilot)
        await fill(
            app,
            pilot,
            hw="custom",
            gpu_mem="2",
            model="meta-llama/Llama-3.1-70B",
            domain="near",
            forgetting="medium",
        )
        assert app.plan is not None and not app.plan.feasible
        ways = app.query_one("#rec-ways")
        assert ways.display and "Ways out" in text(app, "rec-ways")
        assert ways.region.y < app.query_one("#rec-details").region.y  # first, on screen
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert json.loads(out.read_text())["feasible"] is False
        note = app._notifications
        assert any(n.title == "Infeasible plan saved" and "infeasible" in n.message for n in note)


async def test_data_file_sets_seq_len_steps_and_the_other_advise_inputs(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        await mounted(app, pilot)
        await fill(
            app,
            pilot,
            hw="cpu",
            model="HuggingFaceTB/SmolLM2-135M-Instruct",
            domain="near",
            forgetting="medium",
            data=str(TRAIN),
        )
        t = app.plan.training
        assert (t.seq_len, t.planned_steps) == (72, 180)  # longest row 66 tokens, 10% held out
        assert "seq 72" in text(app, "rec-details")
        assert "seq-len-from-data" in text(app, "rec-rules")
        await fill(app, pilot, eval_data=str(EVAL))
        assert app.plan.training.planned_steps == 200
        await fill(app, pilot, seq_len="2048")  # the user's number stands, with a warning
        assert app.plan.training.seq_len == 2048 and "longest row has 66" in text(app, "rec-warnings")
        await fill(app, pilot, seq_len="", fresh_facts="yes")
        assert "Retrieval comes first" in text(app, "rec-warnings")
        await fill(
            app,
            pilot,
            fresh_facts="no",
            hw=catalog.get_gpu("A100-80GB").name,
            gpus="8",
            nodes="2",
            model="meta-llama/Llama-3.1-8B",
        )
        assert app.plan.distributed.num_nodes == 2
        await fill(app, pilot, probe_data=str(tmp_path / "missing.txt"))
        assert "no file" in text(app, "err-probe-data")
        await fill(app, pilot, probe_data="", calibrated="yes")
        assert "no calibration" in text(app, "err-calibrated")
        assert "the calibrated switch" in text(app, "err-calibrated")  # TUI words, not --calibrated
        (tmp_path / "calibration.json").write_text(
            json.dumps({"factors": {"cuda|llama": {"activations": 1.1}}})
        )
        await fill(app, pilot, calibrated="no")
        await fill(app, pilot, calibrated="yes")
        assert app.plan.inputs.calibrated is True
        assert any(d.rule == "TP050" for d in app.plan.decisions)


async def test_ranked_search_in_progress_is_a_hint_and_errors_speak_tui(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await settle(app, pilot)
        app.query_one("#model").focus()
        await pilot.press(*"qwen 7b")
        await settle(app, pilot)
        box = app.query_one("#model-list")
        assert box.display and str(box.get_option_at_index(0).id) == "Qwen/Qwen2.5-7B"
        assert not app.query_one("#model").has_class("bad")
        assert "match" in text(app, "err-model") and "✗" not in text(app, "err-model")
        await pilot.press("enter")
        assert app.query_one("#model").value == "Qwen/Qwen2.5-7B"
        await fill(app, pilot, gpus="0", domain="near", forgetting="medium")
        err = text(app, "err-gpus")
        assert "GPU count" in err and "--gpus" not in err


async def test_number_fields_reject_what_they_cannot_parse_visibly(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await fill(app, pilot, model="meta-llama/Llama-3.1-8B", domain="near", forgetting="medium")
        good = app.plan
        app.query_one("#gpus").value = ""
        app.query_one("#gpus").focus()
        await pilot.press(*"2.5")
        await settle(app, pilot)
        assert app.query_one("#gpus").value == "2.5"  # nothing swallowed: not "25"
        assert "'2.5' is not a whole number" in text(app, "err-gpus")
        assert app.query_one("#gpus").has_class("bad")
        assert app.plan.inputs.hardware.count in (1, 2)  # the last valid answer, never 25
        assert "problem" in text(app, "rec-status") and good is not None
        await fill(app, pilot, gpus="", dataset_tokens="1e9")
        assert app.query_one("#gpus").placeholder == "1"  # the default is shown, not hidden
        assert app.plan.inputs.task.dataset_tokens == 1_000_000_000
        await fill(app, pilot, batch="eight")
        assert "'eight' is not a whole number" in text(app, "err-batch")


PHASED_RUN = textwrap.dedent(r"""
    import json, os, sys, time
    mode, plan, *rest = sys.argv[1:]
    out = rest[rest.index("--output") + 1]
    d = os.path.join(out, "20250101-000000-fake02")
    os.makedirs(d)
    say = lambda s: (print(s, file=sys.stderr, flush=True), time.sleep(0.4))
    say("/usr/lib/python3/site-packages/transformers/x.py:1: FutureWarning: noise from a library")
    say("run 20250101-000000-fake02: lora on tiny (cpu), 4 steps, 8 train / 2 eval sequences")
    say("evaluating before training (eval and probe loss)")
    with open(os.path.join(d, "metrics.jsonl"), "a") as f:
        for step in range(1, 5):
            f.write(json.dumps({"step": step, "loss": 3.0 / step, "tokens": 10, "elapsed_s": step}) + "\n")
            f.flush()
            time.sleep(0.5)
    say("evaluating after training (eval and probe loss)")
    say("saving the adapter to " + d)
    json.dump({"run_id": "20250101-000000-fake02", "status": "succeeded", "steps": 4},
              open(os.path.join(d, "result.json"), "w"))
""")


async def test_run_tab_shows_phases_eta_and_a_sparkline_from_one_point(tmp_path, monkeypatch):
    script = tmp_path / "phased.py"
    script.write_text(PHASED_RUN)
    app = make_app(tmp_path, command=lambda: [sys.executable, str(script), "x"])
    seen = []
    orig = RunPane.set_phase

    def record(pane, phase, detail=""):
        if not seen or seen[-1] != phase:
            seen.append(phase)
        orig(pane, phase, detail)

    monkeypatch.setattr(RunPane, "set_phase", record)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        data = tmp_path / "train.jsonl"
        data.write_text('{"prompt": "a", "completion": "b"}\n')
        await fill(
            app, pilot, model="meta-llama/Llama-3.1-8B", domain="near", forgetting="medium", data=str(data)
        )
        await pilot.press("ctrl+r")
        end = time.monotonic() + 30
        one_point_checked = False
        while "succeeded" not in text(app, "run-status"):
            if len(app.run_pane.losses) == 1 and not one_point_checked:
                assert not app.query_one("#run-loss").display
                assert "first step" in text(app, "run-loss-note")
                one_point_checked = True
            if (
                app.run_pane.phase == "training"
                and app.run_pane.total_steps
                and len({st for _, st in app.run_pane.step_times}) >= 2
            ):
                assert "left" in text(app, "run-status")  # an ETA once two steps are timed
            assert time.monotonic() < end
            await pilot.pause(0.05)
        assert seen == ["loading", "eval-before", "training", "eval-after", "saving"]
        log = "\n".join(line.text for line in app.query_one("#run-log", RichLog).lines)
        assert "FutureWarning" not in log and "evaluating after training" in log
        assert app.run_pane.hidden_lines == 1 and "kept out of view" in text(app, "run-status")
        spark = app.query_one("#run-loss")
        assert spark.display and spark.data == app.run_pane.losses and spark.styles.width.value == 4
        app.run_pane.losses = [2.5]  # one point (a poll under load may bring two at once): a number, no bar
        app.run_pane.draw_losses()
        assert not spark.display and "loss 2.5000 at the first step" in text(app, "run-loss-note")


async def test_palette_has_app_commands_and_the_footer_follows_context(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await mounted(app, pilot)
        await settle(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for want in (
            "Save plan",
            "Run plan",
            "Cancel run",
            "Help: keys",
            "Show Plan tab",
            "Show Run tab",
            "Show Runs tab",
        ):
            assert want in titles

        def shown() -> set[str]:
            return {
                b.binding.action for b in app.screen.active_bindings.values() if b.enabled and b.binding.show
            }

        assert "cancel_run" not in shown() and "refresh_runs" not in shown()
        assert "save" in shown()
        await pilot.press("f4")
        await pilot.pause()
        assert "refresh_runs" in shown()
        app.query_one("#sql").focus()
        await pilot.pause()
        assert "app.run_sql" in shown()
        await pilot.press("f2")
        await pilot.pause()
        app.query_one("#model").focus()
        await pilot.press("l")
        await pilot.pause()
        assert "app.model_list" in shown() and "app.run_sql" not in shown()
        assert not app.runs_pane.loaded or True


def test_first_screen_opens_no_database(tmp_path):
    """DuckDB is loaded when the Runs tab is first shown, not for the first paint."""
    import subprocess

    code = textwrap.dedent(f"""
        import asyncio, sys
        from tuneplan.advisor import catalog
        from tuneplan.tui.app import TunePlanApp
        async def main():
            app = TunePlanApp(out={str(tmp_path / "p.json")!r}, db={str(tmp_path / "r.duckdb")!r},
                              detect=lambda: catalog.gpu_hardware("A100-80GB"))
            async with app.run_test(size=(100, 40)) as pilot:
                while not app.fully_mounted: await pilot.pause(0.02)
                await pilot.pause(0.3)
                before = "duckdb" in sys.modules
                await pilot.press("f4")
                await pilot.pause()
                print(before, "duckdb" in sys.modules, app.runs_pane.loaded)
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]
