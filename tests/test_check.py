"""tuneplan check: per-run verdicts on hand-made runs (every broken reason, held), --json,
--strict, missing database; the v3 audit views and `check --rules` on a hand-made comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exec_fixtures import make_plan
from ledger_fixtures import old_ledger_schema
from tuneplan.executor import ledger as store
from tuneplan.executor.ledger import check
from tuneplan.schemas import MemoryBreakdown
from tuneplan.schemas.run import MeasuredMemory, RunResult
from helpers import cli


def record_run(
    db: Path,
    root: Path,
    run_id: str,
    *,
    method: str = "lora",
    plan=None,
    overhead: int = 0,
    predicted: int = 1000,
    measured: int | None = 900,
    device: str = "cpu",
    status: str = "succeeded",
    tolerance: str = "medium",
    distance: str = "near",
    eval_losses=(2.0, 1.5),
    probe_losses=(3.0, 3.01),
    metrics: list[dict] | None = None,
    runtime: int = 0,
    steps: int = 50,
    **extra,
) -> RunResult:
    """Record a hand-made run whose plan.json (in its run directory) predicts `predicted` bytes,
    `overhead` of them framework overhead, and whose measured peak is `measured` bytes, `runtime`
    of them the process runtime."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if plan is None:
        plan = make_plan(method, "tiny")
        b = MemoryBreakdown(
            weights=predicted - overhead,
            quantization_constants=0,
            adapter_weights=0,
            gradients=0,
            optimizer_states=0,
            activations=0,
            logits_and_loss=0,
            framework_overhead=overhead,
        )
        plan = plan.model_copy(
            update={
                "memory": plan.memory.model_copy(
                    update={"breakdown": b, "per_device_bytes": predicted, "terms": []}
                )
            }
        )
    (run_dir / "plan.json").write_text(plan.model_dump_json())
    fields = dict(
        run_id=run_id,
        status=status,
        plan_hash="0" * 16,
        method=method,
        model="tiny",
        hardware=device,
        started_at=f"2025-01-01T10:00:{len(run_id) % 60:02d}Z",
        finished_at="2025-01-01T10:05:00Z",
        run_dir=str(run_dir),
        predicted_peak_bytes=predicted,
        measured=None
        if measured is None
        else MeasuredMemory(device_kind=device, peak_bytes=measured, runtime_bytes=runtime),
        forgetting_tolerance=tolerance,
        domain_distance=distance,
        eval_loss_before=eval_losses[0] if eval_losses else None,
        eval_loss_after=eval_losses[1] if eval_losses else None,
        forgetting_loss_before=probe_losses[0] if probe_losses else None,
        forgetting_loss_after=probe_losses[1] if probe_losses else None,
        steps=steps,
        tokens=100,
        tokens_per_second=50.0,
        wall_seconds=2.0,
    )
    fields.update(extra)
    result = RunResult(**fields)
    store.record(db, result, metrics)
    return result


