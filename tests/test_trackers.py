"""`tuneplan run --report-to tensorboard|wandb|mlflow` (executor/trackers.py), read back with each
library's own reader: the values they hold are metrics.jsonl's, step by step. W&B runs offline,
MLflow in a local file store under the run directory; nothing leaves the machine. Also the
time-based checkpoints of training.save_every_minutes (executor/train.py), on a fake clock."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path

import pytest

from exec_fixtures import make_plan, one_torch_thread, overfit_rows, tiny_llama_dir, write_jsonl
from helpers import OUR_STDERR_LINE, cli, noise_in
from tuneplan.executor.checkpoint import complete_checkpoints
from tuneplan.executor.runner import run_plan


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("trackers"))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, its config and caches under tmp_path, its server an unused local port."""
    for var in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_SILENT"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "wandb-home"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_BASE_URL": "http://127.0.0.1:9",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # W&B reads the environment once per process setup: read it again
    yield env
    wandb.teardown()


def _plan(tmp_path: Path, model: str, **training) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    t = {"max_steps": 2, "per_device_batch_size": 2, "save_every_steps": None, **training}
    path = tmp_path / "plan.json"
    path.write_text(make_plan("lora", model, train_path=str(train), training=t).model_dump_json())
    return path


def _run(tmp_path: Path, plan: Path, **kw):
    with one_torch_thread():
        return run_plan(
            str(plan), db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path / "runs"), progress=False, **kw
        )


def _metrics(run_dir) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def wandb_records(path: Path):
    """The records of an offline run's ``.wandb`` file, decoded with W&B's own protobufs. The file
    is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks
    (crc32c, length, type: full / first / middle / last) that join into one Record each."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def read_wandb_run(run_dir: Path) -> dict:
    """project, name, config and {step: values} of the one offline W&B run under run_dir/wandb."""
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(run_dir.rglob("*"))
    out: dict = {"history": {}, "config": {}}
    for rec in wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["project"], out["name"] = rec.run.project, rec.run.display_name
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            items = {(i.key or "/".join(i.nested_key)): i.value_json for i in rec.history.item}
            vals = {k: json.loads(v) for k, v in items.items() if not k.startswith("_")}
            out["history"].setdefault(rec.history.step.num, {}).update(vals)
    return out


def test_report_to_tensorboard_writes_event_files(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = _run(tmp_path, _plan(tmp_path, str(tiny), eval_every_steps=1), report_to="tensorboard")
    events = list((Path(res.run_dir) / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, list(Path(res.run_dir).rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"loss", "lr", "eval_loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]
    assert [round(e.value, 5) for e in acc.Scalars("loss")] == [
        round(m["loss"], 5) for m in _metrics(res.run_dir)
    ]


def test_report_to_wandb_and_mlflow_from_the_cli(tiny, tmp_path, offline_wandb, monkeypatch, capfd):
    """One CLI run, both trackers: each holds metrics.jsonl's loss and eval loss per step and the
    plan's settings; the terminal has only tuneplan's own lines; nothing lands outside the run
    directory (the working directory stays empty)."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    plan = _plan(tmp_path, str(tiny), max_steps=3, eval_every_steps=2, learning_rate=3e-4)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "runs"
    capfd.readouterr()
    with one_torch_thread():  # the command's own code path in this process; fd 1 and 2 captured
        code = cli(
            "run",
            str(plan),
            "--report-to",
            "wandb,mlflow",
            "--output",
            str(out),
            "--db",
            str(tmp_path / "db.duckdb"),
        )
    r = capfd.readouterr()
    assert code == 0, r.err
    assert noise_in(r.err + r.out) == {}, r.err
    assert [x for x in r.err.splitlines() if not re.match(OUR_STDERR_LINE, x)] == [], r.err
    assert [x.split()[1] for x in r.err.splitlines() if x.startswith("step ")] == ["1/3", "2/3", "3/3"], r.err
    assert list(cwd.iterdir()) == []
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3] and "eval_loss" in metrics[1]
    result = json.loads((run_dir / "result.json").read_text())
    notes = result["substitutions"]

    wb = read_wandb_run(run_dir)
    assert wb["project"] == "tuneplan" and wb["name"] == run_dir.name
    assert {s: v["loss"] for s, v in wb["history"].items()} == {m["step"]: m["loss"] for m in metrics}
    assert {s: v["eval_loss"] for s, v in wb["history"].items() if "eval_loss" in v} == {
        2: metrics[1]["eval_loss"]
    }
    assert wb["config"]["learning_rate"] == 3e-4 and wb["config"]["max_steps"] == 3
    assert wb["config"]["run_id"] == run_dir.name and wb["config"]["method"] == "lora"
    assert any(n.startswith(f"--report-to wandb: offline run in {run_dir / 'wandb'}") for n in notes), notes

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the store needs it as writing did
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tuneplan").experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, "loss")] == [
        (m["step"], m["loss"]) for m in metrics
    ]
    assert [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, "eval_loss")] == [
        (2, metrics[1]["eval_loss"])
    ]
    params = run.data.params
    assert (
        params["learning_rate"] == "0.0003"
        and params["max_steps"] == "3"
        and params["run_id"] == run_dir.name
    )
    assert any(n.startswith(f"--report-to mlflow: run {run.info.run_id} in file://") for n in notes), notes


