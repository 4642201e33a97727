"""Memory settings end to end: plan field -> estimate term -> executor behaviour -> measured peak.

Dropout 0 / 0.05, QLoRA kbit_upcast on / off, activation offload on / off and chunked
cross-entropy on / off, each run for one profiled optimizer step on the embedded SmolLM2-135M
(CPU, sequences filling seq_len) and compared with the estimator's allocated_peak_bytes: tensor
bytes on both sides (the measured live-tensor peak has no runtime in it). The cheap unit checks
(the chunked loss equals the plain one, offload leaves gradients unchanged and its store empty)
run on the tiny Llama.
"""

from __future__ import annotations

import pytest
import torch

from exec_fixtures import make_plan, tiny_llama_dir
from tuneplan.advisor.estimator import estimate
from tuneplan.advisor.plansettings import settings_of_plan
from tuneplan.executor import measure as M
from tuneplan.executor import memsave as S
from tuneplan.executor import train as T
from tuneplan.executor.data import Example
from tuneplan.executor.loading import load_model
from tuneplan.executor.models import ensure_embedded_model

CPU = torch.device("cpu")
SEQ = 128
TOLERANCE = 0.10


def _fill(tok, n: int, seq_len: int) -> list[Example]:
    ids = [(7 * i + 3) % (len(tok) - 3) + 3 for i in range(n * seq_len)]
    return [
        Example(ids[i * seq_len : (i + 1) * seq_len], ids[i * seq_len : (i + 1) * seq_len]) for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("memsave"))


# ----------------------------------------------------------------------------- unit: the executor pieces


def test_chunked_loss_equals_the_plain_loss_and_its_gradients(tiny):
    plan = make_plan("full", str(tiny))
    model = load_model(plan, tiny, CPU).model
    ids = torch.randint(3, 300, (2, 33))
    labels = ids.clone()
    labels[0, :5] = -100
    mask = torch.ones_like(ids)
    plain = T.token_loss_sum(model(input_ids=ids, attention_mask=mask).logits, labels)
    plain.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    chunked = S.chunked_token_loss_sum(model, S.hidden_states(model, ids, mask), labels, chunk=7)
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, want[n], rtol=1e-4, atol=1e-6), n


def test_offload_keeps_gradients_and_empties_its_store(tiny):
    plan = make_plan("lora", str(tiny))
    model = load_model(plan, tiny, CPU).model
    ids = torch.randint(3, 300, (2, 32))
    mask = torch.ones_like(ids)
    T.token_loss_sum(model(input_ids=ids, attention_mask=mask).logits, ids).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    events: list = []
    off = S.ActivationOffload(CPU, model.parameters(), host_events=events)
    with off:
        logits = model(input_ids=ids, attention_mask=mask).logits
    held = off.host_bytes
    T.token_loss_sum(logits, ids).backward()
    assert held > 0 and off.host_peak_bytes == held  # everything saved in forward went to the host store
    careless = S.ActivationOffload(CPU)  # without the parameters it would copy the weights F.linear saves
    with careless:
        model(input_ids=ids, attention_mask=mask)
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    assert careless.host_bytes - held >= weights // 2
    assert off.host_bytes == 0 and not off.store  # backward brought it all back
    assert sum(b for _, b in events) == 0 and len(events) >= 2
    for n, g in want.items():
        assert torch.allclose(dict(model.named_parameters())[n].grad, g, atol=1e-6), n


def test_device_side_takes_the_host_store_out():
    events = [(10, 100, 100), (20, 50, 150), (30, -100, 50)]
    host = [(15, 100), (25, -100)]
    assert M.device_side(events, host) == [(10, 100, 100), (20, 50, 50), (30, -100, 50)]
    assert M.device_side(events, []) == events


# ----------------------------------------------------------------------------- end to end on the embedded model

