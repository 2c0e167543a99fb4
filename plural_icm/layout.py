"""Where results live and what each result file holds: the one home of the disk layout, the cell
names, the fingerprint and the typed records, shared by the writers (pipeline, search store,
inference) and the reader (``analysis/``).

Directories are named from the choices, never from timestamps, so a relaunch finds finished cells
and skips them, and never overwrites them.

    <output_dir>/results/<run_tag>/<model>/<dataset>/<condition>/n<n_examples|all>/fold<k>/seed<s>/
        config.yaml         resolved config of the cell
        predictions.jsonl   one :class:`PredictionRow` per test claim (and perturbation)
        metrics.json        a :class:`CellResult`: {"overall": {...}, "per_persona": {...}, "meta": {...}}
        examples.jsonl      one :class:`ExampleRow` per in-context example, per persona
        COMPLETE.json       a :class:`CompleteRecord`, written last; a cell is complete iff present

    <output_dir>/searches/<model>/<dataset>/fold<k>/<persona>/<search_hash>/
        spec.json           everything that determines the search (content-addressed by its hash)
        checkpoint.json     latest resumable state (atomic)
        trajectory.jsonl    one row per iteration
        labels.jsonl        final labels with per-label confidence
        summary.json        U, P, I, iterations, time, label accuracy vs gold
        COMPLETE.json       written last

    <output_dir>/collaborative/<model>/<dataset>/<persona>/<method>/fold<k>/
        questions.jsonl     the questions put to the annotator
        answers.jsonl       their answers (simulated from gold unless a file of answers is given)
        summary.json        a :class:`CollaborativeSummary`

Words: ``U`` is the ICM objective ``alpha * P - I`` (the paper's "coherence", e.g. its Table 1);
``mutual_predictability`` is ``P``; ``inconsistencies`` is ``I``. No record says "coherence".
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from plural_icm.backends.settings import VLLM_SPEED_ONLY_KEYS
from plural_icm.config.secrets import scrub_secrets
from plural_icm.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from plural_icm.utils.values import non_finite_metrics

RESULTS = "results"
"""``paths.results_dir`` below ``paths.output_dir`` (conf/config.yaml), where the analysis looks."""
SEARCHES = "searches"
"""``paths.searches_dir`` below ``paths.output_dir``."""
COMPLETE = "COMPLETE.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
EXAMPLES = "examples.jsonl"
GENERATIONS = "generations.jsonl"
CONFIG = "config.yaml"
SELECTION = "selection.jsonl"
"""Per-query selections only: per persona and held-out question, the training questions shown."""
SUMMARY = "summary.json"

CELL_KEYS = ("run_tag", "model", "dataset", "condition", "n", "fold", "seed")
"""The parts of a cell's path, in order (``n`` is ``all`` or the number of examples)."""
CELL_GLOB = "*/*/*/*/n*/fold*/seed*"
"""The cell directories under ``<output_dir>/results`` (parts as in :data:`CELL_KEYS`)."""
SEARCH_KEYS = ("model", "dataset", "fold", "persona", "hash")
SEARCH_GLOB = "*/*/fold*/*/*"
"""The search directories under ``<output_dir>/searches`` (parts as in :data:`SEARCH_KEYS`)."""
COLLABORATIVE = "collaborative"
COLLABORATIVE_KEYS = ("model", "dataset", "persona", "method", "fold")
COLLABORATIVE_GLOB = "collaborative/*/*/*/*/fold*/summary.json"
"""The collaborative summaries under an output directory (parts as in ``collaborative_dir``)."""


# -- paths ------------------------------------------------------------------------------------

#: The longest path component written, in UTF-8 bytes (file systems allow 255; the rest is left
#: for suffixes such as ``.corrupt-<time>``). Longer names are cut and get a hash suffix.
MAX_COMPONENT_BYTES = 180


def _needs_escape(ch: str) -> bool:
    """Characters that cannot be (or must not look like) part of one path component: separators,
    the escape character itself, control and other non-printable characters (NUL, newlines)."""
    return ch in "/\\%" or not ch.isprintable()


