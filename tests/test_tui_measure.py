"""The questionnaire's "measure it from my data": offered once a data file is given, measured on a
tiny Llama (built from a config) in a worker while the form stays live, the verdict filled in
with its evidence shown, and the saved plan records source=measured (the row in DuckDB)."""

from __future__ import annotations

import json
import threading

import duckdb
import pytest

from exec_fixtures import tiny_llama_dir, write_jsonl
from test_tui import fill, make_app, mounted, settle, wait_for

pytest.importorskip("transformers")

SMALL = {"tokens_per_batch": 8, "micro_batches": 2, "depths": 1, "measure_seq_len": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tui-measure")
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"convert the date {m} 5"},
                {"role": "assistant", "content": f"2021-{i + 1:02d}-05"},
            ]
        }
        for i, m in enumerate(["January", "February", "March", "April", "May", "June"])
    ]
    return tiny_llama_dir(root), write_jsonl(root / "train.jsonl", rows)


async def test_measure_from_my_data_fills_the_domain_and_the_plan_says_measured(tmp_path, tiny, monkeypatch):
    from tuneplan.tui import measuring

    model, data = tiny
    real = measuring.measure_data
    release = threading.Event()
    started = threading.Event()

    def held(*a, **kw):
        """The real measurement, held back until the test has checked the form is live."""
        started.set()
        ev = real(*a, **kw)
        release.wait(60)
        return ev

    monkeypatch.setattr(measuring, "measure_data", held)
    app = make_app(tmp_path)
    app.measure_options = SMALL
    async with app.run_test(size=(110, 50)) as pilot:
        await mounted(app, pilot)
        assert not app.query_one("#measure-box").display  # no data file yet: not offered
        await fill(app, pilot, model=str(model), forgetting="medium", data=str(data))
        assert app.query_one("#measure-box").display
        app.query_one("#measure-domain").press()
        await wait_for(pilot, started.is_set)
        assert app.measuring and app.query_one("#measure-domain").disabled
        # the form stays live while the worker measures: an answer still re-advises
        generation = app.plan_generation
        await fill(app, pilot, batch="4")
        assert app.plan_generation > generation and app.measuring
        release.set()
        await wait_for(pilot, lambda: not app.measuring, timeout=120)
        ev = app.distance_evidence
        assert ev is not None, str(app.query_one("#domain-evidence").content)
        assert app.query_one("#domain").value == ev.measured
        shown = str(app.query_one("#domain-evidence").content)
        assert f"domain distance: {ev.measured}" in shown and "update rank" in shown and "fit:" in shown
        await settle(app, pilot)
        await wait_for(pilot, lambda: app.plan is not None and app.plan.inputs.distance is not None)
        assert app.plan.inputs.distance.source == "measured"
        assert app.plan.inputs.task.domain_distance == ev.measured
        assert app.action_save() is True
        saved = json.loads((tmp_path / "plan.json").read_text())
        assert saved["inputs"]["distance"]["source"] == "measured"
        assert saved["inputs"]["distance"]["measure_id"] == ev.measure_id
        # choosing another distance keeps the evidence as declared, with the disagreement said
        other = next(d for d in ("near", "moderate", "far") if d != ev.measured)
        await fill(app, pilot, domain=other)
        d = app.plan.inputs.distance
        assert (d.source, d.declared, d.measured) == ("declared", other, ev.measured)
        assert any("the measurement says" in w for w in app.plan.warnings)
    con = duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT measure_id, verdict, plan_model FROM distance_measurements").fetchall()
    finally:
        con.close()
    assert rows == [(ev.measure_id, ev.measured, str(model))]


async def test_a_model_that_is_not_here_says_so_under_the_question(tmp_path, tiny):
    _, data = tiny
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 50)) as pilot:
        await fill(app, pilot, model="meta-llama/Llama-3.1-8B", data=str(data))
        app.query_one("#measure-domain").press()
        await wait_for(pilot, lambda: not app.measuring and "Not measured" in str(app.query_one("#domain-evidence").content), timeout=60)  # fmt: skip
        assert app.distance_evidence is None and not app.query_one("#measure-domain").disabled