CASES = {
    "lora dropout 0": ("lora", dict(), dict(dropout=0.0), dict()),
    "lora dropout 0.05": ("lora", dict(), dict(dropout=0.05), dict()),
    "lora chunked CE (32 tokens)": ("lora", dict(loss_chunk_size=32), dict(dropout=0.0), dict()),
    "lora activation offload": ("lora", dict(activation_offload=True), dict(dropout=0.0), dict()),
    "qlora kbit_upcast on": (
        "qlora",
        dict(precision="bf16-mixed"),
        dict(dropout=0.0),
        dict(kbit_upcast=True, compute_dtype="bfloat16"),
    ),
    "qlora kbit_upcast off": (
        "qlora",
        dict(precision="bf16-mixed"),
        dict(dropout=0.0),
        dict(kbit_upcast=False, compute_dtype="bfloat16"),
    ),
}
RESULTS: dict[str, dict] = {}


def _run_case(name: str) -> dict:
    if name in RESULTS:
        return RESULTS[name]
    from tuneplan.advisor.catalog import model_from_dir

    d = ensure_embedded_model()
    method, training, lora, quant = CASES[name]
    plan = make_plan(
        method,
        str(d),
        training={"per_device_batch_size": 1, "seq_len": SEQ, **training},
        lora=lora,
        quantization=quant,
    )
    plan = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={"model": model_from_dir(d)})})
    est = estimate(plan.inputs.model, settings_of_plan(plan), capacity_bytes=8 << 30, device="cpu")
    loaded = load_model(plan, d, CPU)
    meter = M.MemoryMeter(loaded.model, CPU, runtime_bytes=0)
    subs = T.train(
        loaded, _fill(loaded.tokenizer, 2, SEQ), plan.training, steps=1, meter=meter, state=T.TrainState()
    )
    meter.close()
    model = loaded.model
    RESULTS[name] = r = {
        "predicted": est.allocated_peak_bytes,
        "measured": meter.live_peak_bytes,
        "est": est,
        "subs": subs + loaded.substitutions,
        "params_bytes": meter.params_bytes,
        "dropout_modules": sum(isinstance(m, torch.nn.Dropout) for m in model.modules()),
        "fp32_norms": sum(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n),
    }
    r["error"] = r["predicted"] / r["measured"] - 1
    return r


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_predicted_allocated_peak_matches_the_measured_peak(name):
    r = _run_case(name)
    print(
        f"\n{name}: predicted {r['predicted'] / 2**20:.1f} MiB, measured {r['measured'] / 2**20:.1f} MiB, "
        f"error {r['error']:+.1%}"
    )
    assert abs(r["error"]) <= TOLERANCE, (name, r["predicted"], r["measured"])


@pytest.mark.slow
def test_each_setting_moves_the_estimate_term_the_executor_and_the_peak_together():
    """Every setting: its estimate term exists, the executor did the thing, and the measured
    change in peak follows the predicted change (within 25% of the predicted difference)."""
    base = _run_case("lora dropout 0")

    def delta(name):
        r = _run_case(name)
        return r, r["predicted"] - base["predicted"], r["measured"] - base["measured"]

    r, p, m = delta("lora dropout 0.05")
    assert r["dropout_modules"] > 0 and base["dropout_modules"] == 0  # peft used nn.Dropout vs Identity
    assert any("dropout mask + dropped input" in t.formula for t in r["est"].terms)
    assert p > 0 and abs(m - p) <= 0.25 * p, (p, m)

    r, p, m = delta("lora chunked CE (32 tokens)")
    assert any("one loss chunk" in t.label for t in r["est"].terms)
    assert p < 0 and abs(m - p) <= 0.25 * -p, (p, m)

    r, p, m = delta("lora activation offload")
    assert any("activation_offload" in s for s in r["subs"])
    assert r["est"].host_bytes > 0 and any("in flight" in t.label for t in r["est"].terms)
    assert p < 0 and abs(m - p) <= 0.25 * -p, (p, m)

    on, off = _run_case("qlora kbit_upcast on"), _run_case("qlora kbit_upcast off")
    assert on["fp32_norms"] > 0 and off["fp32_norms"] == 0  # the executor did (not) upcast
    assert any("prepare_model_for_kbit_training" in t.label for t in on["est"].terms)
    assert not any("prepare_model_for_kbit_training" in t.label for t in off["est"].terms)
    p, m = on["predicted"] - off["predicted"], on["measured"] - off["measured"]
    assert p > 0 and abs(m - p) <= 0.25 * p, (p, m)