def path_component(name: Any) -> str:
    """``name`` as one safe directory name: never a path, never ``.``/``..``, at most
    :data:`MAX_COMPONENT_BYTES` bytes, distinct names give distinct components.

    A name of printable characters without ``/``, ``\\`` or ``%`` is kept as it is (``Britain``,
    ``rural_traditionalists``, ``llama-3.1-8b``, ``Direct, Concise``, ``Côte d'Ivoire``: the
    directories of existing results do not move). Otherwise those characters are percent-encoded
    (``../x`` -> ``..%2Fx``), ``.``/``..``/empty become ``%2E``/``%2E%2E``/``%``, and a component
    longer than the cap is cut with ``~`` and 12 hex digits of the name's SHA-256. The original
    name is kept in each record (``spec.json``, ``summary.json``, ``metrics.json``);
    :func:`name_of_component` reverses every component that was not cut.
    """
    text = str(name)
    if text in ("", ".", ".."):
        return {"": "%", ".": "%2E", "..": "%2E%2E"}[text]
    out = "".join("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")) if _needs_escape(ch) else ch
                  for ch in text)
    if len(out.encode("utf-8")) <= MAX_COMPONENT_BYTES:
        return out
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    keep = out.encode("utf-8")[:MAX_COMPONENT_BYTES - 13].decode("utf-8", "ignore")
    keep = re.sub(r"%[0-9A-F]?$", "", keep)  # never half an escape
    return f"{keep}~{digest}"


def name_of_component(component: str) -> str:
    """The name :func:`path_component` made ``component`` from (a cut name stays cut)."""
    from urllib.parse import unquote

    return "" if component == "%" else unquote(component, errors="surrogateescape")


def cell_dir(results_dir: str | Path, run_tag: str, model: str, dataset: str, condition: str,
             n_examples: int | None, fold: int, seed: int, selection: str | None = None) -> Path:
    """A cell's directory; a non-default ``selection`` joins the condition's part as
    ``<condition>+<selection>`` (the default, ``all``, leaves existing paths as they were)."""
    n = "all" if n_examples is None else str(int(n_examples))
    cond = condition if not selection else f"{condition}{SELECTION_SEP}{selection}"
    c = path_component
    return (Path(results_dir) / c(run_tag) / c(model) / c(dataset) / c(cond) / f"n{n}"
            / f"fold{int(fold)}" / f"seed{int(seed)}")


SELECTION_SEP = "+"
"""Joins the condition and a non-default selection in a cell's path (condition names are
identifiers, so the split is unambiguous)."""


def selection_tag(cfg: Any) -> str | None:
    """The selection part of a cell's path: None for ``selection=all`` (or no selection key),
    else its name, with ``-positive`` for positive prompts, ``-cr`` for ``contrastive_response``
    and ``-<source>`` for an explicit ``group_source`` (so settings that change results get their
    own directory). ``cfg``: the job's typed settings (or a config with the same attributes)."""
    sel = getattr(cfg, "selection", None)
    if sel is None or (getattr(sel, "name", None) or "all") == "all":
        return None
    tag = str(sel.name)
    if (getattr(sel, "prompt", None) or "contrastive") == "positive":
        tag += "-positive"
    elif (getattr(sel, "prompt", None) or "contrastive") == "contrastive_response":
        tag += "-cr"
    source = getattr(sel, "group_source", None) or "auto"
    if tag.startswith("spica") and source != "auto":
        tag += f"-{source}"
    return tag


def search_dir(searches_dir: str | Path, model: str, dataset: str, fold: int, persona: str,
               search_hash: str) -> Path:
    c = path_component
    return (Path(searches_dir) / c(model) / c(dataset) / f"fold{int(fold)}" / c(persona)
            / c(search_hash))


def collaborative_root(output_dir: str | Path, model: str, dataset: str) -> Path:
    return Path(output_dir) / COLLABORATIVE / path_component(model) / path_component(dataset)


def collaborative_dir(output_dir: str | Path, model: str, dataset: str, persona: str, method: str,
                      fold: int) -> Path:
    return (collaborative_root(output_dir, model, dataset) / path_component(persona)
            / path_component(method) / f"fold{int(fold)}")


#: What a complete cell / search directory holds besides ``COMPLETE.json``: a ``COMPLETE.json``
#: without its results (a copy that lost files, a hand edit) is not complete.
CELL_FILES = (METRICS, PREDICTIONS)
SEARCH_FILES = ("labels.jsonl", SUMMARY)


