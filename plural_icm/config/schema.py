"""Structured-config schemas (Hydra ConfigStore).

Every YAML under ``conf/`` is validated against these dataclasses: an unknown key, a wrong type or a
value outside an enum fails at start with a message naming the key (and, for enums, the valid
values). Config-group choices that do not exist fail with Hydra's list of available options.

Kept in an importable module (never in ``__main__``): submitit pickles the task for SLURM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from plural_icm.backends.settings import VLLMEngineArgs
# The dataset's schema lives with the data (the loaders type their input without importing Hydra).
from plural_icm.data.settings import DatasetConfig, DatasetSizeConfig  # noqa: F401
# The enumerated settings live below the config layer (the search and the data use them without
# importing Hydra); re-exported here for the schema below and for existing imports.
from plural_icm.choices import (QuestionsFrom, Aggregate, ContextOrder, ContextPolicy, Engine, ExampleOrder,
                                 RepairRule, ScoreMetric, SearchUnit, SeedLabels, Schedule,
                                 TemperatureIndex)
from plural_icm.search.params import DEFAULTS as SEARCH_DEFAULTS
# Which config keys change results is the fingerprint's concern (plural_icm.layout).
from plural_icm.layout import NON_RESULT_KEYS, drop_non_result_keys  # noqa: F401


class BackendName(str, Enum):
    hf = "hf"
    vllm = "vllm"
    openai = "openai"


class Stage(str, Enum):
    cell = "cell"                  # search if the condition needs it, then inference + metrics
    search = "search"              # only the ICM searches of the cell's (model, dataset, fold)
    data_stats = "data_stats"      # print per-dataset statistics
    collaborative = "collaborative"  # collaborative elicitation (Section 6 of the paper)
    plan = "plan"                  # dry run: jobs, searches, cost and memory estimates, no submission


def check_config(cfg: Any) -> None:
    """Checks Hydra's schema cannot make, run before a job does anything.

    ``+model.vllm.<key>=...`` adds a key past the structured schema; it is refused here, naming the
    key and the valid ones (:func:`plural_icm.backends.settings.engine_settings`). ``dataset.options``
    are checked against the loader's options dataclass
    (:func:`plural_icm.data.registry.validated_options`).
    """
    from plural_icm.backends.settings import engine_settings
    from plural_icm.data.registry import validated_options

    engine_settings(cfg.model.get("vllm"))  # before typing: a `+` key is still there to refuse
    validated_options(cfg.dataset)


@dataclass
class ModelConfig:
    name: str = MISSING
    """Short name used in result paths (``llama70b``)."""
    base: str = MISSING
    """Base checkpoint for ICM search: hub id, local folder, or ``packaged:<name>``."""
    instruct: str = MISSING
    """Instruct checkpoint for in-context inference (same forms as ``base``)."""
    revision: Optional[str] = None
    backend: BackendName = BackendName.hf
    dtype: str = "auto"
    """``auto``: float32 on CPU (bf16 is ~3.5x slower there), bfloat16 on GPU."""
    device: str = "auto"
    max_context: int = 8192
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    batch_size: int = 8
    trust_remote_code: bool = False
    """Never on by default: it runs code shipped with a checkpoint."""
    api_base: Optional[str] = None
    """For backend=openai: the server URL (``http://host:8000/v1``). Keys come from env vars only."""
    api_key_env: str = "OPENAI_API_KEY"
    prefix_cache_gb: Optional[float] = 4.0
    """For backend=hf: byte budget (GiB) of the segment prefix cache, LRU; null: unbounded. An
    evicted prefix is recomputed, so the budget never changes a result."""
    request_cache: bool = False
    """Answer repeated requests (same model, revision, backend, output-changing settings, labels or
    generation parameters, prompt tokens) from ``<paths.cache_dir>/requests`` instead of the model."""
    engine_per_process: Optional[bool] = None
    """Run a cell's base-model work (searches not yet on disk, the base-model scoring of
    ``acc_matched``/``bootstrap``) in a child process that exits before the instruct model is
    loaded, so no process holds two engines. null: only for backend=vllm (vLLM does not reliably
    free GPU memory when an engine is closed); true/false force it. Never changes a result."""
    vllm: VLLMEngineArgs = field(default_factory=VLLMEngineArgs)
    """For backend=vllm: engine settings passed to ``vllm.LLM`` (unknown keys are an error)."""
    # -- resources a SLURM job of this model needs (read by the launcher presets) --
    gpus: int = 0
    cpus: int = 2
    mem_gb: int = 16
    time_min: int = 60
    # -- what stage=plan needs to size the model without loading it (from the checkpoint's
    #    config.json); None: the memory check is skipped with a note --
    params_b: Optional[float] = None
    """Parameters, in billions (all experts of a mixture-of-experts model)."""
    layers: Optional[int] = None
    kv_heads: Optional[int] = None
    head_dim: Optional[int] = None
    throughput_tok_s: Optional[float] = None
    """Prompt tokens per second of one engine of this model on its ``gpus`` (an ESTIMATE used only
    by stage=plan for GPU-hours; measure yours with plural_icm.bench and set it in conf/local)."""


@dataclass
class ConditionConfig:
    name: str = MISSING
    """A registered condition (plural_icm.conditions.registry); unknown names fail at the cell's
    start with the list of registered ones."""
    model_role: str = "instruct"
    """Which checkpoint answers: ``instruct`` or ``base`` (zero_shot_base)."""
    n_perturbations: int = 1
    """acc_matched: how many perturbed label sets are averaged (the paper: 5)."""
    accuracy_tolerance: float = 0.005
    max_perturbation_tries: int = 2000
    seeds: Optional[list[int]] = None
    """acc_matched: the seeds of its example sets (the paper's fork: 42, 101, 202, 303, 404).
    Unset (None) in other conditions, where the fingerprint leaves it out."""
    passes: Optional[int] = None
    """bootstrap: relabelling passes over the search set before the consistency rule is applied
    (conf/condition/bootstrap.yaml: 3). Unset (None) in other conditions, where the fingerprint
    leaves it out, so adding this key did not change the fingerprints of existing cells."""


@dataclass
class ICMConfig:
    preset: str = MISSING
    # The algorithm's settings default to THE defaults, the search's (plural_icm.search.params);
    # the keys below them are the pipeline's (which searches, how many, which engine, the prompt).
    alpha: float = SEARCH_DEFAULTS.alpha
    num_seed: int = SEARCH_DEFAULTS.num_seed
    max_iters: int = SEARCH_DEFAULTS.max_iters
    initial_temp: float = SEARCH_DEFAULTS.initial_temp
    final_temp: float = SEARCH_DEFAULTS.final_temp
    decay: float = SEARCH_DEFAULTS.decay
    schedule: Schedule = Schedule(SEARCH_DEFAULTS.schedule)
    log_schedule_constant: float = SEARCH_DEFAULTS.log_schedule_constant
    """The log schedule's constant: 2 in the published code, beta = 0.99 in Wen et al.'s text."""
    temperature_index: TemperatureIndex = TemperatureIndex(SEARCH_DEFAULTS.temperature_index)
    aggregate: Aggregate = Aggregate(SEARCH_DEFAULTS.aggregate)
    repair_rule: RepairRule = RepairRule(SEARCH_DEFAULTS.repair_rule)
    """ConsistencyFix's adoption rule: ``improve`` (ours, a repair must raise U) or ``first``
    (the paper's fork adopts each inconsistent group's best-scored repair unconditionally: its
    running best starts at -1e6). icm=fork uses ``first``."""
    patience: Optional[int] = SEARCH_DEFAULTS.patience
    """Early stop (ours): every claim labelled and no accepted change for this many iterations;
    null = no early stop (the published algorithm runs its fixed iteration count)."""
    search_unit: SearchUnit = SearchUnit.training_folds
    """What one search covers for held-out fold k: the union of the training folds (ours), or
    each training fold part on its own, the examples being the union of the parts' labels (the
    paper's fork)."""
    seed_labels: SeedLabels = SeedLabels(SEARCH_DEFAULTS.seed_labels)
    repair_seed_labels: bool = SEARCH_DEFAULTS.repair_seed_labels
    """ConsistencyFix on the seed labels before the first iteration (Wen et al. Alg. 1 line 2)."""
    restarts: int = 1
    """Independent searches from different seeds; the highest-U assignment wins."""
    engine: Engine = Engine.fast
    context_order: ContextOrder = ContextOrder(SEARCH_DEFAULTS.context_order)
    """The order of the other labelled claims in every leave-one-out context: ``published`` (one
    global order, by uid grouped by consistency group, as the published code) or ``halving_tail``
    (recursive halving over a seeded shuffle plus a tail of recently changed claims: fewer tokens,
    a different objective). Part of every search's identity."""
    fix_max_rounds: int = SEARCH_DEFAULTS.fix_max_rounds
    unlabelled_weight: float = SEARCH_DEFAULTS.unlabelled_weight
    """Sampling weight of unlabelled claims whose group already holds a labelled claim."""
    checkpoint_every: int = SEARCH_DEFAULTS.checkpoint_every
    labels: list[str] = field(default_factory=lambda: [" True", " False"])
    template: str = "Question: {question}\nClaim: {claim}\nI think this claim is"


@dataclass
class InferenceConfig:
    n_examples: Optional[int] = None
    """In-context examples per prompt: None = all training claims; an int takes the same subset
    (by a seeded shuffle of question ids) for every condition."""
    context_policy: ContextPolicy = ContextPolicy.error
    example_order: ExampleOrder = ExampleOrder.shuffled
    """Order of the in-context examples: ``shuffled`` (the paper's fork shuffles every example
    file; here seeded by the cell's ``seed`` and the persona, the same permutation for every
    condition and perturbation) or ``loader`` (the data's order, both options of a question
    adjacent: this project's order before the fork's was read)."""
    labels: list[str] = field(default_factory=lambda: [" True", " False"])
    system_prompt: str = MISSING
    example_template: str = MISSING
    query_template: str = MISSING
    # Steered generation + judge (open-ended datasets such as OvertonBench)
    judge_model: Optional[str] = None
    """The OvertonBench judge checkpoint (hub id, folder, ``packaged:<name>``, or the served
    model's name for ``judge_backend=openai``); None: the model under test judges itself, and the
    report marks its OT scores as not comparable with the paper's (OvertonBench's validated judge)."""
    judge_validation: Optional[str] = None
    """Where the judge's agreement with OvertonBench's human ratings is shown (a citation or a
    measurement, e.g. "Spearman 0.86 vs human ratings, docs/..."). The report marks OT scores
    comparable with the paper's only for a judge other than the model under test with this set;
    None: not comparable (the judge prompt is ours, not the paper's)."""
    judge_backend: Optional[BackendName] = None
    """Backend of the judge (``hf``, ``vllm``, ``openai``); None: the model's backend."""
    judge_api_base: Optional[str] = None
    """For ``judge_backend=openai``: the OpenAI-compatible server URL."""
    judge_api_key_env: str = "OPENAI_API_KEY"
    """Name of the env var holding the judge server's key (never the key itself)."""
    judge_prompt: str = ""
    max_new_tokens: int = 200


@dataclass
class SelectionConfig:
    """Which training examples each query sees (plural_icm.selection). ``all`` keeps today's
    behaviour (every example of the condition, or the shared ``inference.n_examples`` subset);
    the others pick ``inference.n_examples`` examples per held-out question from all of them."""

    name: str = "all"
    """``all`` | ``random`` (per question, seeded) | ``nearest`` (SPICA's BASELINE: cosine
    similarity of the question texts) | ``spica`` (similarity and the group terms, weights fitted
    per persona on an inner dev split of the training folds)."""
    prompt: str = "contrastive"
    """Which claims of a retrieved question are shown: ``contrastive`` (all of them, True and
    False, as under ``all``), ``positive`` (only those labelled True) or ``contrastive_response``
    (as ``contrastive``, and in steered generation the False-labelled answers are shown too,
    marked as not representing the group: SPICA's C-R; docs/selection.md)."""
    group_source: str = "auto"
    """What SPICA's group terms read: ``gold`` (the data's ratings/labels: supervised), ``icm`` (the
    ICM search's per-label confidence: no human label) or ``auto`` (``icm`` for conditions with an
    ICM search, else ``gold``)."""
    contrast_mean: str = "members"
    """g_contrast: the mean over the group's members of their contrast (``members``, the paper's
    formula) or the contrast of the group's mean rating (``group``, its prose)."""
    dev_fraction: float = 0.3
    """Share of a persona's training questions held out to fit the weights (the inner dev split)."""
    embedding_backend: str = "sentence_transformers"
    """``sentence_transformers`` (local, CPU/GPU) or ``openai`` (an OpenAI-compatible endpoint)."""
    embedding_model: str = "packaged:all-minilm-l6-v2"
    embedding_api_base: Optional[str] = None
    embedding_api_key_env: str = "OPENAI_API_KEY"
    embedding_device: Optional[str] = None
    embedding_batch_size: int = 64


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: str = "offline"
    """``offline`` (default, no account; ``wandb sync`` later), ``online`` or ``disabled``."""
    project: str = "plural_icm"
    entity: Optional[str] = None
    group: Optional[str] = None
    dir: str = "${paths.output_dir}"


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    output_dir: str = MISSING
    results_dir: str = MISSING
    searches_dir: str = MISSING
    cache_dir: str = MISSING
    data_dir: Optional[str] = None


@dataclass
class CollaborativeConfig:
    k_per_fold: int = 1
    """Questions asked per round: in all (``questions_from=pooled``) or from each training fold."""
    questions_from: QuestionsFrom = QuestionsFrom.pooled
    """``pooled`` (ours): the ``k_per_fold`` questions ICM is least sure of over the held-out
    fold's whole training set; ``per_training_fold`` (the paper's Section 6, "1 per fold", k = 4
    over 4 folds): ``k_per_fold`` from EACH training fold, ranked within it, so with
    ``icm.search_unit=part`` every part's search gets its own answers and a part asks the same
    question in every held-out fold's job."""
    rounds: int = 1
    selection: list[str] = field(default_factory=lambda: ["confidence", "random", "active"])
    answers_file: Optional[str] = None
    """A file of human answers (question id -> option) read back on the next run; when absent the
    gold label answers (simulated human)."""


@dataclass
class ClusterConfig:
    """The GPUs jobs run on (set in conf/local/default.yaml); stage=plan checks models against it."""

    gpu_memory_gb: float = 80.0
    """Memory of one GPU in GiB (80 for A100/H100 80GB, 96 for the paper's RTX PRO 6000)."""
    gpu_overhead_gb: float = 3.0
    """Per-GPU memory vLLM needs besides weights and KV cache (CUDA context, activations of its
    profiling pass, communication buffers): an estimate."""


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    condition: ConditionConfig = MISSING
    icm: ICMConfig = MISSING
    inference: InferenceConfig = MISSING
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    collaborative: CollaborativeConfig = field(default_factory=CollaborativeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    stage: Stage = Stage.cell
    fold: int = 0
    seed: int = 0
    run_tag: str = "main"
    """Extra result-path component: change it to keep results of different settings apart."""
    force: bool = False
    """Recompute a cell even if its results are complete (the old results are moved aside)."""
    progress: bool = True


def _env_path(name: str, default: Any = None) -> Any:
    import os

    value = os.environ.get(name, "")
    return value if value.strip() else default


def _group_schemas() -> dict[str, Any]:
    return {"model_schema": ModelConfig, "dataset_schema": DatasetConfig,
            "condition_schema": ConditionConfig, "icm_schema": ICMConfig,
            "inference_schema": InferenceConfig, "logger_schema": LoggerConfig,
            "selection_schema": SelectionConfig}


def register_configs() -> None:
    import os

    from omegaconf import OmegaConf

    # ${cwd:} resolves where it is read (unlike ${hydra:runtime.cwd}, which is unset while Hydra
    # builds a multirun's launcher).
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
    # ${env_path:VAR,default}: like oc.env, but a variable set to "" (or blanks) counts as unset:
    # PLURAL_ICM_OUTPUT="" once put hydra/, results/ and searches/ at the file system's root.
    OmegaConf.register_new_resolver("env_path", _env_path, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # The groups' schemas live at the root of the config tree, outside the groups, so that Hydra
    # never offers them as a choice (``model=model_schema`` ended in an omegaconf traceback): a
    # group's YAML extends its schema with ``- /<group>_schema@_here_`` in its defaults.
    for name, node in _group_schemas().items():
        cs.store(name=name, node=node)
