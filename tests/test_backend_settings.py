"""Each backend takes only its own settings from the model config; model.vllm is validated;
speed-only keys never change a cell's fingerprint; model.request_cache wires the request cache in."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from plural_icm.backends.registry import backend_class, backend_from_model_config, backend_settings
from plural_icm.backends.settings import (
    VLLM_ENGINE_KEYS,
    VLLM_SPEED_ONLY_KEYS,
    BackendSettingsError,
    HFSettings,
    OpenAISettings,
    VLLMSettings,
)
from plural_icm.config.schema import NON_RESULT_KEYS, ModelConfig, check_config, register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("kind,injected", [("hf", set()), ("vllm", set()),
                                           ("openai", {"tokenizer", "sleep"})])
def test_constructor_keywords_are_the_settings_fields(kind, injected):
    cls = backend_class(kind)
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    names = {f.name for f in fields(cls.settings_class)}
    assert params - injected == names
    assert not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def test_each_backend_receives_only_its_keys():
    hf = backend_settings(_compose(["model=smollm2", "model.batch_size=3"]).model, "base", "/c")
    assert isinstance(hf, HFSettings) and hf.batch_size == 3 and hf.prefix_cache_gb == 4.0
    assert hf.cache_dir == "/c" and hf.model_spec == "packaged:smollm2"
    assert not {"api_base", "tensor_parallel_size", "engine", "gpus"} & set(hf.kwargs())

    cfg = _compose(["model=llama8b", "model.vllm.max_num_seqs=64", "model.vllm.kv_cache_dtype=fp8"])
    vl = backend_settings(cfg.model, "instruct", "/c")
    assert isinstance(vl, VLLMSettings) and vl.model_spec == "meta-llama/Llama-3.1-8B-Instruct"
    assert vl.engine == {"max_num_seqs": 64, "kv_cache_dtype": "fp8"}  # only the keys set
    assert vl.dtype == "bfloat16" and vl.tensor_parallel_size == 1
    assert not {"batch_size", "device", "api_base", "prefix_cache_gb", "gpus"} & set(vl.kwargs())

    oa = backend_settings(_compose(["model=smollm2", "model.backend=openai",
                                    "model.api_base=http://h:1/v1"]).model, "base", "/c")
    assert isinstance(oa, OpenAISettings) and oa.api_base == "http://h:1/v1"
    assert not {"dtype", "device", "tensor_parallel_size", "engine"} & set(oa.kwargs())


def test_settings_are_validated_with_the_key_named():
    with pytest.raises(BackendSettingsError, match="model.batch_size must be a positive int"):
        HFSettings.from_model_config(ModelConfig(name="m", base="b", instruct="i", batch_size=0), "base")
    with pytest.raises(BackendSettingsError, match="model.dtype='fp12'.*valid: auto"):
        HFSettings("b", dtype="fp12")
    with pytest.raises(BackendSettingsError, match=r"model.gpu_memory_utilization must be in \(0, 1\]"):
        VLLMSettings("b", gpu_memory_utilization=1.5)
    with pytest.raises(BackendSettingsError, match="takes no setting.*'api_base'.*valid: model_spec"):
        HFSettings.from_model_config({"base": "b", "instruct": "i"}, "base", api_base="x")


def test_unknown_vllm_key_is_an_error_naming_it_and_the_valid_ones():
    cfg = _compose(["model=llama8b", "+model.vllm.foo=1"])  # `+` gets past the structured schema
    with pytest.raises(BackendSettingsError) as err:
        check_config(cfg)
    msg = str(err.value)
    assert msg.startswith("model.vllm.foo is not a vLLM engine setting")
    assert "kv_cache_dtype" in msg and "max_num_seqs" in msg and "model.tensor_parallel_size" in msg
    with pytest.raises(BackendSettingsError, match="model.vllm.foo"):
        backend_settings(cfg.model, "base")
    with pytest.raises(Exception, match="model.vllm.swap_space"):  # not in vLLM 0.32
        _compose(["model=llama8b", "model.vllm.swap_space=4"])
    check_config(_compose(["model=llama8b", "model.vllm.enforce_eager=true"]))


@pytest.mark.vllm
def test_vllm_section_names_are_engine_args_of_the_installed_vllm():
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    engine_fields = {f.name for f in fields(arg_utils.EngineArgs)}
    assert set(VLLM_ENGINE_KEYS) <= engine_fields, set(VLLM_ENGINE_KEYS) - engine_fields


def test_gpus_follow_tensor_parallel_size():
    assert _compose(["model=llama70b"]).model.gpus == 4  # tensor parallel 4: fits 80 GB GPUs
    assert _compose(["model=llama70b", "model.tensor_parallel_size=2"]).model.gpus == 2
    assert _compose(["model=llama8b"]).model.gpus == 1


def test_speed_only_keys_never_change_the_fingerprint():
    from plural_icm.pipeline.cell import fingerprint

    base = fingerprint(_compose(["model=llama70b"]))
    for ov in ["model.tensor_parallel_size=4", "model.gpu_memory_utilization=0.8",
               "model.batch_size=64", "model.cpus=32", "model.mem_gb=512", "model.time_min=5",
               "model.vllm.max_num_seqs=16", "model.vllm.enforce_eager=true",
               "model.vllm.block_size=32", "model.vllm.enable_chunked_prefill=false",
               "model.vllm.max_num_batched_tokens=8192", "model.prefix_cache_gb=1",
               "model.request_cache=true", "icm.checkpoint_every=5"]:
        assert fingerprint(_compose(["model=llama70b", ov])) == base, ov
    for ov in ["model.vllm.kv_cache_dtype=fp8", "model.dtype=float16", "model.max_context=4096",
               "model.vllm.quantization=fp8"]:
        assert fingerprint(_compose(["model=llama70b", ov])) != base, ov
    assert {f"model.vllm.{k}" for k in VLLM_SPEED_ONLY_KEYS} <= set(NON_RESULT_KEYS)
    assert "model.vllm.kv_cache_dtype" not in NON_RESULT_KEYS


def test_request_cache_key_wires_the_cache_in(tiny_model_dir, tmp_path):
    pytest.importorskip("torch")
    from plural_icm.backends.hf import HFBackend
    from plural_icm.backends.request_cache import CachedBackend

    cfg = ModelConfig(name="tiny", base=str(tiny_model_dir), instruct=str(tiny_model_dir),
                      max_context=64, batch_size=2)
    plain_be = backend_from_model_config(cfg, "base", tmp_path)
    assert isinstance(plain_be, HFBackend)  # off by default
    cfg.request_cache = True
    first = backend_from_model_config(cfg, "base", tmp_path)
    assert isinstance(first, CachedBackend) and isinstance(first.inner, HFBackend)
    prompt = (tuple(first.bos()) + tuple(first.encode(" the claim is")),)
    a = first.label_logprobs([prompt], [" True", " False"])
    assert first.stats.request_cache_hits == 0
    second = backend_from_model_config(cfg, "base", tmp_path)  # another job, same cache folder
    b = second.label_logprobs([prompt], [" True", " False"])
    assert second.stats.request_cache_hits == 1 and second.stats.prompts == 0  # no model call
    assert a.tobytes() == b.tobytes()
    assert np.allclose(a, plain_be.label_logprobs([prompt], [" True", " False"]), atol=1e-5)
    assert len(list((tmp_path / "requests").glob("*.jsonl"))) == 1  # only the first job wrote
    cfg.max_context = 48  # an output-relevant setting: a miss
    third = backend_from_model_config(cfg, "base", tmp_path)
    third.label_logprobs([prompt], [" True", " False"])
    assert third.stats.request_cache_hits == 0 and third.stats.prompts == 1