def is_complete(path: str | Path, required: tuple[str, ...] = ()) -> bool:
    """``COMPLETE.json`` is a JSON object and every file of ``required`` is present."""
    path = Path(path)
    marker = path / COMPLETE
    if not marker.is_file() or not all((path / f).is_file() for f in required):
        return False
    try:
        return isinstance(json.loads(marker.read_text(encoding="utf-8")), dict)
    except (ValueError, OSError, RecursionError):
        return False


def parse_cell_dir(results_root: Path, path: Path) -> dict[str, Any] | None:
    """The :data:`CELL_KEYS` of a cell directory below ``results_root`` (None if it is not one)."""
    parts = path.relative_to(results_root).parts
    if len(parts) != len(CELL_KEYS):
        return None
    run_tag, model, dataset, condition = (name_of_component(p) for p in parts[:4])
    n_part, fold_part, seed_part = parts[4:]
    fold, seed = _int_suffix(fold_part, "fold"), _int_suffix(seed_part, "seed")
    n = n_part[1:] if n_part.startswith("n") else ""
    if fold is None or seed is None or not (n == "all" or n.isdigit()):
        return None
    # ``condition`` stays the directory's part (``icm+spica``), so tables that group by condition
    # keep a selection's cells apart from the default's (split_condition separates them)
    return {"run_tag": run_tag, "model": model, "dataset": dataset, "condition": condition,
            "n": n, "fold": fold, "seed": seed}


def split_condition(part: str) -> tuple[str, str]:
    """(condition, selection) of a cell path's condition part: ``icm+spica`` -> (icm, spica),
    ``icm`` -> (icm, all)."""
    cond, _, sel = str(part).partition(SELECTION_SEP)
    return cond, sel or "all"


def parse_search_dir(searches_root: Path, path: Path) -> dict[str, Any] | None:
    """The :data:`SEARCH_KEYS` of a search directory below ``searches_root`` (None if not one)."""
    parts = path.relative_to(searches_root).parts
    if len(parts) != len(SEARCH_KEYS):
        return None
    model, dataset, fold_part, persona, h = parts
    model, dataset, persona = (name_of_component(p) for p in (model, dataset, persona))
    fold = _int_suffix(fold_part, "fold")
    if fold is None:
        return None
    return {"model": model, "dataset": dataset, "fold": fold, "persona": persona, "hash": h}


def _int_suffix(name: str, prefix: str) -> int | None:
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


# -- what a fingerprint leaves out ------------------------------------------------------------

#: Dotted config keys that never change a cell's results (paths, logging, launcher and job
#: resources, speed-only engine settings): :func:`fingerprint` leaves them out
#: (batching and tensor parallelism move scores by float rounding only), so e.g. raising
#: model.tensor_parallel_size to fit smaller GPUs never makes finished cells "results of different
#: settings". Keys that change numerics (model.dtype, model.vllm.kv_cache_dtype, ...) stay in.
NON_RESULT_KEYS: tuple[str, ...] = (
    "paths", "logger", "progress", "force", "stage", "collaborative",
    "icm.checkpoint_every", "dataset.score_metric",
    "model.gpus", "model.cpus", "model.mem_gb", "model.time_min", "model.api_key_env",
    "model.tensor_parallel_size", "model.gpu_memory_utilization", "model.batch_size",
    "model.prefix_cache_gb", "model.request_cache", "model.engine_per_process",
    "model.vllm.max_num_seqs", "model.vllm.max_num_batched_tokens",
    "model.vllm.enable_chunked_prefill", "model.vllm.enforce_eager", "model.vllm.block_size",
    "model.vllm.cpu_offload_gb", "model.vllm.kv_cache_memory_bytes",
    "model.vllm.num_gpu_blocks_override", "model.vllm.pipeline_parallel_size",
    "model.vllm.distributed_executor_backend", "model.vllm.disable_custom_all_reduce",
    "model.vllm.prefix_caching_hash_algo", "model.vllm.async_scheduling",
)
assert {f"model.vllm.{k}" for k in VLLM_SPEED_ONLY_KEYS} <= set(NON_RESULT_KEYS)


def drop_keys(d: dict, keys: Sequence[str]) -> dict:
    """``d`` (plain containers) without the dotted ``keys``, in place."""
    for dotted in keys:
        *parents, last = dotted.split(".")
        node = d
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return d


