"""Checkpoints, exact resume, preemption, packing and evaluation during training (issue 12).

Equivalence: a run stopped by SIGTERM after step 1 and resumed gives, at every later step, the
same loss as the uninterrupted run - bitwise on CPU fp32 (same kernels, same thread count, RNG
states restored, so even LoRA dropout draws the same masks). The embedded model runs it for LoRA
and for full fine-tuning (slow; one torch thread, which on this shared 2-core CPU cut the pair from
~5 min to ~1.5 min); the tiny in-process Llama runs the 2-process (DDP, gloo) case and the faults.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from exec_fixtures import make_plan, one_torch_thread, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.executor import ledger as store
from helpers import OUR_STDERR_LINE, TUNEPLAN, noise_in, tuneplan
from tuneplan.executor.runlog import RUN_LOG
from tuneplan.executor.checkpoint import MANIFEST, complete_checkpoints
from tuneplan.executor.runner import run_plan
from tuneplan.executor.signals import RunInterrupted
from tuneplan.schemas import Distributed, RunResult

CLI = TUNEPLAN


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("resume"))


def _plan(tmp_path: Path, model: str, method: str = "lora", *, strategy: str = "none", **training) -> Path:
    """``strategy`` other than "none": the plan's own 2-process layout (``ddp``, ``fsdp``)."""
    train = write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    t = {"max_steps": 4, "per_device_batch_size": 2, "save_every_steps": 2, **training}
    path = tmp_path / f"plan-{method}.json"
    plan = make_plan(method, model, train_path=str(train), training=t, lora={"dropout": 0.1})
    if strategy != "none":
        plan.distributed = Distributed(num_processes=2, strategy=strategy)
    path.write_text(plan.model_dump_json())
    return path


def _losses(run_dir) -> list[tuple[int, float]]:
    return [
        (m["step"], m["loss"])
        for m in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())
    ]


def _sigterm_after_first_step(plan: Path, out: Path, db: Path, **kw) -> Path:
    """Run in-process; SIGTERM arrives while the test hook holds the loop after step 1."""
    before = set(out.iterdir()) if out.exists() else set()

    def kill():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = [
                d
                for d in (out.iterdir() if out.exists() else [])
                if d not in before
                and (d / "metrics.jsonl").is_file()
                and (d / "metrics.jsonl").stat().st_size
            ]
            if new:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    os.environ["TUNEPLAN_TEST_PAUSE_AT"] = "training"
    threading.Thread(target=kill, daemon=True).start()
    try:
        with pytest.raises(RunInterrupted) as info:
            run_plan(str(plan), db=str(db), output_dir=str(out), progress=False, **kw)
    finally:
        del os.environ["TUNEPLAN_TEST_PAUSE_AT"]
    return Path(info.value.run_dir)


def _equivalence(
    plan: Path, tmp_path: Path, *, steps: int = 4, saves: tuple[int, ...] = (1, 2), **kw
) -> None:
    """Uninterrupted vs SIGTERM after step 1 + resume: same loss at every step, bitwise.

    ``saves``: the checkpoints the resumed run leaves (step-1 from the SIGTERM, then the planned ones)."""
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    whole = run_plan(str(plan), db=str(db), output_dir=str(out), progress=False, **kw)
    run_dir = _sigterm_after_first_step(plan, out, db, **kw)
    cut = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert cut.status == "interrupted" and cut.steps == 1
    assert "SIGTERM at step 1; checkpoint step-1 written" in cut.stop_reason
    assert [s for s, _ in complete_checkpoints(run_dir)] == [1]
    rows = {r["run_id"]: r for r in store.list_runs(str(db))}  # both may start in the same second
    assert rows[run_dir.name]["status"] == "interrupted"
    resumed = run_plan(None, db=str(db), output_dir=str(out), progress=False, resume=str(run_dir), **kw)
    assert resumed.run_id == run_dir.name and resumed.status == "succeeded"
    assert len(_losses(whole.run_dir)) == steps
    assert _losses(resumed.run_dir) == _losses(whole.run_dir)  # bitwise, every step
    assert [(r.from_step, r.previous_status) for r in resumed.resumes] == [(1, "interrupted")]
    rows = {r["run_id"]: r for r in store.list_runs(str(db))}
    assert rows[run_dir.name]["status"] == "succeeded" and rows[run_dir.name]["steps"] == steps
    saved = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert saved.resumes[0].checkpoint.endswith("step-1")
    # with save_every_steps=2 the resumed run writes step-2 as planned; limit 2 keeps step-1 and step-2
    assert tuple(s for s, _ in complete_checkpoints(run_dir)) == saves
    assert saved.checkpoint_bytes and saved.checkpoint_seconds is not None
    assert saved.checkpoints_saved == len(saves)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_equivalence_tiny(method, tiny, tmp_path):
    _equivalence(_plan(tmp_path, str(tiny), method), tmp_path)


