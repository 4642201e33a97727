"""`--model ORG/NAME` outside the catalog (issue 13): config.json from a Hugging Face cache laid out
as huggingface_hub writes it, a fetch of that one file when online (faked: never the network),
exit 2 with the fix when offline and uncached; and the current families in the catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneplan.advisor import catalog, hub
from tuneplan.cli.main import main

QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "num_hidden_layers": 36,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": False,
}
ADVISE = ["advise", "--gpu", "A100-80GB", "--domain", "near", "--forgetting", "medium", "--json"]
SHA = "0123456789abcdef0123456789abcdef01234567"


def fake_cache(root: Path, repo: str, cfg: dict) -> Path:
    """A Hub cache entry as huggingface_hub lays it out: refs/main -> snapshots/<sha>/config.json."""
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(SHA)
    snap = entry / "snapshots" / SHA
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(cfg))
    return snap / "config.json"


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def _plan(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main([*ADVISE, *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_uncatalogued_model_read_from_the_hf_cache(hub_env, capsys) -> None:
    fake_cache(hub_env, "acme/Qwen3-8B-finetune", QWEN3_8B)
    plan = _plan(capsys, "--model", "acme/Qwen3-8B-finetune")
    m = plan["inputs"]["model"]
    assert m["name"] == "acme/Qwen3-8B-finetune" and m["origin"] == "config" and m["family"] == "qwen3"
    assert SHA[:12] in m["source"] and "cache" in m["source"]
    # the same numbers as the catalog's Qwen3-8B row: one path from config.json to a spec
    assert m["params"] == catalog.get_model("Qwen/Qwen3-8B").params.model_dump()


def test_offline_and_uncached_exits_2_with_the_fix(hub_env, capsys) -> None:
    assert main([*ADVISE, "--model", "acme/not-cached"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "HF_HUB_OFFLINE" in err and "local directory" in err
    assert "hf download acme/not-cached config.json" in err


def test_online_fetches_config_json_only(tmp_path, monkeypatch, capsys) -> None:
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename, kw))
        return str(fake_cache(Path(kw["cache_dir"]), repo_id, QWEN3_8B))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    plan = _plan(capsys, "--model", "acme/fresh-model")
    assert [(r, f) for r, f, _ in calls] == [("acme/fresh-model", "config.json")]
    assert "token" not in calls[0][2], "the token is huggingface_hub's default (HF_TOKEN / login)"
    assert "fetched" in plan["inputs"]["model"]["source"]
    # now cached: a second advise works offline without fetching
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _plan(capsys, "--model", "acme/fresh-model")
    assert len(calls) == 1


def test_gated_repo_names_the_token_fix(tmp_path, monkeypatch, capsys) -> None:
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def gated(repo_id, filename, **kw):
        from types import SimpleNamespace

        raise GatedRepoError("gated", response=SimpleNamespace(headers={}, status_code=401, request=None))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    assert main([*ADVISE, "--model", "acme/gated"]) == 2
    err = capsys.readouterr().err
    assert "gated" in err and "HF_TOKEN" in err


def test_vision_language_config_reads_its_text_decoder(hub_env, capsys) -> None:
    text = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
    }
    fake_cache(hub_env, "acme/gemma-vl", {"model_type": "gemma3", "text_config": text, "vision_config": {}})
    m = _plan(capsys, "--model", "acme/gemma-vl")["inputs"]["model"]
    assert m["family"] == "gemma3" and "text decoder only" in m["source"]
    assert m["params"] == catalog.get_model("google/gemma-3-4b-pt").params.model_dump()


def test_paths_and_catalog_typos_are_not_sent_to_the_hub() -> None:
    assert hub.looks_like_repo_id("Qwen/Qwen3-8B")
    for name in ("./models/x", "/abs/path", "a/b/c", "Llama-3.1-8b", "../x/y"):
        assert not hub.looks_like_repo_id(name), name


def test_a_catalog_id_never_imports_huggingface_hub() -> None:
    code = (
        "import sys; from tuneplan.cli.main import main; "
        "main(['advise','--model','Qwen/Qwen3-8B','--gpu','L4','--domain','near','--forgetting','medium',"
        "'--json']); print('LOADED', [m for m in ('huggingface_hub','torch','transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().splitlines()[-1] == "LOADED []"


# Published totals (model cards / Hub "Model size"), billions. Gemma 3 4B+ rows count the text
# decoder only, so their card totals include the ~0.42B SigLIP vision tower as well.
PUBLISHED = {
    "Qwen/Qwen3-0.6B": (0.6, 0.05),
    "Qwen/Qwen3-8B": (8.19, 0.02),
    "Qwen/Qwen3-32B": (32.8, 0.05),
    "meta-llama/Llama-3.3-70B-Instruct": (70.6, 0.1),
    "google/gemma-3-1b-pt": (1.0, 0.01),
    "google/gemma-3-27b-pt": (27.4 - 0.42, 0.1),
    "microsoft/phi-4": (14.7, 0.05),
    "mistralai/Mistral-Small-24B-Base-2501": (23.6, 0.05),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_new_catalog_families_match_published_sizes(name) -> None:
    spec = catalog.get_model(name)
    want, tol = PUBLISHED[name]
    assert abs(spec.total_params / 1e9 - want) <= tol, spec.total_params
    assert spec.source.startswith(f"huggingface.co/{name} config.json")