def drop_non_result_keys(d: dict) -> dict:
    """``d`` (a resolved config as plain containers) without :data:`NON_RESULT_KEYS`, in place."""
    drop_keys(d, NON_RESULT_KEYS)
    # Unset engine settings (vLLM's defaults) are not settings of this cell: a config that sets
    # none fingerprints as it did before the model.vllm section existed.
    model = d.get("model")
    if isinstance(model, dict) and isinstance(model.get("vllm"), dict):
        model["vllm"] = {k: v for k, v in model["vllm"].items() if v is not None}
        if not model["vllm"]:
            del model["vllm"]
    # selection=all is today's behaviour: such a cell fingerprints as it did before the axis existed
    sel = d.get("selection")
    if sel is None or (isinstance(sel, dict) and sel.get("name", "all") == "all"):
        d.pop("selection", None)
    elif isinstance(sel, dict):
        for key in SELECTION_SPEED_ONLY_KEYS:  # where and how fast vectors are computed
            sel.pop(key, None)
    return d


#: Selection keys that never change a result (device, batching, the env var holding a key).
SELECTION_SPEED_ONLY_KEYS = ("embedding_device", "embedding_batch_size", "embedding_api_key_env")


# -- a cell from its settings -----------------------------------------------------------------
# ``cfg``: the job's typed settings (plural_icm.config.settings.Settings), or a composed config
# with the same attributes; only the fingerprint hashes the composed config (the record).

def cell_name(cfg: Any) -> str:
    """``<model>/<dataset>/<condition>/n<n|all>/fold<k>/seed<s>`` (logs, W&B run names)."""
    n = "all" if cfg.inference.n_examples is None else cfg.inference.n_examples
    return f"{cfg.model.name}/{cfg.dataset.name}/{condition_part(cfg)}/n{n}/fold{cfg.fold}/seed{cfg.seed}"


def condition_part(cfg: Any) -> str:
    """The condition's part of the cell's path and rows: ``<condition>`` or
    ``<condition>+<selection tag>`` (:func:`selection_tag`)."""
    sel = selection_tag(cfg)
    return str(cfg.condition.name) + (f"{SELECTION_SEP}{sel}" if sel else "")


def cell_path(cfg: Any) -> Path:
    return cell_dir(cfg.paths.results_dir, cfg.run_tag, cfg.model.name, cfg.dataset.name,
                    str(cfg.condition.name), cfg.inference.n_examples, cfg.fold, cfg.seed,
                    selection_tag(cfg))


def fingerprint(cfg: DictConfig, ignore: Sequence[str] = ()) -> str:
    """Hash of every config key that can change a cell's results.

    The keys in :data:`NON_RESULT_KEYS` (paths, logging, resources) are
    left out, so moving outputs or asking for more memory does not make a finished cell "different";
    so are the dotted keys in ``ignore``: those the cell's condition never reads
    (:attr:`plural_icm.conditions.base.Condition.ignores`).
    """
    d = drop_non_result_keys(OmegaConf.to_container(cfg, resolve=True))
    drop_keys(d, ignore)
    # A condition key that is unset (None) is not a setting of this condition: adding an optional
    # key for a new condition leaves the fingerprints of existing cells as they were.
    if isinstance(d.get("condition"), dict):
        d["condition"] = {k: v for k, v in d["condition"].items() if v is not None}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- records ----------------------------------------------------------------------------------

class RecordError(ValueError):
    """A result file that cannot be read as its record: names the file and what was expected."""


class _Record:
    """JSON round trip of a dataclass record: unknown keys are refused, naming the file."""

    def as_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> Any:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise RecordError(f"{source or cls.__name__}: unexpected keys {sorted(unknown)} for a "
                             f"{cls.__name__} (expected {sorted(names)})")
        return cls(**d)

    @classmethod
    def read(cls, directory: str | Path) -> Any:
        """The record stored in ``directory`` under the record's file name (``FILE``)."""
        path = Path(directory) / cls.FILE  # type: ignore[attr-defined]
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise RecordError(f"{path}: not readable JSON ({type(exc).__name__})") from None
        if not isinstance(d, dict):
            raise RecordError(f"{path}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, str(path))

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]


