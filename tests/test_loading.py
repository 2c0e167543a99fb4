"""Model resolution: packaged GGUF conversion once (locked, atomic), local folders, hub ids."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from plural_icm.backends.loading import (ModelNotFoundError, build_once, default_cache_dir,
                                         load_tokenizer, resolve_model)


def test_local_folder(tiny_model_dir, tmp_path):
    r = resolve_model(str(tiny_model_dir), tmp_path, revision=None)
    assert r.is_local and Path(r.path_or_id) == Path(tiny_model_dir).resolve()
    assert r.model_id == r.path_or_id and r.trust_remote_code is False
    assert load_tokenizer(r).encode(" True", add_special_tokens=False)


def test_missing_folder_and_unknown_packaged(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(ModelNotFoundError, match="packaged:smollm2"):
        resolve_model("packaged:gpt5", tmp_path)


def test_hub_id_offline_error_says_how_to_fix(tmp_path, monkeypatch):
    r = resolve_model("no-such-org/no-such-model", tmp_path, revision="abc123")
    assert not r.is_local and r.path_or_id == "no-such-org/no-such-model" and r.revision == "abc123"
    import huggingface_hub.constants as hc
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="HF_HOME"):
        load_tokenizer(r)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PLURAL_ICM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PLURAL_ICM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "plural_icm"


def _slow_build(target: str, log: str) -> None:
    def build(tmp: Path) -> None:
        with open(log, "a") as fh:
            fh.write("start\n")
        time.sleep(0.5)
        (tmp / "config.json").write_text("{}")

    build_once(Path(target), build)
    assert (Path(target) / "config.json").exists()  # never a half-written folder


def test_build_once_is_locked_across_processes(tmp_path):
    target, log = tmp_path / "models" / "m-123", tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_slow_build, args=(str(target), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().count("start") == 1
    assert not list(target.parent.glob(".m-123.tmp-*"))


def test_build_once_cleans_up_after_failure(tmp_path):
    target = tmp_path / "models" / "m"

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_once(target, broken)
    assert not target.exists() and not list(target.parent.glob(".m.tmp-*"))
    assert build_once(target, lambda tmp: (tmp / "config.json").write_text("{}")) is True
    assert build_once(target, lambda tmp: 1 / 0) is False  # reused, builder not called


@pytest.mark.slow
def test_packaged_smollm2_converted_once():
    r1 = resolve_model("packaged:smollm2", default_cache_dir())
    t0 = time.perf_counter()
    r2 = resolve_model("packaged:smollm2", default_cache_dir())
    assert time.perf_counter() - t0 < 5 and r2.conversion_s is None
    assert r1.path_or_id == r2.path_or_id and (Path(r2.path_or_id) / "config.json").exists()
    cfg = (Path(r2.path_or_id) / "config.json").read_text()
    assert "quantization_config" not in cfg and r2.source_sha in r2.path_or_id


# -- registry -------------------------------------------------------------------------------------
def test_registry_errors(monkeypatch):
    from plural_icm.backends import registry
    with pytest.raises(ValueError, match="valid: hf, openai, vllm"):
        registry.make_backend("llamacpp")
    monkeypatch.setitem(registry.BACKENDS, "fake", ("no_such_module_xyz", "X", "pip install xyz"))
    with pytest.raises(registry.BackendUnavailableError, match="pip install xyz"):
        registry.make_backend("fake")


def test_backend_from_model_config(tiny_model_dir, tmp_path):
    from plural_icm.backends.hf import HFBackend
    from plural_icm.backends.registry import backend_from_model_config, backend_settings
    from plural_icm.backends.request_cache import CachedBackend
    from plural_icm.config.schema import BackendName, ModelConfig

    cfg = ModelConfig(name="tiny", base=str(tiny_model_dir), instruct="org/instruct", revision="v1",
                      backend=BackendName.hf, max_context=64, batch_size=2)
    kw = backend_settings(cfg, "instruct", tmp_path).kwargs()
    assert kw["model_spec"] == "org/instruct" and kw["revision"] == "v1" and kw["max_context"] == 64
    assert kw["trust_remote_code"] is False and "api_key_env" not in kw  # an openai setting
    cfg.revision = None
    be = backend_from_model_config(cfg, "base", tmp_path, request_cache_path=tmp_path / "job" / "rc.jsonl",
                                   prefix_cache=False)
    assert isinstance(be, CachedBackend) and isinstance(be.inner, HFBackend)
    assert be.max_context == 64 and be.inner.batch_size == 2 and be.inner.prefix_cache is False
    prompt = (tuple(be.bos()) + tuple(be.encode(" the claim is")),)
    a = be.label_logprobs([prompt], [" True", " False"])
    b = be.label_logprobs([prompt], [" True", " False"])
    assert (a == b).all() and be.stats.request_cache_hits == 1