@pytest.mark.slow
def test_resume_equivalence_embedded_lora(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    from tuneplan.executor.models import EMBEDDED_MODEL

    plan = _plan(tmp_path, EMBEDDED_MODEL, "lora", seq_len=32, per_device_batch_size=1)
    with one_torch_thread():
        _equivalence(plan, tmp_path)


@pytest.mark.slow
def test_resume_equivalence_embedded_full(tmp_path, monkeypatch):
    """Full fine-tuning of all 134.5M weights: a checkpoint is 1.6 GB (fp32 weights + 2 AdamW
    moments), so the run is cut to what equivalence needs: 2 steps, the SIGTERM checkpoint only."""
    monkeypatch.setenv("TUNEPLAN_EVAL_BATCHES", "1")
    from tuneplan.executor.models import EMBEDDED_MODEL

    plan = _plan(
        tmp_path,
        EMBEDDED_MODEL,
        "full",
        seq_len=32,
        per_device_batch_size=1,
        max_steps=2,
        save_every_steps=None,
        learning_rate=2e-5,
    )
    with one_torch_thread():
        _equivalence(plan, tmp_path, steps=2, saves=(1,))
    ckpt = next(iter(complete_checkpoints(tmp_path / "runs" / _newest(tmp_path / "runs"))))[1]
    manifest = json.loads((ckpt / MANIFEST).read_text())
    assert sum(f["bytes"] for f in manifest["files"].values()) > 12 * 134_000_000  # weights + m + v, fp32


def _newest(out: Path) -> str:
    return max(d.name for d in out.iterdir() if d.is_dir())


def test_checkpoint_keeps_last_k_and_records_bytes(tiny, tmp_path):
    plan = _plan(tmp_path, str(tiny), max_steps=5, save_every_steps=1, save_total_limit=2)
    res = run_plan(
        str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path / "runs"), progress=False
    )
    ckpts = complete_checkpoints(Path(res.run_dir))
    assert [s for s, _ in ckpts] == [3, 4]  # saved at 1..4 (not after the last step), last 2 kept
    manifest = json.loads((ckpts[-1][1] / MANIFEST).read_text())
    assert manifest["step"] == 4 and manifest["plan_hash"] == res.plan_hash
    assert sum(f["bytes"] for f in manifest["files"].values()) == res.checkpoint_bytes
    # LoRA: the adapter alone (weights + 2 AdamW states, fp32), no frozen weight
    assert res.trainable_params * 12 <= res.checkpoint_bytes < res.trainable_params * 12 + 100_000
    assert res.trainable_params < res.total_params
    assert res.checkpoints_saved == 4


def _cli(*args, env=None, timeout=180):
    return tuneplan(*args, env=env or {}, timeout=timeout)