CASES = {
    # run_id: (kwargs, verdict, reason fragment)
    "held": (dict(), "held", None),
    "oom": (
        dict(
            status="failed",
            measured=None,
            eval_losses=(2.0, None),
            probe_losses=(3.0, None),
            error="OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        "broken",
        "failed out of memory",
    ),
    "oom-predicted": (
        dict(
            status="failed",
            measured=None,
            predicted_fits=False,
            eval_losses=None,
            probe_losses=None,
            error="OutOfMemoryError: x",
        ),
        "held",
        None,
    ),
    "under": (dict(measured=1400), "broken", "under-predicted"),
    "under-ok": (dict(measured=1300), "held", None),
    "overhead": (dict(predicted=1500, overhead=1000, measured=900), "broken", "under-predicted"),
    # a CPU peak that includes the runtime: judged on tensor bytes (1100 vs 1100), not 1100 vs 1500
    "runtime": (dict(predicted=1500, overhead=400, measured=1500, runtime=400), "held", None),
    "forgot": (dict(tolerance="low", probe_losses=(3.0, 3.06)), "broken", "beyond the low tolerance"),
    "forgot-ok": (dict(tolerance="medium", probe_losses=(3.0, 3.06)), "held", None),
    "no-learning": (dict(eval_losses=(2.0, 2.0)), "broken", "did not learn"),
    "running": (
        dict(
            status="running",
            measured=None,
            eval_losses=(2.0, None),
            probe_losses=(3.0, None),
            finished_at=None,
        ),
        "held",
        None,
    ),
    "interrupted": (
        dict(
            status="interrupted",
            measured=2000,
            eval_losses=(2.0, None),
            probe_losses=(3.0, None),
            error="KeyboardInterrupt: x",
        ),
        "broken",
        "under-predicted",
    ),
    "failed-other": (
        dict(status="failed", measured=None, eval_losses=None, probe_losses=None, error="RuntimeError: boom"),
        "held",
        None,
    ),
}


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "runs.duckdb"
    for run_id, (kw, _, _) in CASES.items():
        record_run(path, tmp_path / "runs", run_id, **kw)
    return path


def test_check_json_verdicts_and_reasons(db, capsys):
    assert cli("check", "--db", str(db), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    runs = {r["run_id"]: r for r in out["runs"]}
    assert set(runs) == set(CASES)
    for run_id, (_, verdict, fragment) in CASES.items():
        r = runs[run_id]
        assert {
            "run_id",
            "method",
            "memory_error",
            "forgetting_within_tolerance",
            "learned",
            "verdict",
            "reasons",
        } <= set(r)
        assert r["verdict"] == verdict, (run_id, r)
        if fragment:
            assert any(fragment in x for x in r["reasons"]), (run_id, r["reasons"])
        else:
            assert r["reasons"] == [], (run_id, r["reasons"])
    assert runs["held"]["memory_error"] == pytest.approx((1000 - 900) / 900)
    assert runs["held"]["learned"] is True and runs["held"]["forgetting_within_tolerance"] is True
    # raw error counts the overhead, the like-for-like one does not (and decides the verdict)
    assert runs["overhead"]["memory_error"] == pytest.approx(600 / 900)
    assert runs["overhead"]["memory_error_comparable"] == pytest.approx(-400 / 900)
    assert runs["runtime"]["memory_error"] == pytest.approx(0.0)
    assert runs["runtime"]["memory_error_comparable"] == pytest.approx(0.0)
    assert runs["no-learning"]["learned"] is False
    assert runs["forgot"]["forgetting_within_tolerance"] is False
    assert runs["forgot-ok"]["forgetting_within_tolerance"] is True
    assert runs["oom"]["out_of_memory"] and runs["oom-predicted"]["out_of_memory"]
    assert any("as predicted" in n for n in runs["oom-predicted"]["notes"])
    assert runs["running"]["learned"] is None and any("still running" in n for n in runs["running"]["notes"])
    assert any("not for memory" in n for n in runs["failed-other"]["notes"])
    s = out["summary"]
    broken = sum(v == "broken" for _, v, _ in CASES.values())
    assert s["runs"] == len(CASES) and s["broken"] == broken and s["held"] == len(CASES) - broken
    assert s["out_of_memory"] == 2 and s["did_not_learn"] == 1 and s["forgot_beyond_tolerance"] == 1
    assert s["memory_under_predicted"] == 3


def test_check_strict_and_table(db, tmp_path, capsys):
    assert cli("check", "--db", str(db), "--strict") == 1
    text = capsys.readouterr().out
    assert "broken" in text and "held" in text and "under-predicted" in text
    good = tmp_path / "good.duckdb"
    record_run(good, tmp_path / "good", "fine")
    assert cli("check", "--db", str(good), "--strict") == 0
    assert cli("check", "--db", str(good), "--strict", "--json") == 0


def test_check_missing_db_exits_2(tmp_path, capsys):
    assert cli("check", "--db", str(tmp_path / "nope.duckdb")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope.duckdb").exists()


def test_thresholds_are_the_documented_ones():
    assert check.FORGETTING_THRESHOLDS == {"low": 0.05, "medium": 0.15, "high": 0.50}
    assert check.MEMORY_UNDER_PREDICTION_LIMIT == 0.25
    doc = (Path(__file__).parents[1] / "docs" / "checks.md").read_text()
    for text in ("0.05", "0.15", "0.50", "25%", "TP020", "TP021", "TP023", "TP030"):
        assert text in doc


# ------------------------------------------------------------------------------- audit views


@pytest.fixture
def cmp_db(tmp_path) -> Path:
    """Two comparisons. c1 (far, low tolerance): QLoRA less memory than LoRA and learns as much;
    LoRA forgets less than full; full learns more. c2 (near): QLoRA uses MORE memory than LoRA,
    LoRA forgets MORE than full, full learns less."""
    db = tmp_path / "runs.duckdb"
    root = tmp_path / "runs"
    spec = {
        "c1": dict(
            distance="far",
            tolerance="low",
            runs={
                "full": dict(measured=3000, eval_losses=(2.0, 1.0), probe_losses=(3.0, 3.30)),
                "lora": dict(measured=1500, eval_losses=(2.0, 1.5), probe_losses=(3.0, 3.02)),
                "qlora": dict(measured=1000, eval_losses=(2.0, 1.55), probe_losses=(3.0, 3.03)),
            },
        ),
        "c2": dict(
            distance="near",
            tolerance="medium",
            runs={
                "full": dict(measured=3000, eval_losses=(2.0, 1.8), probe_losses=(3.0, 3.01)),
                "lora": dict(measured=1500, eval_losses=(2.0, 1.5), probe_losses=(3.0, 3.05)),
                "qlora": dict(measured=1600, eval_losses=(2.0, 1.5), probe_losses=(3.0, 3.04)),
            },
        ),
    }
    for cid, c in spec.items():
        for method, kw in c["runs"].items():
            rid = f"{cid}-{method}"
            record_run(
                db,
                root,
                rid,
                method=method,
                predicted=kw["measured"] + 100,
                tolerance=c["tolerance"],
                distance=c["distance"],
                **kw,
            )
            store.record_comparison(db, cid, rid, method, "lora", c["tolerance"])
    # a failed run in a comparison is left out of the pairwise audits
    record_run(db, root, "c3-full", method="full", status="failed", measured=None, error="RuntimeError: x")
    record_run(db, root, "c3-lora", method="lora")
    store.record_comparison(db, "c3", "c3-full", "full", "lora", "medium")
    store.record_comparison(db, "c3", "c3-lora", "lora", "lora", "medium")
    store.record_comparison(db, "c3", "c3-lora", "lora", "lora", "medium")  # idempotent
    return db


def q(db, sql):
    cols, rows = store.query(db, sql)
    return [dict(zip(cols, r)) for r in rows]


def test_comparisons_table(cmp_db):
    rows = q(cmp_db, "SELECT compare_id, count(*) AS n FROM comparisons GROUP BY 1 ORDER BY 1")
    assert [(r["compare_id"], r["n"]) for r in rows] == [("c1", 3), ("c2", 3), ("c3", 2)]
    cols = [r["column_name"] for r in q(cmp_db, "DESCRIBE comparisons")]
    assert cols == [
        "compare_id",
        "run_id",
        "method",
        "chosen_method",
        "forgetting_tolerance",
        "created_at",
        "axis",
        "value",
        "advised_value",
    ]
    trials = q(cmp_db, "SELECT DISTINCT axis FROM comparisons")
    assert [r["axis"] for r in trials] == ["method"]  # compare is a sweep over method


def test_audit_views(cmp_db):
    qv = {r["compare_id"]: r for r in q(cmp_db, "SELECT * FROM audit_qlora_vs_lora_memory")}
    assert set(qv) == {"c1", "c2"}
    assert qv["c1"]["qlora_less_memory"] is True and qv["c1"]["qlora_learning_matches"] is True
    assert qv["c1"]["holds"] is True
    assert qv["c2"]["qlora_less_memory"] is False and qv["c2"]["holds"] is False
    fv = {
        (r["compare_id"], r["adapter_method"]): r
        for r in q(cmp_db, "SELECT * FROM audit_lora_vs_full_forgetting")
    }
    assert fv[("c1", "lora")]["lora_forgets_less"] is True
    assert fv[("c1", "qlora")]["lora_forgets_less"] is True
    assert fv[("c2", "lora")]["lora_forgets_less"] is False
    assert ("c3", "lora") not in fv  # full failed there
    lv = {
        (r["compare_id"], r["adapter_method"]): r
        for r in q(cmp_db, "SELECT * FROM audit_lora_vs_full_learning")
    }
    assert lv[("c1", "lora")]["full_learns_more"] is True and lv[("c1", "lora")]["far_domain"] is True
    assert lv[("c2", "lora")]["full_learns_more"] is False and lv[("c2", "lora")]["far_domain"] is False
    mp = {(r["method"], r["device_kind"]): r for r in q(cmp_db, "SELECT * FROM audit_memory_predictions")}
    assert mp[("lora", "cpu")]["within_threshold"] == mp[("lora", "cpu")]["measured_runs"] == 3
    assert mp[("lora", "cpu")]["share_within_threshold"] == 1.0
    assert mp[("full", "cpu")]["runs"] == 2 and mp[("full", None)]["measured_runs"] == 0
    assert mp[("full", None)]["share_within_threshold"] is None


def test_pair_audits_skip_sweeps_over_method_and_another_axis(cmp_db, tmp_path):
    """In a sweep over method and learning rate at once, the LoRA and full trials may differ in
    their rate too: the LoRA-vs-full and QLoRA-vs-LoRA audits pair only one-axis comparisons."""
    root = tmp_path / "runs"
    for method, measured, ev in (
        ("full", 3000, (2.0, 1.0)),
        ("lora", 1500, (2.0, 1.5)),
        ("qlora", 1000, (2.0, 1.5)),
    ):
        rid = f"s1-{method}"
        record_run(
            cmp_db, root, rid, method=method, measured=measured, predicted=measured + 100, eval_losses=ev
        )
        store.record_comparison(
            cmp_db, "s1", rid, method, "lora", "medium", axis="method,learning_rate", value=f"{method},1e-4"
        )
    for view in (
        "audit_qlora_vs_lora_memory",
        "audit_lora_vs_full_forgetting",
        "audit_lora_vs_full_learning",
    ):
        ids = {r["compare_id"] for r in q(cmp_db, f"SELECT compare_id FROM {view}")}
        assert "s1" not in ids and "c1" in ids, view


def test_check_rules_summary(cmp_db, capsys):
    rules = {r["rule"]: r for r in check.audit_rules(cmp_db)}
    assert (rules["TP023"]["tested"], rules["TP023"]["held"], rules["TP023"]["status"]) == (2, 1, "mixed")
    assert (rules["TP021"]["tested"], rules["TP021"]["held"]) == (4, 2)
    assert (rules["TP020"]["tested"], rules["TP020"]["held"], rules["TP020"]["status"]) == (2, 2, "held")
    assert "near/moderate" in rules["TP020"]["note"]
    assert rules["TP030"]["status"] == "held" and rules["TP030"]["tested"] == 7
    assert cli("check", "--db", str(cmp_db), "--rules", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["rule"] for r in out["rules"]] == ["TP023", "TP021", "TP020", "TP030", "TP040"]
    assert out["rules"][-1]["status"] == "untested"  # no learning-rate sweep recorded here
    assert cli("check", "--db", str(cmp_db), "--rules") == 0
    assert "TP023 mixed" in capsys.readouterr().out


def test_older_database_is_refused_by_check_unchanged_until_upgraded(tmp_path):
    """A read never writes (issue 10): check on a schema-2 database raises SchemaOutdated naming
    the upgrade command and leaves the file byte for byte as it was; a writable connection (what
    `tuneplan runs upgrade` / `runs ingest` / `run` open) upgrades it, and check then reads it."""
    import duckdb

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    old_ledger_schema(con, 2)
    con.close()
    before = db.read_bytes()
    with pytest.raises(store.SchemaOutdated, match="schema version 2.*tuneplan runs upgrade"):
        check.check_runs(db)
    with pytest.raises(store.SchemaOutdated):
        check.audit_rules(db)
    assert db.read_bytes() == before
    store.connect(db).close()
    assert check.check_runs(db)["summary"]["runs"] == 0
    con = store.connect(db, read_only=True)
    try:
        assert store.schema_version(con) == store.SCHEMA_VERSION >= 4
    finally:
        con.close()


def test_like_for_like_on_tensor_bytes_python_and_sql_agree(tmp_path):
    """A CPU run whose peak includes 400 MiB of runtime: the helper (memory_compare), the
    run_memory_checks view, `tuneplan check` and list_runs give the same like-for-like error,
    computed on tensor bytes (peak less runtime vs prediction less framework overhead)."""
    from tuneplan.executor.ledger.memory_compare import from_result

    mib = 1 << 20
    db = tmp_path / "runs.duckdb"
    result = record_run(
        db,
        tmp_path / "runs",
        "cpu-runtime",
        predicted=1000 * mib,
        overhead=420 * mib,
        measured=1000 * mib,
        runtime=400 * mib,
    )
    expected = (580 - 600) / 600  # tensor bytes: predicted 1000 - 420, measured 1000 - 400
    old_biased = (580 - 1000) / 1000  # what subtracting the overhead from one side only gave

    lfl = from_result(result)  # reads the overhead from <run_dir>/plan.json
    assert (lfl.predicted_comparable_bytes, lfl.measured_comparable_bytes) == (580 * mib, 600 * mib)
    assert lfl.error == pytest.approx(expected) and lfl.error != pytest.approx(old_biased)
    assert lfl.raw_error == pytest.approx(0.0)

    cols, rows = store.query(
        db,
        "SELECT runtime_bytes, predicted_comparable_bytes, "
        "measured_comparable_bytes, memory_error_comparable "
        "FROM runs JOIN run_memory_checks USING (run_id)",
    )
    assert rows == [(400 * mib, 580 * mib, 600 * mib, pytest.approx(expected))]
    assert rows[0][3] == lfl.error  # the same number, not just close
    (run,) = check.check_runs(db)["runs"]
    assert run["memory_error_comparable"] == lfl.error and run["verdict"] == "held"
    (listed,) = store.list_runs(db)
    assert listed["runtime_bytes"] == 400 * mib and listed["memory_error_comparable"] == lfl.error

    # CUDA: max_allocated has no runtime in it (runtime_bytes 0), only the overhead comes off
    cuda = record_run(
        db,
        tmp_path / "runs",
        "cuda",
        device="cuda",
        predicted=1000 * mib,
        overhead=420 * mib,
        measured=600 * mib,
    )
    assert from_result(cuda).error == pytest.approx((580 - 600) / 600)