@dataclass
class PredictionRow(_Record):
    """One held-out claim scored by the instruct model (a line of ``predictions.jsonl``)."""

    persona_id: str
    item_id: str
    question_id: str
    group_id: str
    option_key: str
    option_index: Optional[int]
    gold: Optional[bool]
    distribution: Optional[list]
    logp_true: float
    logp_false: float
    p_true: float
    pred: bool
    perturbation: Optional[int] = None
    """Which perturbed example set produced it (conditions with perturbations), else None."""
    model: str = ""
    dataset: str = ""
    condition: str = ""
    fold: int = 0
    seed: int = 0


@dataclass
class ExampleRow(_Record):
    """One in-context example shown under the cell's condition (a line of ``examples.jsonl``)."""

    persona_id: str
    item_id: str
    label: bool
    gold: Optional[bool]


@dataclass
class GenerationRow(_Record):
    """One steered answer of an open-ended cell and its judge's rating (a line of
    ``generations.jsonl``, :data:`GENERATIONS`; OvertonBench)."""

    FILE: ClassVar[str] = GENERATIONS

    persona_id: str
    question_id: str
    question: str
    answer: str
    judge_reply: str
    score: Optional[int]
    """The judge's 1-5 rating, None when its reply holds none (counted as missing)."""
    n_steering_examples: int
    """Examples labelled True in the steering prompt."""
    perturbation: Optional[int] = None
    """Which perturbed example set steered it (conditions with perturbations), else None."""

    @classmethod
    def read_rows(cls, directory: str | Path) -> list["GenerationRow"]:
        """Every row of ``<directory>/generations.jsonl``; an unreadable line or an unexpected key
        is a :class:`RecordError` naming the file and line."""
        path = Path(directory) / cls.FILE
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                d = json.loads(line)
            except ValueError as exc:
                raise RecordError(f"{path}:{n}: not readable JSON ({type(exc).__name__})") from None
            if not isinstance(d, dict):
                raise RecordError(f"{path}:{n}: expected a JSON object, got {type(d).__name__}")
            rows.append(cls.from_dict(d, f"{path}:{n}"))
        return rows


@dataclass
class CellMeta(_Record):
    model: str
    dataset: str
    condition: str
    fold: int
    seed: int
    n_examples: Optional[int]
    run_tag: str
    score_metric: Optional[str] = None
    """The metric the dataset declares as its score (``dataset.score_metric``, where set)."""
    icm_preset: Optional[str] = None
    """For conditions with an ICM search: the preset, ``icm.search_unit`` and ``icm.seed_labels``
    behind the examples (``gold`` seeds are marked in the report)."""
    search_unit: Optional[str] = None
    seed_labels: Optional[str] = None
    context_order: Optional[str] = None
    """``icm.context_order`` the search scored P and U in (P's of two orders do not compare)."""
    selection: Optional[str] = None
    """Non-default example selection (``plural_icm.selection``): its path tag, e.g. ``spica``."""
    selection_supervised: Optional[bool] = None
    """Whether the selection read gold labels (``spica`` with ``group_source=gold``)."""
    wall_time_s: float = 0.0
    backend_stats: dict = field(default_factory=dict)


OVERALL_METRIC_KEYS = ("claim_accuracy", "claim_accuracy_se", "n_claims", "question_accuracy",
                       "question_accuracy_se", "n_questions", "ece", "stable_fraction",
                       "js_distance", "representation_score", "example_label_accuracy",
                       "icm_label_accuracy", "icm_mutual_predictability")
"""The scalar metrics of a cell that the summary and the analysis read (absent ones are NaN)."""


@dataclass
class CellResult(_Record):
    """``metrics.json``: overall and per-persona metrics (keys as in metrics.aggregate, plus the
    condition's, e.g. ``icm_label_accuracy``, ``icm_mutual_predictability``), and the meta."""

    overall: dict
    per_persona: dict
    meta: Optional[dict] = None

    FILE: ClassVar[str] = METRICS

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> "CellResult":
        """The record, checked: ``overall`` and ``per_persona`` objects (``meta`` one or null),
        every number finite (the cell refuses to write a NaN: one here is a damaged file)."""
        where = source or cls.__name__
        for key in ("overall", "per_persona"):
            if not isinstance(d.get(key), dict):
                raise RecordError(f"{where}: {key!r} is missing or not a JSON object")
        if d.get("meta") is not None and not isinstance(d["meta"], dict):
            raise RecordError(f"{where}: 'meta' is not a JSON object")
        bad = non_finite_metrics(d)
        if bad:
            raise RecordError(f"{where}: {len(bad)} value(s) are NaN or infinite ({', '.join(bad[:5])})")
        return super().from_dict(d, source)