def test_a_max_steps_run_resumes_to_its_own_step_count(tiny, tmp_path):
    """`run --max-steps 3` of a 6-step plan, stopped after step 1: --resume finishes at step 3 on
    the 3-step schedule (bitwise the uninterrupted 3-step run), not the plan's 6; another
    --max-steps is refused."""
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    plan = _plan(tmp_path, str(tiny), max_steps=6, save_every_steps=None)
    whole = run_plan(str(plan), db=str(db), output_dir=str(out), progress=False, max_steps=3)
    run_dir = _sigterm_after_first_step(plan, out, db, max_steps=3)
    r = _cli("run", "--resume", str(run_dir), "--db", str(db), "--max-steps", "5")
    assert r.returncode == 2 and "--max-steps: run" in r.stderr and "started for 3 steps" in r.stderr, (
        r.stderr
    )
    resumed = run_plan(None, db=str(db), output_dir=str(out), progress=False, resume=str(run_dir))
    assert resumed.status == "succeeded" and resumed.steps == 3
    assert _losses(resumed.run_dir) == _losses(whole.run_dir)
    lrs = [json.loads(x)["lr"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [
        json.loads(x)["lr"] for x in (Path(whole.run_dir) / "metrics.jsonl").read_text().splitlines()
    ]


def test_bad_resume_inputs_exit_2_and_touch_nothing(tiny, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    plan = _plan(tmp_path, str(tiny))
    run_dir = _sigterm_after_first_step(plan, out, db)
    before = (run_dir / "result.json").read_text()
    # a missing run directory
    r = _cli("run", "--resume", str(tmp_path / "nope"), "--db", str(db))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    # a checkpoint from another plan (hash mismatch)
    other = tmp_path / "other"
    other.mkdir()
    other_plan = _plan(other, str(tiny), learning_rate=5e-3)
    r = _cli("run", str(other_plan), "--resume", str(run_dir), "--db", str(db))
    assert r.returncode == 2 and "is not the plan of run" in r.stderr
    # a corrupt checkpoint: one byte changed in a saved file
    (ck,) = [p for _, p in complete_checkpoints(run_dir)]
    victim = next(p for p in sorted(ck.iterdir()) if p.name != MANIFEST)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = _cli("run", "--resume", str(run_dir), "--db", str(db))
    assert r.returncode == 2 and "is corrupt" in r.stderr and victim.name in r.stderr
    # a partial checkpoint (no manifest) is refused the same way
    (ck / MANIFEST).unlink()
    r = _cli("run", "--resume", str(run_dir), "--db", str(db))
    assert r.returncode == 2 and "partial" in r.stderr
    assert (run_dir / "result.json").read_text() == before  # nothing overwritten


def test_sigterm_checkpoints_then_resume_latest_through_the_cli(tiny, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    plan = _plan(tmp_path, str(tiny))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNEPLAN_TEST_PAUSE_AT": "training"}
    proc = subprocess.Popen(
        CLI + ["run", str(plan), "--output", str(out), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "paused at training" in line:
                break
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, "".join(seen) + err
    assert stop_s < 30  # bounded: the step in progress, one checkpoint, the final write
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    assert f"checkpoint step-1 is in it; continue with: tuneplan run --resume {run_dir}" in err, err
    assert [s for s, _ in complete_checkpoints(run_dir)] == [1]
    runs = _cli("runs", "--db", str(db))
    assert "resumable" in runs.stdout, runs.stdout
    r = _cli("run", "--resume", "latest", "--output", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr
    (row,) = store.list_runs(str(db))
    assert row["run_id"] == run_dir.name and row["status"] == "succeeded" and row["steps"] == 4
    # clean logs (item 7): only tuneplan's own lines on stderr, one per logged step; the noise in run.log
    assert noise_in(r.stderr + r.stdout) == {}, r.stderr
    assert [x for x in r.stderr.splitlines() if not re.match(OUR_STDERR_LINE, x)] == [], r.stderr
    assert [x.split()[1] for x in r.stderr.splitlines() if x.startswith("step ")] == ["2/4", "3/4", "4/4"]
    log = (run_dir / RUN_LOG).read_text()
    assert "torch profiler (libkineto)" in noise_in(log), log  # the CPU memory meter profiles step 2
    headers = [x for x in log.splitlines() if x.startswith("--- ")]
    assert len(headers) == 2 and headers[1].endswith("(resumed)"), headers


def _only_ours(stderr: str, *extra: str) -> list[str]:
    """The lines of ``stderr`` that tuneplan did not print (``extra``: more patterns of ours)."""
    pattern = "|".join((OUR_STDERR_LINE, *extra))
    return [x for x in stderr.splitlines() if not re.match(pattern, x)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "strategy"), [("lora", "ddp"), ("full", "ddp"), ("lora", "fsdp"), ("full", "fsdp")]
)
def test_two_process_resume_is_exact(method, strategy, tiny, tmp_path):
    """2 processes over gloo; FSDP: torch's fully_shard on CPU, its sharded state gathered into one
    checkpoint and sharded again on resume."""
    out, db = tmp_path / "runs", tmp_path / "db.duckdb"
    plan = _plan(tmp_path, str(tiny), method, strategy=strategy, max_steps=3)
    base = ["run", str(plan), "--output", str(out), "--db", str(db), "--num-processes", "2"]
    r = _cli(*base)
    assert r.returncode == 0, r.stderr
    (whole,) = [d for d in out.iterdir() if d.is_dir()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNEPLAN_TEST_PAUSE_AT": "training"}
    proc = subprocess.Popen(
        CLI + base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "paused at training" in line:
                break
        proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler would
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    (cut,) = [d for d in out.iterdir() if d.is_dir() and d != whole]
    assert [s for s, _ in complete_checkpoints(cut)] == [1], (cut / "result.json").read_text()
    assert f"checkpoint step-1 is in it; continue with: tuneplan run --resume {cut}" in err, err
    r2 = _cli("run", "--resume", str(cut), "--db", str(db))
    assert r2.returncode == 0, r2.stderr
    assert _losses(cut) == _losses(whole)
    rows = {x["run_id"]: x for x in store.list_runs(str(db))}
    assert (rows[cut.name]["status"], rows[cut.name]["strategy"]) == ("succeeded", strategy)
    assert rows[cut.name]["num_processes"] == 2
    # clean logs: torchrun's own notices (its agent's SIGTERM handling and traceback) and the
    # workers' C++ warnings are in run.log; the terminal gets only our lines, once (rank 0's)
    cut_err = "".join(seen) + err
    for text in (r.stderr, cut_err, r2.stderr):
        assert noise_in(text) == {} and _only_ours(text, "tuneplan-test: paused at ") == [], text
    assert "torch/distributed/elastic" not in cut_err and "Traceback" not in cut_err, cut_err
    assert cut_err.count("SIGTERM received: finishing this step") == 1, cut_err
    log = (cut / RUN_LOG).read_text()
    assert re.search(r"torch/distributed/elastic/agent/server/api\.py:\d+\] Received 15 death signal", log), (
        log
    )
    assert "SignalException" in log and log.count("launcher: the job's stderr") == 2, log


def test_packing_same_trained_tokens_fewer_steps(tiny, tmp_path):
    runs = {}
    for packing in (False, True):
        d = tmp_path / str(packing)
        d.mkdir()
        plan = _plan(
            d,
            str(tiny),
            max_steps=None,
            num_epochs=1,
            per_device_batch_size=1,
            save_every_steps=None,
            packing=packing,
        )
        res = run_plan(str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(d / "runs"), progress=False)
        ms = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
        runs[packing] = (res, sum(m["trained_tokens"] for m in ms), len(ms))
    (plain, plain_trained, plain_steps), (packed, packed_trained, packed_steps) = runs[False], runs[True]
    assert packed_trained == plain_trained > 0
    assert packed_steps < plain_steps
    assert packed.packing and not plain.packing
    assert plain.padding_fraction == 0.0 and packed.padding_fraction == 0.0  # batch 1: no padding
    assert packed.padded_tokens_per_second and packed.tokens_per_second
    assert any("packed 7 sequences" in s for s in packed.substitutions), packed.substitutions


def test_padding_share_reported(tiny, tmp_path):
    plan = _plan(tmp_path, str(tiny), per_device_batch_size=4, save_every_steps=None)
    res = run_plan(
        str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path / "runs"), progress=False
    )
    ms = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    tokens, positions = sum(m["tokens"] for m in ms), sum(m["positions"] for m in ms)
    assert positions > tokens
    assert res.padding_fraction == pytest.approx(1 - tokens / positions, abs=1e-4)
    assert res.padded_tokens_per_second > res.tokens_per_second


def test_eval_during_training_best_step_and_early_stop(tiny, tmp_path):
    plan = _plan(tmp_path, str(tiny), max_steps=6, eval_every_steps=2, save_every_steps=None)
    res = run_plan(
        str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path / "runs"), progress=False
    )
    ms = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    evals = {m["step"]: m["eval_loss"] for m in ms if "eval_loss" in m}
    assert sorted(evals) == [2, 4, 6] and all("probe_loss" in m for m in ms if "eval_loss" in m)
    assert res.best_step == min(evals, key=evals.get) and res.best_eval_loss == min(evals.values())
    # a learning rate that diverges: eval loss stops improving, patience 1 stops early
    d = tmp_path / "es"
    d.mkdir()
    plan = _plan(
        d,
        str(tiny),
        max_steps=12,
        eval_every_steps=1,
        early_stop_patience=1,
        learning_rate=0.5,
        save_every_steps=None,
    )
    res = run_plan(str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(d / "runs"), progress=False)
    assert res.status == "succeeded" and res.early_stopped and res.steps < 12
    assert "early stop at step" in res.stop_reason


def test_early_stop_needs_eval_every_steps():
    from pydantic import ValidationError

    from tuneplan.base.errors import pydantic_problems
    from tuneplan.schemas import Training

    with pytest.raises(ValidationError, match="eval_every_steps") as info:
        Training(learning_rate=1e-4, max_steps=5, per_device_batch_size=1, seq_len=64, early_stop_patience=2)
    # the exact field, in the validator's own words (no "Value error, " before them)
    (problem,) = pydantic_problems(info.value, prefix="training.")
    assert problem.where == "training.early_stop_patience"
    assert problem.message == "needs evaluations to count: set training.eval_every_steps too"


def test_advisor_proposes_checkpoints_from_the_run_length():
    from tuneplan.advisor.checkpointing import checkpoint_cadence

    assert checkpoint_cadence(1000) == (100, 30.0)
    assert checkpoint_cadence(10) == (None, None)
    assert checkpoint_cadence(None) == (None, 30.0)


def test_disk_full_while_checkpointing_keeps_the_previous_one(tiny, tmp_path, monkeypatch):
    import errno

    from tuneplan.executor import checkpoint as ck

    real = ck._files
    calls = {"n": 0}

    def full(root):
        calls["n"] += 1
        if calls["n"] == 2:  # the second save runs out of space after accelerate wrote its files
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(root)

    monkeypatch.setattr(ck, "_files", full)
    plan = _plan(tmp_path, str(tiny), max_steps=4, save_every_steps=1)
    with pytest.raises(ck.CheckpointFailed, match="no space left on device.*step-1 is intact"):
        run_plan(str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path / "runs"), progress=False)
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir()]
    assert [s for s, _ in complete_checkpoints(run_dir)] == [1]
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    res = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert res.status == "failed" and "step-1 is intact" in res.stop_reason
    shutil.rmtree(run_dir)


def test_report_to_unknown_or_missing_tracker_exits_2(tiny, tmp_path):
    plan = _plan(tmp_path, str(tiny))
    r = _cli(
        "run",
        str(plan),
        "--report-to",
        "tensorboard,neptune",
        "--output",
        str(tmp_path / "runs"),
        "--db",
        str(tmp_path / "db.duckdb"),
    )
    assert r.returncode == 2 and "unknown tracker 'neptune'" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_report_draws_eval_curves_over_steps(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    from tuneplan.executor.ledger.report import _curves, write_report
    from tuneplan.executor.ledger import open_read as open_current

    db = tmp_path / "db.duckdb"
    plan = _plan(tmp_path, str(tiny), max_steps=2, eval_every_steps=1, save_every_steps=None)
    res = run_plan(str(plan), db=str(db), output_dir=str(tmp_path / "runs"), progress=False)
    con = open_current(str(db))
    try:
        curves = _curves(con)
    finally:
        con.close()
    assert [r["step"] for r in curves[res.run_id]] == [1, 2]
    # the curve comes from the DuckDB rows (migration 10): the same values metrics.jsonl holds
    run_dir = Path(res.run_dir)
    jsonl = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    _, rows = store.query(
        str(db), "SELECT step, eval_loss, probe_loss, trained_tokens, positions FROM metrics ORDER BY step"
    )
    assert rows == [
        (m["step"], m["eval_loss"], m["probe_loss"], m["trained_tokens"], m["positions"]) for m in jsonl
    ]
    assert [(r["eval_loss"], r["probe_loss"]) for r in curves[res.run_id]] == [
        (m["eval_loss"], m["probe_loss"]) for m in jsonl
    ]
    best = min(jsonl, key=lambda m: m["eval_loss"])
    _, best_rows = store.query(
        str(db),
        "SELECT run_id, evaluations, best_step, eval_loss_best, early_stopped, best_learning, "
        "forgetting_at_best FROM run_best_eval JOIN runs USING (run_id)",
    )
    assert best_rows == [
        (
            res.run_id,
            2,
            best["step"],
            best["eval_loss"],
            False,
            res.eval_loss_before - best["eval_loss"],
            best["probe_loss"] - res.forgetting_loss_before,
        )
    ]
    _, recorded = store.query(str(db), "SELECT best_step, eval_loss_best, stop_reason FROM runs")
    assert recorded == [(res.best_step, res.best_eval_loss, None)] and res.best_step == best["step"]
    # `runs ingest` of the run directory alone fills the same rows
    fresh = tmp_path / "fresh.duckdb"
    assert store.ingest(str(fresh), [run_dir]) is not None
    _, again = store.query(
        str(fresh), "SELECT step, eval_loss, probe_loss, trained_tokens, positions FROM metrics ORDER BY step"
    )
    assert again == rows
    _, again_best = store.query(str(fresh), "SELECT best_step, eval_loss_best FROM runs")
    assert again_best == [(res.best_step, res.best_eval_loss)]
    paths = write_report(str(db), tmp_path / "report")
    fig = tmp_path / "report" / "eval_curves.png"
    assert fig in paths and fig.stat().st_size > 5000
    assert "eval_curves.png" in (tmp_path / "report" / "report.md").read_text()