def test_mlflow_in_process_leaves_the_tracking_uri_as_it_was(tiny, tmp_path, monkeypatch):
    """A run sets MLflow's process-wide tracking URI to its own store and unsets it at the end:
    the next run in the same process (a sweep) gets its own store, not the previous run's."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, str(tiny), max_steps=1)
    dirs = [Path(_run(tmp_path, plan, report_to="mlflow").run_dir) for _ in range(2)]
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert MLFLOW_DISABLE_TELEMETRY.get() is True  # set before mlflow's first import
    for d in dirs:
        client = mlflow.MlflowClient(tracking_uri=(d / "mlruns").as_uri())
        (run,) = client.search_runs([client.get_experiment_by_name("tuneplan").experiment_id])
        assert run.info.run_name == d.name
        assert [h.step for h in client.get_metric_history(run.info.run_id, "loss")] == [1]


def test_a_tracker_that_cannot_start_is_a_warning_and_a_note(
    tiny, tmp_path, offline_wandb, monkeypatch, capsys
):
    """W&B online without a login: the run goes on and succeeds, a warning says why at once, and
    the run's record keeps it."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    res = _run(tmp_path, _plan(tmp_path, str(tiny), max_steps=1), report_to="wandb")
    assert res.status == "succeeded" and res.steps == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "--report-to" in x]
    assert line.startswith("warning: --report-to: wandb could not start (UsageError: No API key configured")
    assert any(s.startswith("--report-to: wandb could not start") for s in res.substitutions)
    assert not list((Path(res.run_dir) / "wandb").glob("*run-*"))


def test_an_unreachable_mlflow_server_is_a_warning_in_seconds(tiny, tmp_path, monkeypatch, capsys):
    """MLflow gives up on a server that is not there after about 4 minutes by default; at start
    tuneplan asks for one retry, so the warning comes in seconds and the run goes on."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on port 9
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.monotonic()
    res = _run(tmp_path, _plan(tmp_path, str(tiny), max_steps=1), report_to="mlflow")
    assert time.monotonic() - t0 < 60
    assert res.status == "succeeded" and res.steps == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "--report-to" in x]
    assert line.startswith("warning: --report-to: mlflow could not start (MlflowException: API request to ")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # MLflow's own retries again for later calls
    assert not (Path(res.run_dir) / "mlruns").exists()


def test_a_tracker_failing_mid_run_is_a_note_never_a_lost_run(tiny, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from accelerate.tracking import TensorBoardTracker

    calls = []

    def broken_log(self, values, step=None, **kw):
        calls.append(step)
        raise OSError("disk gone")

    monkeypatch.setattr(TensorBoardTracker, "log", broken_log)
    res = _run(tmp_path, _plan(tmp_path, str(tiny), max_steps=2), report_to="tensorboard")
    assert res.status == "succeeded" and res.steps == 2
    assert calls == [1]  # dropped after the first failure
    assert "--report-to: tensorboard stopped logging (OSError: disk gone)" in res.substitutions
    assert [m["step"] for m in _metrics(res.run_dir)] == [1, 2]


class _FakeClock:
    """A monotonic clock that advances ``tick`` seconds each time it is read."""

    def __init__(self, tick: float):
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.mark.parametrize(
    ("tick", "minutes", "saved_at"),
    [
        (29.0, 1.0, [3]),  # read at the start and after each step: 58 s by step 2, 87 s by step 3
        (61.0, 1.0, [1, 2, 3]),  # due after every step (never after the last: the run saves then)
        (61.0, None, []),  # by steps only, and save_every_steps is null: none
    ],
)
def test_save_every_minutes_checkpoints_when_the_minutes_pass(
    tiny, tmp_path, monkeypatch, tick, minutes, saved_at
):
    from tuneplan.executor import train as T

    monkeypatch.setattr(T, "_clock", _FakeClock(tick))
    plan = _plan(tmp_path, str(tiny), max_steps=4, save_every_minutes=minutes, save_total_limit=5)
    res = _run(tmp_path, plan)
    assert res.status == "succeeded" and res.steps == 4
    assert [s for s, _ in complete_checkpoints(Path(res.run_dir))] == saved_at
    assert res.checkpoints_saved == len(saved_at)