@dataclass
class CompleteRecord(_Record):
    """``COMPLETE.json`` of a cell: written last."""

    fingerprint: str
    finished: float
    wall_time_s: float
    slurm: Optional[dict] = None

    FILE: ClassVar[str] = COMPLETE


@dataclass
class CellOutput:
    """What a computed cell writes: the records of its files (:func:`write_cell_files`)."""

    predictions: list[PredictionRow]
    examples: list[ExampleRow]
    metrics: dict
    """A :class:`CellResult` as a dict (``metrics.json``)."""
    generations: list[GenerationRow] = field(default_factory=list)
    selection: list[dict] = field(default_factory=list)
    """Per persona and held-out question, the training questions shown (per-query selection)."""


def write_cell_files(out: Path, composed: DictConfig, result: CellOutput, *, open_ended: bool,
                     fp: str, started: float, slurm: Optional[dict]) -> None:
    """A computed cell's files in ``out``, each atomic; ``COMPLETE.json`` (its fingerprint ``fp``,
    the wall time since ``started``, a ``time.perf_counter()`` value) last. ``config.yaml``: the
    composed config, resolved, secrets scrubbed (the record of what ran); ``generations.jsonl``
    for open-ended data; ``selection.jsonl`` when a per-query selection chose the examples."""
    atomic_write_text(out / CONFIG, OmegaConf.to_yaml(OmegaConf.create(
        scrub_secrets(OmegaConf.to_container(composed, resolve=True, enum_to_str=True)))))
    atomic_write_jsonl(out / PREDICTIONS, (r.as_dict() for r in result.predictions))
    atomic_write_jsonl(out / EXAMPLES, (e.as_dict() for e in result.examples))
    if open_ended:
        atomic_write_jsonl(out / GENERATIONS, [g.as_dict() for g in result.generations])
    if result.selection:
        atomic_write_jsonl(out / SELECTION, result.selection)
    atomic_write_json(out / METRICS, result.metrics)
    atomic_write_json(out / COMPLETE, CompleteRecord(
        fingerprint=fp, finished=time.time(), wall_time_s=time.perf_counter() - started,
        slurm=slurm).as_dict())


@dataclass
class LabellingScore(_Record):
    """Test accuracy of the ICM-labelled examples and the labelling's own quality."""

    test_accuracy: Optional[float]
    """Claim accuracy on the held-out fold (the paper's metric, compared with its Table 1)."""
    label_accuracy: Optional[float]
    U: Optional[float]
    """``alpha * P - I`` (the paper's "coherence")."""
    mutual_predictability: Optional[float]
    inconsistencies: Optional[int]
    test_question_accuracy: Optional[float] = None
    """Question-level accuracy (stricter: the highest-P(True) option is the plurality option)."""
    context_order: Optional[str] = None
    """``icm.context_order`` that U and P were scored in (P's of two orders do not compare)."""


@dataclass
class CollaborativeSummary(_Record):
    """``summary.json`` of one collaborative-elicitation run (persona, method, fold)."""

    persona: str
    method: str
    fold: int
    k: int
    asked: list
    before: dict
    """A :class:`LabellingScore` of the labels before any question was asked."""
    test_accuracy: Optional[float]
    """Claim accuracy on the held-out fold (the paper's metric, compared with its Table 1)."""
    label_accuracy: Optional[float]
    U: Optional[float]
    mutual_predictability: Optional[float]
    inconsistencies: Optional[int]
    test_question_accuracy: Optional[float] = None
    """Question-level accuracy (stricter: the highest-P(True) option is the plurality option)."""
    context_order: Optional[str] = None
    """``icm.context_order`` that U and P were scored in."""
    fingerprint: Optional[str] = None
    """The settings' hash (:func:`fingerprint`): a relaunch with other settings (another
    ``k_per_fold`` or ``rounds``) never reuses this summary."""
    run_tag: Optional[str] = None
    k_per_fold: Optional[int] = None
    rounds: Optional[int] = None

    FILE: ClassVar[str] = SUMMARY
    LABELLING_KEYS: ClassVar[tuple[str, ...]] = ("test_accuracy", "label_accuracy", "U")
    """The values Table 1 reports, before and after."""
