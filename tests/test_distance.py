"""Measured domain distance: the SVD rank maths, the hook-collected gradient, the verdict, the
reference tasks (tiny model from a config; no download)."""

from __future__ import annotations

import re

import pytest

from tuneplan.executor.distance import reference, spectrum, verdict


def test_rank_for_energy_on_known_spectra():
    # energies 16, 9, 4, 1, 0 (total 30): 90% = 27 needs the top 3 (29), 50% the top 1 (16 > 15)
    s = [4.0, 3.0, 2.0, 1.0, 0.0]
    assert spectrum.rank_for_energy(s, 0.9) == 3
    assert spectrum.rank_for_energy(s, 0.5) == 1
    assert spectrum.rank_for_energy(s, 1.0) == 4
    assert spectrum.energy_at_rank(s, 2) == pytest.approx(25 / 30)
    assert spectrum.energy_at_rank(s, 10) == 1.0
    assert spectrum.rank_for_energy([0.0, 0.0]) == 0 and spectrum.energy_at_rank([0.0], 1) == 1.0
    with pytest.raises(ValueError):
        spectrum.rank_for_energy(s, 0.0)


def test_svdvals_of_a_built_low_rank_matrix_give_its_rank():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(96, 96, generator=g))
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    # rank 5 with equal singular values: 90% of the energy needs 5 directions (4 hold 80%)
    sig = torch.zeros(64)
    sig[:5] = 2.0
    m = u[:, :64] @ torch.diag(sig) @ v.T
    values = spectrum.singular_values(m)
    assert spectrum.rank_for_energy(values) == 5
    assert spectrum.energy_at_rank(values, 4) == pytest.approx(0.8, abs=1e-5)
    # one dominant direction holding > 90%: rank 1
    sig2 = torch.tensor([10.0, 1.0, 1.0, 1.0] + [0.0] * 60)
    assert spectrum.rank_for_energy(spectrum.singular_values(u[:, :64] @ torch.diag(sig2) @ v.T)) == 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    import torch

    from tests.exec_fixtures import tiny_llama_dir
    from tuneplan.executor.distance.measure import load_base
    from tuneplan.executor.loading import load_tokenizer

    d = tiny_llama_dir(tmp_path_factory.mktemp("tiny"))
    return load_base(d, torch.device("cpu"), "fp32"), load_tokenizer(d), d


def _rows(n):
    from tuneplan.executor.data import Row

    return [
        Row(
            f"t[{i}]",
            "prompt-completion",
            {"prompt": f"convert the date {i}", "completion": f" 2021-0{i % 9 + 1}-05"},
        )
        for i in range(n)
    ]


def test_hook_gradient_equals_autograd_weight_gradient(tiny):
    import torch
    import torch.nn.functional as F

    from tuneplan.executor.data import collate, encode_rows
    from tuneplan.executor.distance.measure import accumulate_gradients, sample_linears, target_batches

    model, tok, _ = tiny
    examples, _ = encode_rows(_rows(6), tok, 64)
    batches = target_batches(examples, tokens_per_batch=8, micro_batches=2, seed=0)
    assert len(batches) == 2
    layers = sample_linears(model, depths=2)
    assert {b for _n, b, _m in layers} == {0, 1}
    kinds = {n.rsplit(".", 1)[-1] for n, _b, _m in layers}
    assert {"q_proj", "o_proj", "up_proj", "down_proj"} <= kinds
    grads, losses = accumulate_gradients(
        model, batches, layers, pad_id=tok.pad_token_id, device=torch.device("cpu")
    )
    # the same gradient by plain autograd on the weights
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad()
    try:
        for chunk in batches:
            batch = collate(chunk, tok.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
                :, :-1
            ]
            labels = batch["labels"][:, 1:]
            F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100
            ).backward()
        for name, _b, module in layers:
            assert torch.allclose(grads[name], module.weight.grad, rtol=1e-4, atol=1e-6), name
        n_targets = sum(int((collate(c, tok.pad_token_id)["labels"][:, 1:] != -100).sum()) for c in batches)
        assert len(losses) == n_targets
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None


