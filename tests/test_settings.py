"""The composed config is resolved once into typed settings; the search has one set of defaults."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_settings_types_every_part_and_freezes_the_whole(compose_config):
    from plural_icm.backends.settings import VLLMEngineArgs
    from plural_icm.choices import ContextOrder, Engine
    from plural_icm.config.schema import BackendName, ICMConfig, ModelConfig, Stage
    from plural_icm.config.settings import Settings, as_settings, resolve_settings

    cfg = compose_config(["icm=paper", "fold=1"])
    s = resolve_settings(cfg)
    assert isinstance(s, Settings) and s.composed is cfg
    assert isinstance(s.model, ModelConfig) and s.model.backend is BackendName.hf
    assert isinstance(s.model.vllm, VLLMEngineArgs)
    assert isinstance(s.icm, ICMConfig) and s.icm.engine is Engine.fast
    assert s.icm.context_order is ContextOrder.published and s.icm.max_iters == 3000
    assert s.stage is Stage.cell and s.fold == 1 and s.dataset.name == "demo"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.icm = None  # a layer cannot swap another layer's part
    assert as_settings(s) is s  # resolved once: passing settings down never re-resolves them
    assert as_settings(cfg).icm == s.icm


def test_pipeline_entries_refuse_a_composed_config(compose_config):
    """The pipeline's entries take typed settings only: a composed DictConfig (whose nodes have
    the same attribute names) is refused at once, naming the entry and the expected type."""
    from plural_icm.config.settings import resolve_settings
    from plural_icm.pipeline.cell import cell_data, run_cell
    from plural_icm.pipeline.collaborative import run_collaborative
    from plural_icm.pipeline.models import Backends
    from plural_icm.pipeline.plan import build_plan, cell_tokens
    from plural_icm.pipeline.searches import model_identity

    cfg = compose_config(["logger=none"])
    entries = {"run_cell": lambda: run_cell(cfg), "cell_data": lambda: cell_data(cfg),
               "run_collaborative": lambda: run_collaborative(cfg), "Backends": lambda: Backends(cfg),
               "build_plan": lambda: build_plan([([], cfg)]), "cell_tokens": lambda: cell_tokens(cfg),
               "model_identity": lambda: model_identity(cfg)}
    for name, call in entries.items():
        with pytest.raises(TypeError, match=rf"{name}: expected plural_icm\.config\.settings\.Settings, "
                                            r"got DictConfig"):
            call()
    assert model_identity(resolve_settings(cfg))["backend"] == "hf"  # the typed settings pass


@pytest.mark.parametrize("override, key", [("icm.alpha=nan", "icm.alpha"), ("fold=9", "fold"),
                                           ("+model.vllm.foo=1", "model.vllm.foo")])
def test_resolve_settings_is_where_a_bad_value_fails(compose_config, override, key):
    from plural_icm.config.settings import resolve_settings

    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        resolve_settings(compose_config([override]))


def test_search_parameters_have_one_set_of_defaults():
    from plural_icm.config.schema import ICMConfig
    from plural_icm.search.params import SearchParams

    defaults = {f.name: f.default for f in dataclasses.fields(SearchParams)}
    shared = [f for f in dataclasses.fields(ICMConfig) if f.name in defaults]
    assert len(shared) >= 17
    for f in shared:  # the schema's default is the search's (an enum of the same value)
        assert getattr(f.default, "value", f.default) == defaults[f.name], f.name
    assert SearchParams.from_settings(ICMConfig(preset="x")) == SearchParams()


def test_search_parameters_are_built_from_the_typed_icm_settings(compose_config):
    from plural_icm.config.settings import resolve_settings
    from plural_icm.search.params import SearchParams

    s = resolve_settings(compose_config(["icm=fork", "icm.context_order=published"]))
    p = SearchParams.from_settings(s.icm)
    assert p.repair_rule == "first" and p.context_order == "published" and p.max_iters == 500
    assert p.memo and not SearchParams.from_settings(s.icm, engine="reference").memo
    assert p == SearchParams.from_settings(s.composed.icm)  # the DictConfig node gives the same


def test_the_search_layer_imports_nothing_of_the_config_layer():
    for path in sorted((ROOT / "plural_icm" / "search").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("plural_icm.config", "hydra", "omegaconf")), (path, name)


def test_backends_are_built_from_the_typed_model_settings(compose_config):
    from plural_icm.backends.registry import backend_settings
    from plural_icm.config.settings import resolve_settings

    s = resolve_settings(compose_config(["model.backend=vllm", "model.vllm.kv_cache_dtype=fp8",
                                         "model.vllm.max_num_seqs=4"]))
    vl = backend_settings(s.model, "base", "/c")
    assert vl.engine == {"kv_cache_dtype": "fp8", "max_num_seqs": 4} and vl.model_spec == s.model.base
    from plural_icm.pipeline.searches import model_identity

    ident = model_identity(s)
    assert ident["backend"] == "vllm" and ident["vllm.kv_cache_dtype"] == "fp8"
    assert "vllm.max_num_seqs" not in ident  # speed only: never part of a search's address
