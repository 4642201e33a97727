"""Executor memory measurement on CPU: the profiled live-tensor peak, its components, and how it
compares with the estimator on a tiny Llama."""

from __future__ import annotations

import pytest
import torch

from exec_fixtures import make_plan, overfit_rows, tiny_llama_dir, write_jsonl
from tuneplan.advisor.estimator import estimate
from tuneplan.executor import measure as M
from tuneplan.executor import ledger as store
from tuneplan.executor import train as T
from tuneplan.executor.data import Example
from tuneplan.executor.loading import load_model
from tuneplan.executor.runner import run_plan
from tuneplan.schemas import MemorySettings

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("measure"))


def _linear_step(meter, model, opt, step, steps, temp_bytes=0):
    x = torch.randn(16, 256)
    batch = {"input_ids": torch.zeros(1, 8, dtype=torch.long)}
    meter.begin_step(step, [batch], steps)
    with meter.forward():
        out = model(x)
        loss = out.pow(2).mean()
        if temp_bytes:  # a big temporary that lives and dies inside the step
            tmp = torch.ones(temp_bytes // 4)
            loss = loss + tmp[:1].sum() * 0
            del tmp
    meter.end_forward(out)
    del out
    loss.backward()
    meter.after_backward()
    opt.step()
    meter.after_step(opt)
    meter.end_step()
    opt.zero_grad(set_to_none=True)


def _linear_meter(temp_bytes: int, steps: int = 2):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    meter = M.MemoryMeter(model, CPU, runtime_bytes=1000)
    for step in range(1, steps + 1):
        _linear_step(meter, model, opt, step, steps, temp_bytes if step == 2 else 0)
    meter.close()
    return meter


def test_profiled_peak_covers_the_components_and_the_runtime():
    meter = _linear_meter(0)
    m = meter.result()
    assert meter.measured_steps == [2] and meter.live_peak_bytes > 0
    state = m.params_bytes + m.grads_bytes + m.optimizer_bytes
    assert m.grads_bytes == m.params_bytes
    assert 0 <= m.optimizer_bytes - 2 * m.params_bytes <= 64  # fp32 AdamW m, v (+ scalar steps)
    assert m.peak_bytes == 1000 + meter.live_peak_bytes
    assert m.runtime_bytes == 1000  # recorded, so like-for-like can take it out again
    assert m.peak_bytes - 1000 >= state
    assert m.peak_bytes - 1000 >= m.params_bytes + m.optimizer_bytes + m.saved_tensors_peak_bytes
    assert meter.last["phases"].keys() == {"forward", "backward", "optimizer"}


def test_profiler_sees_a_transient_the_saved_tensors_miss():
    big = 64 << 20
    plain, spiky = _linear_meter(0), _linear_meter(big)
    assert spiky.saved_peak_bytes == plain.saved_peak_bytes  # never saved for backward
    grew = spiky.last["phases"]["forward"] - plain.last["phases"]["forward"]
    assert big - (64 << 10) <= grew < big + (1 << 20)  # other forward temporaries may be freed by then
    assert spiky.live_peak_bytes >= spiky.last["live_at_start"] + big
    assert big - (4 << 20) < spiky.live_peak_bytes - plain.live_peak_bytes < big + (1 << 20)


def test_only_designated_steps_are_measured():
    meter = M.MemoryMeter(torch.nn.Linear(2, 2), CPU)
    lens = {1: 10, 2: 10, 3: 9, 4: 12, 5: 12, 6: 11, 7: 20}
    got = []
    for step, n in lens.items():
        if meter.measure_step(step, n, steps=7):
            meter.measured_steps.append(step)
            meter.measured_len = max(meter.measured_len, n)
            got.append(step)
    assert got == [2, 4, 7]
    assert M.MemoryMeter(torch.nn.Linear(2, 2), CPU).measure_step(1, 5, steps=1)


def test_window_peaks_by_phase():
    events = [(1, 100, 100), (2, 50, 150), (3, -100, 50), (5, 400, 450), (6, -400, 50), (9, 10, 60)]
    peak, phases = M.window_peaks(events, {"forward": 2, "backward": 5, "optimizer": 9})
    assert peak == 450 and phases == {"forward": 150, "backward": 450, "optimizer": 60}


def test_run_plan_reports_the_profiled_peak(tiny, tmp_path):
    rows = write_jsonl(tmp_path / "train.jsonl", overfit_rows(8))
    plan = make_plan("lora", str(tiny), train_path=str(rows), eval_path=str(rows), training={"max_steps": 3})
    r = run_plan(plan, db=str(tmp_path / "db.duckdb"), output_dir=str(tmp_path), progress=False)
    m = r.measured
    assert r.status == "succeeded" and m.device_kind == "cpu"
    assert m.peak_bytes >= m.params_bytes + m.grads_bytes + m.optimizer_bytes + (100 << 20)  # + runtime RSS
    assert m.peak_bytes >= m.saved_tensors_peak_bytes
    # the runtime part is recorded: what is left is the live-tensor peak, at least the states
    assert m.runtime_bytes >= 100 << 20
    assert m.peak_bytes - m.runtime_bytes >= m.params_bytes + m.grads_bytes + m.optimizer_bytes
    (row,) = store.list_runs(str(tmp_path / "db.duckdb"))
    assert row["runtime_bytes"] == m.runtime_bytes
    note = [s for s in r.substitutions if s.startswith("memory: CPU peak measured on step(s) 2 only")]
    assert note and "RSS before the model loaded" in note[0]


def _fill(tok, n: int, seq_len: int) -> list[Example]:
    ids = [(7 * i + 3) % (len(tok) - 3) + 3 for i in range(n * seq_len)]
    return [
        Example(ids[i * seq_len : (i + 1) * seq_len], ids[i * seq_len : (i + 1) * seq_len]) for i in range(n)
    ]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_measured_live_peak_matches_the_estimator(tiny, method):
    """Same shapes as the estimate (sequences fill seq_len): live-tensor peak within ±20% of the
    estimator's total without its framework terms (runtime, fragmentation)."""
    plan = make_plan(
        method, str(tiny), training={"per_device_batch_size": 4, "seq_len": 64}, lora={"dropout": 0.05}
    )
    loaded = load_model(plan, tiny, CPU)
    meter = M.MemoryMeter(loaded.model, CPU, runtime_bytes=0)
    T.train(loaded, _fill(loaded.tokenizer, 8, 64), plan.training, steps=2, meter=meter, state=T.TrainState())
    meter.close()
    assert meter.measured_steps == [2] and meter.measured_len == 64
    st = MemorySettings(
        method=method,
        precision="fp32",
        optimizer="adamw",
        gradient_checkpointing=False,
        attention="sdpa",
        micro_batch=4,
        seq_len=64,
        lora_rank=8 if method != "full" else None,
        target_modules=["all-linear"] if method != "full" else None,
        lora_dropout=0.05 if method != "full" else None,
    )
    est = estimate(plan.inputs.model, st, capacity_bytes=8 << 30, device="cpu")
    predicted = est.per_device_bytes - est.breakdown.framework_overhead
    err = meter.live_peak_bytes / predicted - 1
    assert abs(err) <= 0.20, (method, meter.live_peak_bytes, predicted, meter.last)


def test_an_interrupted_profiled_step_leaves_no_profiler_running():
    model = torch.nn.Linear(8, 8)
    meter = M.MemoryMeter(model, CPU, runtime_bytes=0)
    meter.begin_step(1, [{"input_ids": torch.zeros(1, 4, dtype=torch.long)}], steps=1)
    assert meter._prof is not None and meter._prof in M._RUNNING
    m = meter.result()  # what run_plan's `finally` does after a KeyboardInterrupt mid-step
    assert meter._prof is None and not M._RUNNING and m.peak_bytes >= m.params_bytes
    meter.close()


def test_cuda_peak_has_no_runtime_part(monkeypatch):
    """CUDA peak_bytes is max_memory_allocated, which has no CUDA context in it: runtime_bytes is
    0 whatever the process RSS was (no GPU needed: the allocator statistics are stubbed)."""
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5000)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 6000)
    meter = M.MemoryMeter(torch.nn.Linear(4, 4), torch.device("cuda"), runtime_bytes=123 << 20)
    m = meter.result()
    meter.close()
    assert (m.device_kind, m.peak_bytes, m.runtime_bytes) == ("cuda", 5000, 0)
    assert m.cuda_max_reserved_bytes == 6000
