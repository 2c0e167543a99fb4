"""Every config group choice composes and validates; typos fail naming the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "dataset", "condition", "icm", "inference", "logger", "experiment"])
def test_every_choice_composes(group, tmp_path, monkeypatch, compose_config):
    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path))
    names = choices(group)
    assert names, group
    for name in names:
        cfg = compose_config([f"{group}={name}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        if group == "model":
            assert cfg.model.name == name and cfg.model.trust_remote_code is False
            assert cfg.model.base and cfg.model.instruct


def test_paper_models_match_table3(compose_config):
    cfg = compose_config(["model=llama70b"])
    assert (cfg.model.base, cfg.model.instruct) == ("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct")
    # tensor parallel 4 so that 80 GB GPUs hold weights + KV cache (the paper: 2 x 96 GB)
    assert cfg.model.tensor_parallel_size == 4 and cfg.model.gpus == 4
    cfg = compose_config(["model=qwen30b"])
    assert cfg.model.instruct == "Qwen/Qwen3-30B-A3B-Instruct-2507"
    cfg = compose_config(["model=olmo32b"])
    assert cfg.model.base == "allenai/Olmo-3-1125-32B"


def test_paper_icm_preset(compose_config):
    cfg = compose_config(["icm=paper"])
    assert (cfg.icm.alpha, cfg.icm.num_seed, cfg.icm.initial_temp, cfg.icm.final_temp, cfg.icm.decay) == (50, 8, 10, 0.01, 0.99)


@pytest.mark.parametrize("override, message", [
    ("icm.alpah=3", "alpah"),
    ("icm.schedule=cosine", "log, exp"),
    ("model=nope", "Available options"),
    ("condition=nope", "zero_shot"),
    ("fold=one", "fold"),
])
def test_bad_values_fail_naming_the_key(override, message, compose_config):
    with pytest.raises(Exception) as err:
        compose_config([override])
    assert message in str(err.value) or message in str(err.value.__cause__)


def test_demo_is_the_default(tmp_path, monkeypatch, compose_config):
    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path))
    cfg = compose_config([])
    assert (cfg.model.name, cfg.dataset.name, cfg.condition.name.value if hasattr(cfg.condition.name, "value") else cfg.condition.name) == ("smollm2", "demo", "icm")
    assert cfg.paths.results_dir == f"{tmp_path}/results"
    assert cfg.logger.mode == "offline"


def test_an_experiment_and_the_local_config_override_the_entry_config(tmp_path, monkeypatch, compose_config):
    """`experiment=collaborative` must switch the stage (it once stayed `cell`: the entry config's
    own keys were merged last), and conf/local/default.yaml must be able to set paths."""
    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path))
    assert compose_config(["experiment=collaborative"]).stage.value == "collaborative"
    assert compose_config(["experiment=collaborative", "stage=cell"]).stage.value == "cell"  # CLI wins
    conf = tmp_path / "conf"

    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  data_dir: /data/here\n")
    cfg = compose_config([], conf_dir=conf)
    assert cfg.paths.data_dir == "/data/here"