def test_one_short_row_gives_a_gradient_of_known_low_rank(tiny):
    """dL/dW = sum over positions of g_t x_t^T: one row of n tokens gives rank <= n - 1 (the last
    position predicts nothing), and the measured rank finds it."""
    import torch

    from tuneplan.executor.data import Example
    from tuneplan.executor.distance.measure import LayerSpectrum, accumulate_gradients, sample_linears

    model, tok, _ = tiny
    ex = Example([5, 17, 33, 40], [5, 17, 33, 40])  # 3 predicted tokens: positions 0..2 carry gradient
    layers = sample_linears(model, depths=1)
    grads, _ = accumulate_gradients(
        model, [[ex]], layers, pad_id=tok.pad_token_id, device=torch.device("cpu")
    )
    for name, block, m in layers:
        sv = spectrum.singular_values(grads[name])
        layer = LayerSpectrum(name, "x", block, m.out_features, m.in_features, sv)
        assert spectrum.rank_for_energy(sv, 1.0) <= 3, name
        assert layer.energy_at(3) == pytest.approx(1.0, abs=1e-5)
        assert 1 <= layer.rank_90 <= 3 and layer.rank_90_share == layer.rank_90 / min(
            m.out_features, m.in_features
        )


def test_measure_loaded_reports_every_signal(tiny):
    import torch

    from tuneplan.executor.distance.measure import HIGH_LOSS_NATS, measure_loaded

    model, tok, d = tiny
    m = measure_loaded(
        model,
        tok,
        _rows(12),
        model_name="tiny",
        model_dir=str(d),
        load="fp32",
        device=torch.device("cpu"),
        tokens_per_batch=16,
        micro_batches=2,
        depths=2,
        seq_len=64,
    )
    assert m.micro_batches == 2 and m.target_tokens >= 32 and m.rows >= 2
    assert m.target_loss > 0 and m.probe_loss > 0 and 0 <= m.high_loss_share <= 1
    assert len(m.layers) == 14  # 7 linears (q, k, v, o, gate, up, down) x 2 blocks
    assert {layer.kind for layer in m.layers} == {"attention", "mlp"}
    assert all(1 <= layer.rank_90 <= layer.max_rank for layer in m.layers)
    assert HIGH_LOSS_NATS == pytest.approx(2.3)


def test_verdict_bands_and_the_fit_raise():
    t = verdict.DEFAULT
    assert verdict.judge(0.01, 0.1).distance == "near"
    assert verdict.judge(t.rank_moderate, 0.1).distance == "moderate"
    assert verdict.judge(t.rank_far, 0.1).distance == "far"
    raised = verdict.judge(0.01, t.fit_far)
    assert (raised.distance, raised.rank_verdict, raised.fit_verdict) == ("moderate", "near", "far")
    assert verdict.judge(t.rank_far, 0.0).score == pytest.approx(0.5)
    assert verdict.judge(0.0, 0.0).score == 0.0
    assert verdict.disagreement("near", "near", 0.1) == ""
    warn = verdict.disagreement("near", "far", 1.2)
    assert "--domain near" in warn and "far" in warn and "keeps near" in warn


def test_reference_tasks_are_deterministic_and_correct():
    for task in reference.TASKS:
        a, b = reference.reference_records(task, 5), reference.reference_records(task, 5)
        assert a == b and len(a) == 5
        assert all(r["messages"][0]["role"] == "user" and r["messages"][1]["content"].strip() for r in a)
    kinds = set()
    for r in reference.reference_records("arithmetic", 60):
        q, ans = r["messages"][0]["content"], r["messages"][1]["content"]
        n = [int(x) for x in re.findall(r"-?\d+", q)]
        if q.startswith("Solve"):
            kinds.add("eq")
            a, c = n[0], n[-1]
            m = re.search(r"x ([+-]) (\d+)", q)
            b = int(m.group(1) + m.group(2))
            x = int(re.search(r"= (-?\d+)\.$", ans).group(1))
            assert a * x + b == c, (q, ans)
        elif "×" in q:
            kinds.add("mul")
            assert ans.endswith(f"So {n[0]} × {n[1]} = {n[0] * n[1]}."), (q, ans)
        elif "+" in q and q.startswith("What"):
            kinds.add("add")
            assert ans.endswith(f"So the sum is {sum(n)}."), (q, ans)
        elif " - " in q:
            kinds.add("sub")
            n = [int(x) for x in re.findall(r"\d+", q)]
            assert ans.startswith(f"{n[0]} - {n[1]} = {n[0] - n[1]}."), (q, ans)
        elif q.startswith("Divide"):
            kinds.add("div")
            assert ans.endswith(f"quotient {n[0] // n[1]}, remainder {n[0] % n[1]}."), (q, ans)
        elif "%" in q:
            kinds.add("pct")
            assert n[0] * n[1] % 100 == 0 and ans.endswith(f"= {n[0] * n[1] // 100}."), (q, ans)
        else:
            raise AssertionError(q)
    assert kinds == {"mul", "add", "sub", "div", "pct", "eq"}
    for r in reference.reference_records("date", 20):
        assert re.fullmatch(r"20[2-5]\d-\d\d-\d\d", r["messages"][1]["content"])
    code = reference.reference_records("code", 5)
    files = {p.name for p in reference.stdlib_files()}
    for r in code:
        name = re.match(r"Continue this Python code from (\S+):", r["messages"][0]["content"]).group(1)
        assert name in files
    with pytest.raises(ValueError):
        reference.reference_records("poetry", 1)


