"""Catalog models and GPUs, config.json models, --params guesses, hardware detection."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneplan.advisor import catalog, hardware
from tuneplan.base.errors import InputError
from tuneplan.schemas import CPUHardware, GiB, ModelSpec

# Published totals (model cards / papers), in parameters.
PUBLISHED = {
    "meta-llama/Llama-2-7b-hf": 6.74e9,
    "meta-llama/Llama-2-13b-hf": 13.0e9,
    "meta-llama/Llama-2-70b-hf": 69.0e9,
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "meta-llama/Llama-3.1-70B": 70.6e9,
    "meta-llama/Llama-3.1-405B": 405.9e9,
    "meta-llama/Llama-3.2-1B": 1.24e9,
    "meta-llama/Llama-3.2-3B": 3.21e9,
    "mistralai/Mistral-7B-v0.1": 7.24e9,
    "Qwen/Qwen2.5-0.5B": 0.494e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
    "Qwen/Qwen2.5-72B": 72.7e9,
    "google/gemma-2-2b": 2.61e9,
    "google/gemma-2-9b": 9.24e9,
    "google/gemma-2-27b": 27.2e9,
    "microsoft/Phi-3-mini-4k-instruct": 3.82e9,
    "HuggingFaceTB/SmolLM2-135M": 134.5e6,
    "HuggingFaceTB/SmolLM2-1.7B": 1.71e9,
    "openai-community/gpt2": 124.4e6,
    "openai-community/gpt2-xl": 1.56e9,
    "gpt3-175b": 175e9,
}


def _problem(exc: pytest.ExceptionInfo) -> tuple[str, str, str]:
    """(where, message, fix) of the single problem an InputError carries."""
    (p,) = exc.value.problems
    return p.where, p.message, p.fix


# --------------------------------------------------------------------------- models


def test_catalog_imports_only_stdlib_and_pydantic_at_module_level() -> None:
    files = [*Path(catalog.__file__).parent.glob("*.py"), Path(hardware.__file__)]
    assert len(files) >= 7
    roots = set()
    for node in (n for f in files for n in ast.parse(f.read_text()).body):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots <= set(sys.stdlib_module_names) | {"pydantic", "tuneplan"}


def test_every_catalog_model_builds_and_cites_a_source() -> None:
    models = catalog.list_models()
    assert len(models) >= 30
    for m in models:
        assert isinstance(m, ModelSpec) and m.origin == "catalog" and m.source
        ModelSpec.model_validate(m.model_dump())


def test_short_names_are_unique() -> None:
    shorts = [m.name.rsplit("/", 1)[-1].lower() for m in catalog.list_models()]
    assert len(shorts) == len(set(shorts))


@pytest.mark.parametrize("name,published", sorted(PUBLISHED.items()))
def test_totals_match_published_sizes(name: str, published: float) -> None:
    assert catalog.get_model(name).total_params == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize(
    "query",
    ["meta-llama/Llama-3.1-8B", "Llama-3.1-8B", "llama-3.1-8b", "Meta-Llama/Llama-3.1-8B", "  LLAMA-3.1-8B "],
)
def test_lookup_by_full_id_short_name_and_case(query: str) -> None:
    assert catalog.get_model(query).name == "meta-llama/Llama-3.1-8B"


def test_architecture_details() -> None:
    assert catalog.get_model("Llama-3.2-1B").tie_word_embeddings
    assert catalog.get_model("Qwen2.5-3B").tie_word_embeddings
    assert not catalog.get_model("Qwen2.5-7B").tie_word_embeddings
    g9 = catalog.get_model("gemma-2-9b")
    assert (g9.head_dim, g9.num_key_value_heads, g9.tie_word_embeddings) == (256, 8, True)
    assert catalog.get_model("gemma-2-27b").head_dim == 128
    gpt2 = catalog.get_model("gpt2")
    assert gpt2.family == "gpt2" and not gpt2.gated_mlp
    assert gpt2.params.embedding == (50257 + 1024) * 768
    assert catalog.get_model("gpt3-175b").family == "gpt3"
    assert catalog.get_model("Phi-3-mini-4k-instruct").module_names == [
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    ]


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(InputError) as exc:
        catalog.get_model("llama-3.1-8")
    where, message, fix = _problem(exc)
    assert where == "--model" and "llama-3.1-8" in message
    assert "meta-llama/Llama-3.1-8B" in fix


def test_unknown_model_without_close_names_still_says_what_to_do() -> None:
    with pytest.raises(InputError) as exc:
        catalog.get_model("zzzzzz")
    assert "tuneplan models" in _problem(exc)[2]


# --------------------------------------------------------------------------- config.json models


def test_config_dict_unknown_llama_like_type_is_read_as_llama() -> None:
    cfg = dict(
        catalog.get_model("SmolLM2-135M").model_dump(include={"vocab_size"}),
        model_type="newthing",
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
    )
    spec = catalog.model_from_config_dict(cfg, "x")
    assert spec.family == "llama" and spec.origin == "config" and "newthing" in spec.source


def test_config_dict_unsupported_type_and_missing_keys() -> None:
    with pytest.raises(InputError) as exc:
        catalog.model_from_config_dict({"model_type": "t5", "d_model": 512}, "t5-small")
    assert _problem(exc)[0] == "--model" and "t5" in _problem(exc)[1]
    with pytest.raises(InputError) as exc:
        catalog.model_from_config_dict({"model_type": "llama", "hidden_size": 64}, "broken")
    assert "num_hidden_layers" in _problem(exc)[1]


def test_config_dict_inconsistent_heads() -> None:
    cfg = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 3,
        "vocab_size": 100,
    }
    with pytest.raises(InputError) as exc:
        catalog.model_from_config_dict(cfg, "odd")
    assert "num_key_value_heads" in _problem(exc)[1]


@pytest.mark.parametrize(
    "setup,needle",
    [
        (lambda d: d / "missing", "no such file"),
        (lambda d: d, "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json") and d, "JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]") and d, "JSON object"),
    ],
)
def test_bad_model_dir(tmp_path, setup, needle: str) -> None:
    path = setup(tmp_path)
    with pytest.raises(InputError) as exc:
        catalog.model_from_dir(path)
    where, message, fix = _problem(exc)
    assert where == "--model" and needle in message and str(tmp_path) in message and fix


TINY = {
    "llama": {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    },
    "llama-tied": {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 300,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
    },
    "qwen2": {
        "model_type": "qwen2",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
    },
    "gemma2": {
        "model_type": "gemma2",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 300,
        "max_position_embeddings": 128,
    },
    "phi3": {
        "model_type": "phi3",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 300,
        "max_position_embeddings": 128,
        "pad_token_id": 0,
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_layer": 2,
        "n_embd": 64,
        "n_head": 4,
        "vocab_size": 300,
        "n_positions": 128,
    },
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_model_dir_counts_match_transformers_meta_device(tmp_path, kind: str) -> None:
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    (tmp_path / "config.json").write_text(json.dumps(TINY[kind]))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(tmp_path)))
    expected = dict.fromkeys(("embedding", "attention", "mlp", "norm", "lm_head"), 0)
    for name, param in model.named_parameters():
        expected[catalog.param_kind(name)] += param.numel()

    formula = catalog.model_from_config_dict(TINY[kind], "tiny")
    assert formula.params.model_dump() == expected
    spec = catalog.model_from_dir(tmp_path)
    assert spec.origin == "config" and spec.params.model_dump() == expected
    assert "counts match transformers" in spec.source


def test_model_dir_transformers_counts_replace_the_formula_when_they_differ(tmp_path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    cfg = dict(TINY["llama"], mlp_bias=True)  # the formula has no MLP biases; transformers does
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    formula = catalog.model_from_config_dict(cfg, "tiny")
    spec = catalog.model_from_dir(tmp_path)
    assert spec.params.mlp == formula.params.mlp + 2 * (2 * 160 + 64)
    assert "replace" in spec.source


# --------------------------------------------------------------------------- --params guesses


@pytest.mark.parametrize(
    "params,expected",
    [
        ("1B", 1e9),
        ("7B", 7e9),
        ("13B", 13e9),
        ("70B", 70e9),
        ("350M", 350e6),
        ("7b", 7e9),
        ("1.5B", 1.5e9),
        (7e9, 7e9),
        ("7e9", 7e9),
    ],
)
def test_guess_lands_within_five_percent(params, expected: float) -> None:
    spec = catalog.guess_model(params)
    assert spec.origin == "guess" and "guess" in spec.source
    assert spec.total_params == pytest.approx(expected, rel=0.05)


def test_guess_names_and_shapes() -> None:
    assert catalog.guess_model("7b").name == "guess-7B"
    assert catalog.guess_model(1.5e9).name == "guess-1.5B"
    big = catalog.guess_model("70B")
    assert big.num_key_value_heads == 8 and big.hidden_size == 8192 and big.vocab_size == 128256
    assert catalog.guess_model("7B").num_key_value_heads == catalog.guess_model("7B").num_attention_heads


@pytest.mark.parametrize("bad", ["seven", "7X", "", "1K", "5T", -3, True])
def test_guess_rejects_bad_counts(bad) -> None:
    with pytest.raises(InputError) as exc:
        catalog.guess_model(bad)
    assert _problem(exc)[0] == "--params"


# --------------------------------------------------------------------------- GPUs


@pytest.mark.parametrize(
    "query,name",
    [
        ("a100-80gb", "NVIDIA A100 80GB"),
        ("A100 80GB", "NVIDIA A100 80GB"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB"),
        ("rtx4090", "NVIDIA GeForce RTX 4090"),
        ("4090", "NVIDIA GeForce RTX 4090"),
        ("RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("t4", "NVIDIA T4"),
        ("Tesla T4", "NVIDIA T4"),
        ("h100", "NVIDIA H100 80GB"),
        ("H100 PCIe", "NVIDIA H100 80GB"),
        ("h100-nvl", "NVIDIA H100 NVL"),
        ("l40s", "NVIDIA L40S"),
        ("l4", "NVIDIA L4"),
        ("A10G", "NVIDIA A10G"),
        ("a10", "NVIDIA A10"),
        ("mi300x", "AMD Instinct MI300X"),
        ("RTX 6000 Ada Generation", "NVIDIA RTX 6000 Ada"),
        ("4060ti", "NVIDIA GeForce RTX 4060 Ti 16GB"),
    ],
)
def test_gpu_lookup_and_aliases(query: str, name: str) -> None:
    assert catalog.get_gpu(query).name == name


def test_gpu_hardware_memory_and_bf16() -> None:
    t4 = catalog.gpu_hardware("t4", count=2, nodes=3)
    assert t4.memory_bytes == 15360 * 1024**2 and not t4.bf16 and t4.total_devices == 6
    a100 = catalog.gpu_hardware("a100-80gb")
    assert a100.memory_bytes == 80 * GiB and a100.bf16 and a100.vendor == "nvidia"
    assert catalog.gpu_hardware("H200").memory_bytes == 143771 * 1024**2
    assert not catalog.gpu_hardware("v100-32gb").bf16
    assert catalog.gpu_hardware("mi300x").vendor == "amd"


def test_every_gpu_row_is_complete() -> None:
    rows = catalog.list_gpus()
    assert len(rows) >= 25
    for row in rows:
        hw = catalog.gpu_hardware(row.name)
        assert hw.memory_bytes == row.memory_bytes > 8 * GiB and row.source


def test_unknown_and_ambiguous_gpus() -> None:
    with pytest.raises(InputError) as exc:
        catalog.get_gpu("rtx 4900")
    where, message, fix = _problem(exc)
    assert where == "--gpu" and "rtx 4900" in message and "RTX 4090" in fix
    with pytest.raises(InputError) as exc:
        catalog.get_gpu("A100")
    assert "A100 40GB" in _problem(exc)[2] and "A100 80GB" in _problem(exc)[2]


def test_bad_gpu_count_names_the_flag() -> None:
    with pytest.raises(InputError) as exc:
        catalog.gpu_hardware("t4", count=0)
    assert _problem(exc)[0] == "--gpus"


def test_custom_gpu() -> None:
    hw = catalog.custom_gpu(24, count=4)
    assert hw.name == "custom 24 GiB" and hw.memory_bytes == 24 * GiB and hw.bf16 and hw.count == 4
    for bad in (0, -1, float("inf")):
        with pytest.raises(InputError) as exc:
            catalog.custom_gpu(bad)
        assert _problem(exc)[0] == "--gpu-memory"


# --------------------------------------------------------------------------- this machine


def test_cpu_hardware_reads_this_machine() -> None:
    hw = hardware.cpu_hardware()
    assert hw.memory_bytes > 256 * 1024**2 and hw.cores >= 1 and hw.name


def test_detect_hardware_on_this_machine() -> None:
    hw = hardware.detect_hardware()
    if hardware.shutil.which("nvidia-smi") is None:
        assert isinstance(hw, CPUHardware)
    assert hw.memory_bytes > 0


def test_detect_hardware_without_nvidia_smi(monkeypatch) -> None:
    monkeypatch.setattr(hardware.shutil, "which", lambda _: None)
    assert isinstance(hardware.detect_hardware(), CPUHardware)


def _fake_smi(monkeypatch, stdout: str) -> None:
    """Make nvidia-smi appear installed and print `stdout`."""
    monkeypatch.setattr(hardware.shutil, "which", lambda _: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        hardware.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=stdout)
    )


def test_detect_hardware_parses_nvidia_smi(monkeypatch) -> None:
    _fake_smi(monkeypatch, "NVIDIA A100-SXM4-80GB, 81920\nNVIDIA A100-SXM4-80GB, 81920\n")
    hw = hardware.detect_hardware()
    assert (hw.kind, hw.count, hw.memory_bytes, hw.bf16) == ("gpu", 2, 80 * GiB, True)
    _fake_smi(monkeypatch, "Tesla T4, 15360\n")
    assert hardware.detect_hardware().bf16 is False
    _fake_smi(monkeypatch, "NVIDIA A40, 46068\n")  # not in the catalog: Ampere by name
    assert hardware.detect_hardware().bf16 is True


@pytest.mark.parametrize("stdout", ["", "garbage", "NVIDIA X, [N/A]\n", ", 100\n"])
def test_detect_hardware_falls_back_to_cpu_on_bad_output(monkeypatch, stdout: str) -> None:
    _fake_smi(monkeypatch, stdout)
    assert isinstance(hardware.detect_hardware(), CPUHardware)


def test_detect_hardware_survives_a_hanging_nvidia_smi(monkeypatch) -> None:
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired("nvidia-smi", 2)

    monkeypatch.setattr(hardware.shutil, "which", lambda _: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(hardware.subprocess, "run", hang)
    assert isinstance(hardware.detect_hardware(), CPUHardware)