@pytest.mark.slow
def test_embedded_model_orders_the_date_task_nearer_than_code_and_arithmetic():
    """The shipped reference tasks on the embedded SmolLM2-135M (few micro-batches, short)."""
    import torch

    from tuneplan.executor.distance.evidence import to_evidence
    from tuneplan.executor.distance.measure import load_base, measure_loaded
    from tuneplan.executor.distance.reference import reference_rows
    from tuneplan.executor.loading import load_tokenizer
    from tuneplan.executor.models import ensure_embedded_model

    d = ensure_embedded_model()
    model, tok = load_base(d, torch.device("cpu"), "fp32"), load_tokenizer(d)
    found, probe = {}, None
    for task in ("date", "code", "arithmetic"):
        m = measure_loaded(
            model,
            tok,
            reference_rows(task, 48),
            model_name="SmolLM2-135M-Instruct",
            model_dir=str(d),
            load="fp32",
            device=torch.device("cpu"),
            tokens_per_batch=96,
            micro_batches=2,
            depths=3,
            probe_tokens=256,
            known_probe_loss=probe,
        )
        probe = m.probe_loss
        found[task] = to_evidence(m, data_label=f"reference:{task}", declared=None, proxy=False, lora_rank=16)
    date, code, arith = found["date"], found["code"], found["arithmetic"]
    assert date.score < code.score and date.score < arith.score, {t: e.score for t, e in found.items()}
    assert date.rank.mean_rank_90_share < code.rank.mean_rank_90_share
    assert date.rank.mean_energy_at_lora_rank > code.rank.mean_energy_at_lora_rank
    assert date.fit.high_loss_share < code.fit.high_loss_share
    assert date.measured == "near" and code.measured != "near"
    assert all(e.fit.target_tokens >= 96 and e.rank.micro_batches == 2 for e in found.values())


def test_a_measurement_lands_in_duckdb_with_its_evidence(tiny, tmp_path):
    import json

    import duckdb
    import torch

    from tuneplan.executor.distance.evidence import to_evidence, warning_for
    from tuneplan.executor.distance.measure import measure_loaded
    from tuneplan.executor.distance.record import record_measurement
    from tuneplan.schemas import DistanceEvidence

    model, tok, d = tiny
    m = measure_loaded(
        model,
        tok,
        _rows(8),
        model_name="tiny",
        model_dir=str(d),
        load="fp32",
        device=torch.device("cpu"),
        tokens_per_batch=8,
        micro_batches=2,
        depths=1,
        seq_len=64,
    )
    ev = to_evidence(m, data_label="reference:date", declared="far", proxy=True, lora_rank=4)
    assert ev.source == "declared" and ev.declared == "far" and ev.rank.lora_rank == 4
    assert (warning_for(ev) != "") == (ev.measured != "far")
    assert DistanceEvidence.model_validate_json(ev.model_dump_json()) == ev
    db = tmp_path / "runs.duckdb"
    record_measurement(db, ev, plan_model="big-llama", plan_hash="abc123")
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(
            "SELECT measure_id, plan_model, model, proxy, verdict, score, lora_rank, "
            "high_loss_share, mean_rank_90_share, plan_hash, evidence_json "
            "FROM distance_measurements"
        ).fetchall()
    finally:
        con.close()
    assert len(row) == 1
    mid, plan_model, model_name, proxy, v, score, rank, hi, r90, ph, blob = row[0]
    assert (mid, plan_model, model_name, proxy, v, rank, ph) == (
        ev.measure_id,
        "big-llama",
        "tiny",
        True,
        ev.measured,
        4,
        "abc123",
    )
    assert score == pytest.approx(ev.score) and hi == pytest.approx(ev.fit.high_loss_share)
    assert r90 == pytest.approx(ev.rank.mean_rank_90_share)
    assert len(json.loads(blob)["rank"]["layers"]) == 7
