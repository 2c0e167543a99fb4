"""Hostile and malformed input (issue 17): every case ends in a clear error, a counted skip, or is
accepted as valid, and never in a result written as complete.

The inputs are generated here from the committed fixtures (``tests/fixtures/datasets``): a copy
of a fixture with one thing broken. Each case declares its outcome:

* ``error``: a :class:`plural_icm.errors.UserError` (printed without a traceback) whose short
  message names the file, row or key (``names``) and what was expected;
* ``skip``: the input is left out and counted (the count is in the returned description or
  warning), or set aside with a warning (a corrupt checkpoint);
* ``valid``: accepted, with the case asserting what it was accepted as.

No case leaves a ``COMPLETE.json`` behind. ``python tests/test_hostile.py`` prints the count by
outcome and each case's outcome.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plural_icm.config.schema import DatasetConfig, register_configs  # noqa: E402
from plural_icm.errors import UserError  # noqa: E402
from settings_support import typed_settings  # noqa: E402

register_configs()
FIX = ROOT / "tests" / "fixtures" / "datasets"
GQA_CSV = FIX / "gqa" / "global_opinions.csv"
OT_PARQUET = FIX / "ot" / "full-00000-of-00001.parquet"
PT_JSONL = FIX / "pt" / "jsonl"
PT_ARROW = FIX / "pt" / "arrow"

#: name -> (outcome, substrings the message/description must contain, function of tmp_path)
CASES: dict[str, tuple[str, tuple[str, ...], Callable[[Path], object]]] = {}


def case(outcome: str, *names: str):
    assert outcome in ("error", "skip", "valid")

    def deco(fn):
        CASES[fn.__name__.removeprefix("case_")] = (outcome, names, fn)
        return fn
    return deco


# -- builders ----------------------------------------------------------------------------------

def load(cfg):
    from plural_icm.data.registry import load_claimset

    return load_claimset(cfg)


def gqa_cfg(path, skip=False, **options):
    from plural_icm.data.gqa import COUNTRIES

    opts = {"countries": list(COUNTRIES), "max_options": 3, "download": False, **options}
    return OmegaConf.structured(DatasetConfig(name="gqa", loader="gqa", path=str(path),
                                              skip_bad_rows=skip, options=opts))


def gqa_rows() -> pd.DataFrame:
    """The fixture's well-formed rows (its last two are an empty question and a malformed row)."""
    return pd.read_csv(GQA_CSV, dtype=str, keep_default_na=False).iloc[:7].copy()


def gqa_file(tmp: Path, df: pd.DataFrame | None = None, raw: bytes | None = None) -> Path:
    path = tmp / "bad dir é" / "global_opinions.csv"  # spaces and non-ASCII in the path, too
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        df.to_csv(path, index=False)
    return path


def gqa_with(tmp: Path, column: str, value: str, row: int = 0, skip=False) -> object:
    df = gqa_rows()
    df.loc[row, column] = value
    return load(gqa_cfg(gqa_file(tmp, df), skip=skip))


SEL = "defaultdict(<class 'list'>, {{'Brazil': {}}})"


def oqa_tree(tmp: Path) -> Path:
    dst = tmp / "oqa"
    shutil.copytree(FIX / "oqa", dst)
    return dst / "data" / "human_resp"


def oqa_cfg(path, skip=False, **options):
    return OmegaConf.structured(DatasetConfig(name="oqa", loader="oqa", path=str(path),
                                              skip_bad_rows=skip, options=options))


def oqa_counts(tmp: Path, value_text: str, skip=False, no: float | None = None) -> object:
    """POLPARTY_data.json (wave W26) with Democrat's 'Yes' count of GUNOWN_W26 replaced by raw
    JSON text (and 'No' by ``no``)."""
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W26" / "POLPARTY_data.json"
    data = json.loads(f.read_text())
    data["GUNOWN_W26"]["Democrat"]["Yes"] = "@@VALUE@@"
    if no is not None:
        data["GUNOWN_W26"]["Democrat"]["No"] = no
    f.write_text(json.dumps(data).replace('"@@VALUE@@"', value_text))
    return load(oqa_cfg(hr, skip=skip))


def oqa_file(tmp: Path, wave: str, name: str, raw: bytes, **options) -> object:
    hr = oqa_tree(tmp)
    (hr / f"American_Trends_Panel_{wave}" / name).write_bytes(raw)
    return load(oqa_cfg(hr, **options))


def oqa_weight(tmp: Path, value: str) -> object:
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W27" / "responses.csv"
    df = pd.read_csv(f, dtype=str)
    df.loc[1, "WEIGHT_W27"] = value
    df.to_csv(f, index=False)
    return load(oqa_cfg(hr))


def ot_cfg(path, skip=False, **options):
    opts = {"search_fraction": 0.3, "rating_threshold": 4.0, "download": False, **options}
    return OmegaConf.structured(DatasetConfig(name="ot", loader="ot", path=str(path), n_folds=1,
                                              skip_bad_rows=skip, options=opts))


def ot_with(tmp: Path, column: str, value, row: int = 0, skip=False, **options) -> object:
    df = pd.read_parquet(OT_PARQUET)
    df[column] = df[column].astype(object)
    df.loc[row, column] = value
    path = tmp / "full-00000-of-00001.parquet"
    df.to_parquet(path)
    return load(ot_cfg(path, skip=skip, **options))


def ot_file(tmp: Path, name: str, raw: bytes) -> object:
    path = tmp / name
    path.write_bytes(raw)
    return load(ot_cfg(path))


def pt_cfg(path, fmt="jsonl", skip=False, **options):
    opts = {"configs": ["BeaverTails"], "splits": ["test"], "persona_field": "gold",
            "download": False, "format": fmt, **options}
    return OmegaConf.structured(DatasetConfig(name="pt", loader="pt", path=str(path),
                                              skip_bad_rows=skip, options=opts))


def pt_jsonl(tmp: Path, line: bytes, skip=False) -> object:
    dst = tmp / "pt"
    shutil.copytree(PT_JSONL, dst)
    f = dst / "BeaverTails" / "test.jsonl"
    f.write_bytes(f.read_bytes() + line + b"\n")
    return load(pt_cfg(dst, skip=skip))


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=["logger=none", *overrides])


def validated(*overrides: str):
    from plural_icm.config.checks import validate_config

    cfg = compose(*overrides)
    validate_config(cfg)
    return cfg


def command_line(*argv: str):
    from plural_icm.config.guard import command_line_error

    problem = command_line_error(list(argv))
    if problem:
        raise UserError(problem)
    return True


TRUNCATED_CSV = GQA_CSV.read_bytes()[: len(GQA_CSV.read_bytes()) // 2].rsplit(b"'", 1)[0] + b"'"
GARBAGE = bytes(range(256)) * 64

# -- GlobalOpinionQA ------------------------------------------------------------------------------


@case("error", "global_opinions.csv", "UTF-8")
def case_gqa_not_utf8(tmp):
    return load(gqa_cfg(gqa_file(tmp, raw="question,options\nÉté,x\n".encode("latin-1"))))


@case("error", "global_opinions.csv", "empty file", "header")
def case_gqa_empty_file(tmp):
    return load(gqa_cfg(gqa_file(tmp, raw=b"")))


@case("error", "global_opinions.csv")
def case_gqa_binary_garbage(tmp):
    return load(gqa_cfg(gqa_file(tmp, raw=GARBAGE)))


@case("error", "global_opinions.csv", "CSV")
def case_gqa_truncated_csv(tmp):
    return load(gqa_cfg(gqa_file(tmp, raw=TRUNCATED_CSV)))


@case("error", "gqa", "produced no claims")
def case_gqa_header_only(tmp):
    return load(gqa_cfg(gqa_file(tmp, raw=b"question,options,selections,source\n")))


@case("error", "global_opinions.csv", "missing column", "selections")
def case_gqa_missing_column(tmp):
    return load(gqa_cfg(gqa_file(tmp, gqa_rows().drop(columns=["selections"]))))


@case("error", "data row 1", "options", "list literal")
def case_gqa_options_not_literal(tmp):
    return gqa_with(tmp, "options", "['Yes', 'No'")


@case("skip", "1 bad row")
def case_gqa_options_not_literal_skipped(tmp):
    return gqa_with(tmp, "options", "['Yes', 'No'", skip=True).description


@case("error", "data row 1", "options")
def case_gqa_options_code_never_run(tmp):
    marker = tmp / "ran"
    try:
        return gqa_with(tmp, "options", f"__import__('pathlib').Path('{marker}').touch()")
    finally:
        assert not marker.exists()


@case("error", "data row 1", "'options'", "300,000 characters", "at most 200,000")
def case_gqa_options_field_too_large(tmp):
    return gqa_with(tmp, "options", "['" + "x" * 299_996 + "']")


@case("error", "data row 1", "selections")
def case_gqa_selections_nested_deeply(tmp):
    return gqa_with(tmp, "selections", "[" * 100_000 + "]" * 100_000)


@case("error", "data row 1", "selections", "non-finite")
def case_gqa_share_10_pow_400(tmp):
    return gqa_with(tmp, "selections", SEL.format("[" + str(10**400) + ", 0.3]"))


@case("error", "data row 1", "selections", "non-finite")
def case_gqa_share_infinite(tmp):
    return gqa_with(tmp, "selections", SEL.format("[1e999, 0.3]"))


@case("error", "data row 1", "selections", "negative")
def case_gqa_share_negative(tmp):
    return gqa_with(tmp, "selections", SEL.format("[-0.5, 0.3]"))


@case("error", "data row 1", "selections", "numbers")
def case_gqa_share_not_a_number(tmp):
    return gqa_with(tmp, "selections", SEL.format("['a', 0.3]"))


@case("error", "data row 1", "3 shares", "2 options", "one share per option")
def case_gqa_ragged_shares_short_message(tmp):
    df = gqa_rows()
    df.loc[0, "options"] = str(["option " + "y" * 2000, "option " + "z" * 2000])
    df.loc[0, "selections"] = SEL.format("[0.3, 0.3, 0.4]")
    return load(gqa_cfg(gqa_file(tmp, df)))  # the 4 kB option list is not in the message


@case("skip", "skipped 1 empty-question row")
def case_gqa_empty_question(tmp):
    return gqa_with(tmp, "question", "   ").description


@case("error", "dataset.options.ties", "drop")
def case_gqa_bad_ties_option(tmp):
    return load(gqa_cfg(GQA_CSV, ties="random"))


@case("error", "dataset.path", "does not exist")
def case_gqa_path_missing(tmp):
    return load(gqa_cfg(tmp / "nope.csv"))


@case("error", "no global_opinions.csv")
def case_gqa_path_empty_directory(tmp):
    return load(gqa_cfg(tmp))


@case("error", "dataset.path", "FIFO", "regular file or a directory")
def case_gqa_path_fifo(tmp):
    fifo = tmp / "fifo.csv"
    os.mkfifo(fifo)
    return load(gqa_cfg(fifo))  # used to block forever


@case("error", "dataset.path=/dev/zero", "device")
def case_gqa_path_dev_zero(tmp):
    return load(gqa_cfg("/dev/zero"))  # used to read 2.2 GB


# -- OpinionQA --------------------------------------------------------------------------------------

@case("error", "POLPARTY_data.json", "Infinity")
def case_oqa_count_infinity(tmp):
    return oqa_counts(tmp, "Infinity")


@case("error", "POLPARTY_data.json", "NaN")
def case_oqa_count_nan(tmp):
    return oqa_counts(tmp, "NaN")


@case("error", "POLPARTY_data.json", "finite")
def case_oqa_count_1e999(tmp):
    return oqa_counts(tmp, "1e999")


@case("error", "POLPARTY_data.json", "GUNOWN_W26", "too large for a float")
def case_oqa_count_10_pow_400(tmp):
    return oqa_counts(tmp, str(10**400))


@case("error", "GUNOWN_W26", "Democrat", "overflow", "finite counts")
def case_oqa_counts_overflow_when_summed(tmp):
    return oqa_counts(tmp, "1.7e308", no=1.7e308)


@case("skip", "1 bad row")
def case_oqa_counts_overflow_skipped(tmp):
    return oqa_counts(tmp, "1.7e308", no=1.7e308, skip=True).description


@case("error", "POLPARTY_data.json", "non-negative")
def case_oqa_count_negative(tmp):
    return oqa_counts(tmp, "-3")


@case("error", "POLPARTY_data.json", "must be a number")
def case_oqa_count_string(tmp):
    return oqa_counts(tmp, '"12"')


@case("error", "POLPARTY_data.json", "nested too deeply")
def case_oqa_json_nested_200000_deep(tmp):
    return oqa_file(tmp, "W26", "POLPARTY_data.json", b"[" * 200_000 + b"]" * 200_000)


@case("error", "POLPARTY_data.json", "invalid JSON")
def case_oqa_json_truncated(tmp):
    raw = (FIX / "oqa/data/human_resp/American_Trends_Panel_W26/POLPARTY_data.json").read_bytes()
    return oqa_file(tmp, "W26", "POLPARTY_data.json", raw[: len(raw) // 2])


@case("error", "POLPARTY_data.json", "UTF-8")
def case_oqa_json_not_utf8(tmp):
    return oqa_file(tmp, "W26", "POLPARTY_data.json", '{"Été": 1}'.encode("latin-1"))


@case("error", "POLPARTY_data.json", "expected an object")
def case_oqa_json_wrong_shape(tmp):
    return oqa_file(tmp, "W26", "POLPARTY_data.json", b"[1, 2]")


@case("error", "info.csv", "empty file")
def case_oqa_info_empty(tmp):
    return oqa_file(tmp, "W26", "info.csv", b"")


@case("error", "info.csv", "UTF-8")
def case_oqa_info_not_utf8(tmp):
    return oqa_file(tmp, "W26", "info.csv", "key,question\nÉté,x\n".encode("latin-1"))


@case("error", "info.csv", "data row 1", "references", "at most 200,000")
def case_oqa_info_field_too_large(tmp):
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W26" / "info.csv"
    df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df.loc[0, "references"] = "['" + "x" * 250_000 + "']"
    df.to_csv(f, index=False)
    return load(oqa_cfg(hr))


@case("error", "info.csv", "data row 1", "references", "list")
def case_oqa_info_references_not_a_list(tmp):
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W26" / "info.csv"
    df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df.loc[0, "references"] = "42"
    df.to_csv(f, index=False)
    return load(oqa_cfg(hr))


@case("skip", "1 bad row")
def case_oqa_info_bad_ordinal_skipped(tmp):
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W26" / "info.csv"
    df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df.loc[0, "option_ordinal"] = "[1.0, 2.0, 3.0, 4.0, 5.0]"
    df.to_csv(f, index=False)
    return load(oqa_cfg(hr, skip=True)).description


@case("error", "responses.csv", "data row 2", "WEIGHT_W27", "finite")
def case_oqa_weight_infinite(tmp):
    return oqa_weight(tmp, "inf")


@case("error", "responses.csv", "data row 2", "WEIGHT_W27")
def case_oqa_weight_not_numeric(tmp):
    return oqa_weight(tmp, "heavy")


@case("error", "responses.csv", "data row 2", "non-negative")
def case_oqa_weight_negative(tmp):
    return oqa_weight(tmp, "-1")


@case("error", "responses.csv", "empty file")
def case_oqa_responses_empty(tmp):
    return oqa_file(tmp, "W27", "responses.csv", b"")


@case("error", "dataset.options.counts", "unweighted")
def case_oqa_bad_counts_option(tmp):
    return load(oqa_cfg(FIX / "oqa", counts="some"))


# -- OvertonBench -----------------------------------------------------------------------------------

@case("error", "full-00000-of-00001.parquet", "Parquet", "truncated")
def case_ot_truncated_parquet(tmp):
    raw = OT_PARQUET.read_bytes()
    return ot_file(tmp, "full-00000-of-00001.parquet", raw[: len(raw) // 2])


@case("error", "full.parquet", "Parquet")
def case_ot_garbage_parquet(tmp):
    return ot_file(tmp, "full.parquet", GARBAGE)


@case("error", "full.csv", "empty file")
def case_ot_empty_csv(tmp):
    return ot_file(tmp, "full.csv", b"")


@case("error", "full.csv", "UTF-8")
def case_ot_csv_not_utf8(tmp):
    return ot_file(tmp, "full.csv", "user,question\nÉté,x\n".encode("latin-1"))


@case("skip", "1 row(s) with an empty question skipped")
def case_ot_empty_question(tmp):
    return ot_with(tmp, "question", "  ").description


@case("error", "rating_threshold=9", "[1, 5]")
def case_ot_rating_threshold_9(tmp):
    return load(ot_cfg(OT_PARQUET, rating_threshold=9))


@case("error", "rating_threshold='high'", "a number")
def case_ot_rating_threshold_not_numeric(tmp):
    return load(ot_cfg(OT_PARQUET, rating_threshold="high"))


@case("error", "rating_threshold=nan")
def case_ot_rating_threshold_nan(tmp):
    return load(ot_cfg(OT_PARQUET, rating_threshold=float("nan")))


@case("error", "search_fraction=0", "(0, 1)")
def case_ot_search_fraction_zero(tmp):
    return load(ot_cfg(OT_PARQUET, search_fraction=0))


@case("error", "search_fraction='most'")
def case_ot_search_fraction_not_numeric(tmp):
    return load(ot_cfg(OT_PARQUET, search_fraction="most"))


@case("error", "fold=1", "valid folds are 0..0")
def case_ot_fold_1_of_a_30_70_split(tmp):
    return load(ot_cfg(OT_PARQUET)).split(1)


@case("error", "row 0", "representation_rating", "1..5")
def case_ot_rating_out_of_range(tmp):
    return ot_with(tmp, "representation_rating", 7)


# -- Persona-Tailoring --------------------------------------------------------------------------------

@case("error", "test.jsonl", "UTF-8")
def case_pt_jsonl_not_utf8(tmp):
    return pt_jsonl(tmp, '{"prompt": "Été"}'.encode("latin-1"))


@case("error", "test.jsonl", "line 6", "nested too deeply")
def case_pt_jsonl_nested_deeply(tmp):
    return pt_jsonl(tmp, b"[" * 200_000 + b"]" * 200_000)


@case("skip", "1 bad row")
def case_pt_jsonl_nested_deeply_skipped(tmp):
    return pt_jsonl(tmp, b"[" * 200_000 + b"]" * 200_000, skip=True).description


@case("error", "test.jsonl", "line 6", "invalid JSON")
def case_pt_jsonl_truncated_line(tmp):
    return pt_jsonl(tmp, b'{"prompt": "How do I')


@case("error", "data-00000-of-00001.arrow", "Arrow", "truncated")
def case_pt_arrow_truncated(tmp):
    dst = tmp / "pt"
    shutil.copytree(PT_ARROW, dst / "arrow")
    f = next((dst / "arrow").rglob("*.arrow"))
    f.write_bytes(f.read_bytes()[:200])
    return load(pt_cfg(dst, fmt="arrow"))


@case("error", "test-00000-of-00001.parquet", "Parquet")
def case_pt_parquet_garbage(tmp):
    d = tmp / "pt" / "parquet" / "BeaverTails"
    d.mkdir(parents=True)
    (d / "test-00000-of-00001.parquet").write_bytes(GARBAGE)
    return load(pt_cfg(tmp / "pt", fmt="parquet"))


@case("error", "persona_field", "gold or retr")
def case_pt_bad_persona_field(tmp):
    return load(pt_cfg(PT_JSONL, persona_field="silver"))


# -- config values --------------------------------------------------------------------------------

@case("error", "icm.alpha=nan", "finite")
def case_config_alpha_nan(tmp):
    return validated("icm.alpha=nan")


@case("error", "icm.alpha=inf", "finite")
def case_config_alpha_inf(tmp):
    return validated("icm.alpha=inf")


@case("error", "dataset.n_folds=0", ">= 2")
def case_config_n_folds_zero(tmp):
    return validated("dataset=gqa", "dataset.n_folds=0")


@case("error", "dataset.n_folds=0")
def case_loader_n_folds_zero(tmp):  # the loader too: it once read `n_folds or 4`
    cfg = gqa_cfg(GQA_CSV)
    cfg.n_folds = 0
    return load(cfg)


@case("error", "fold=7", "0..3")
def case_config_fold_out_of_range(tmp):
    return validated("dataset=gqa", "fold=7")


@case("error", "icm.decay=0", "(0, 1]")
def case_config_decay_zero(tmp):
    return validated("icm.decay=0")


@case("error", "collaborative.k_per_fold=0", ">= 1")
def case_config_k_per_fold_zero(tmp):
    return validated("collaborative.k_per_fold=0")


@case("error", "inference.n_examples=-1")
def case_config_negative_n_examples(tmp):
    return validated("inference.n_examples=-1")


@case("error", "run_tag='a/b'", "plain name")
def case_config_run_tag_with_slash(tmp):
    return validated("run_tag=a/b")


@case("error", "paths.output_dir='/'", "root")
def case_config_output_dir_root(tmp):
    return validated("paths.output_dir=/")


@case("error", "model.gpu_memory_utilization=1.5")
def case_config_gpu_memory_above_one(tmp):
    return validated("model.gpu_memory_utilization=1.5")


@case("error", "seed=-1")
def case_config_negative_seed(tmp):
    return validated("seed=-1")


@case("valid")
def case_config_output_env_empty_means_unset(tmp):
    old = os.environ.get("PLURAL_ICM_OUTPUT")
    os.environ["PLURAL_ICM_OUTPUT"] = ""
    try:
        cfg = validated()
        out = Path(cfg.paths.output_dir)
        assert out.name == "outputs" and out.parent != Path("/"), out  # never the fs root
        return out
    finally:
        if old is None:
            os.environ.pop("PLURAL_ICM_OUTPUT")
        else:
            os.environ["PLURAL_ICM_OUTPUT"] = old


# -- the command line -------------------------------------------------------------------------------

@case("error", "icm.alpah", "did you mean icm.alpha")
def case_cli_plus_key_typo(tmp):
    return command_line("+icm.alpah=1")


@case("error", "foo", "schema does not have")
def case_cli_plus_unknown_top_level_key(tmp):
    return command_line("-m", "+foo=1")


@case("error", "model.api_key", "looks like a secret", "environment variable")
def case_cli_secret_api_key(tmp):
    return command_line("+model.api_key=sk-live-123")


@case("error", "HF_TOKEN", "looks like a secret")
def case_cli_secret_in_env_set(tmp):
    return command_line("hydra.job.env_set.HF_TOKEN=hf_abc")


@case("error", "paths.output_dir is empty")
def case_cli_empty_output_dir(tmp):
    return command_line("paths.output_dir=")


@case("error", "dataset.path=/data/données", "quoted", "'dataset.path=\"/data/données\"'")
def case_cli_unquoted_non_ascii_path(tmp):
    return command_line("dataset.path=/data/données")


@case("valid")
def case_cli_quoted_path_with_spaces_and_accents(tmp):
    assert command_line('dataset.path="/data/my données"')
    cfg = compose('dataset.path="/data/my données"')
    assert cfg.dataset.path == "/data/my données"
    return cfg


@case("valid")
def case_cli_plus_inside_free_form_options(tmp):
    return command_line("+dataset.options.note=1", "-m", "icm.alpha=1,2")


@case("valid")
def case_secret_pattern_keeps_max_new_tokens(tmp):
    from plural_icm.config.secrets import is_secret_key, scrub_argv, scrub_secrets

    cfg = OmegaConf.to_container(compose(), resolve=True)
    assert scrub_secrets(cfg)["inference"]["max_new_tokens"] == 200
    assert not is_secret_key("inference.max_new_tokens") and is_secret_key("model.api_key")
    assert scrub_argv(["-m", "x.api_key=s3cr3t", "a=1"]) == ["-m", "x.api_key=<redacted>", "a=1"]
    return True


@case("valid")
def case_hydra_files_scrubbed(tmp):
    from plural_icm.config.guard import _scrub_yaml

    f = tmp / "hydra.yaml"
    f.write_text("hydra:\n  job:\n    env_set:\n      HF_TOKEN: hf_abc\n  overrides:\n"
                 "    task: ['+x.password=hunter2', 'a=1']\nkeep: 1\n")
    _scrub_yaml(f)
    text = f.read_text()
    assert "hf_abc" not in text and "hunter2" not in text and "keep: 1" in text
    return text


# -- interrupted and damaged results ------------------------------------------------------------------

def _checkpoint(tmp: Path, text: str) -> str:
    from plural_icm.search.store import load_checkpoint

    ck = tmp / "checkpoint.json"
    ck.write_text(text)
    assert load_checkpoint(ck) is None and not ck.exists()
    aside = list(tmp.glob("checkpoint.json.corrupt-*"))
    assert len(aside) == 1
    return f"set aside as {aside[0].name}"


@case("skip", "set aside")
def case_checkpoint_truncated_json(tmp):
    return _checkpoint(tmp, '{"rng": {"state"')


@case("skip", "set aside")
def case_checkpoint_wrong_shape(tmp):
    return _checkpoint(tmp, json.dumps({"labels": {}, "iteration": 3}))  # no 'rng'


@case("skip", "set aside")
def case_checkpoint_bad_rng_state(tmp):
    return _checkpoint(tmp, json.dumps({"rng": {"bit_generator": "Nope"}, "labels": {},
                                        "layout": {}, "scores": {}, "iteration": 1,
                                        "accepted": 0, "since_accept": 0, "trajectory": []}))


def _resumable_checkpoint() -> dict:
    from fake_lm import FakeLM
    from test_search_engine import make_claims, make_search

    from plural_icm.search.engine import SearchParams, run_searches

    saved: dict = {}
    lm = FakeLM()
    params = SearchParams(alpha=5, num_seed=4, max_iters=10, patience=1000, checkpoint_every=5)
    run_searches([make_search(make_claims(4), lm, params, seed=1,
                              checkpoint=lambda st: saved.update(json.loads(json.dumps(st))))],
                 lm, [" True", " False"])
    return saved


def _checkpoint_with(edit: Callable[[dict], None]):
    def fn(tmp: Path):
        from plural_icm.search.store import load_checkpoint

        state = _resumable_checkpoint()
        ids = [f"q{q}o{o}" for q in range(4) for o in range(2)]
        ck = tmp / "checkpoint.json"
        ck.write_text(json.dumps(state))
        assert load_checkpoint(ck, ids) == state  # the undamaged one is resumed from
        edit(state)
        ck.write_text(json.dumps(state))
        assert load_checkpoint(ck, ids) is None and not ck.exists()
        return f"set aside as {next(tmp.glob('checkpoint.json.corrupt-*')).name}"
    return fn


def _first_label(state: dict, value) -> None:
    state["labels"][next(iter(state["labels"]))] = value


CHECKPOINT_DAMAGE = {
    "label_string": lambda st: _first_label(st, "false"),
    "label_number": lambda st: _first_label(st, 0),
    "other_item": lambda st: st["labels"].update({"elsewhere/q9": True}),
    "score_nan": lambda st: st["scores"].update({next(iter(st["scores"])): [float("nan"), 0.0]}),
    "negative_iteration": lambda st: st.update(iteration=-3),
}
for _label, _edit in CHECKPOINT_DAMAGE.items():
    CASES[f"checkpoint_{_label}"] = ("skip", ("set aside",), _checkpoint_with(_edit))


@case("valid")
def case_complete_marker_without_metrics_is_not_complete(tmp):
    from plural_icm.layout import CELL_FILES, SEARCH_FILES, is_complete

    (tmp / "COMPLETE.json").write_text("{}")
    assert not is_complete(tmp, CELL_FILES) and not is_complete(tmp, SEARCH_FILES)
    (tmp / "COMPLETE.json").write_text("{trunc")
    for f in CELL_FILES:
        (tmp / f).write_text("{}")
    assert not is_complete(tmp, CELL_FILES)  # a corrupt marker either
    (tmp / "COMPLETE.json").unlink()
    return True


@case("error", "overall.js_distance", "NaN or infinite")
def case_metrics_nan_fail_the_cell(tmp):
    from plural_icm.metrics.finite import check_metrics_finite

    return check_metrics_finite({"overall": {"accuracy": 0.5, "js_distance": float("nan")},
                                 "per_persona": {"a": {"ece": None}}})


@case("error", "group 'q1'", "p_true", "not finite")
def case_nan_model_score_is_never_an_answer(tmp):
    from plural_icm.metrics.aggregate import cell_metrics

    df = pd.DataFrame({"persona_id": ["a", "a"], "group_id": ["q1", "q1"], "item_id": ["x", "y"],
                       "option_key": ["0", "1"], "p_true": [float("nan"), 0.2],
                       "gold": [True, False]})
    return cell_metrics(df)  # argmax once picked the NaN option: a plausible accuracy


@case("valid")
def case_js_distance_never_maps_nan(tmp):
    from plural_icm.metrics.distribution import js_distance

    for bad in ([float("nan"), 0.0], [float("inf"), 1.0], [1.7e308, 1.7e308]):
        with pytest.raises(ValueError, match="finite"):
            js_distance([0.5, 0.5], bad)
    assert js_distance([0.5, 0.5], [0.5, 0.5]) == 0.0
    return True


@case("valid")
def case_result_files_honour_the_umask(tmp):
    from plural_icm.utils.io import atomic_write_json

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp / "metrics.json").stat().st_mode)
    assert mode == 0o640, oct(mode)
    return oct(mode)


@case("error", "summary.json", "different settings", "'k_per_fold': 1")
def case_collaborative_summary_of_other_settings(tmp):
    from plural_icm.pipeline.collaborative import reusable_summary

    f = tmp / "summary.json"
    f.write_text(json.dumps({"fingerprint": "aaaa", "k_per_fold": 1, "rounds": 1,
                             "run_tag": "main"}))
    assert reusable_summary(f, "aaaa", force=False)
    return reusable_summary(f, "bbbb", force=False)  # k_per_fold=2 once reused k=1 silently


# -- cells (config and data fail before any result directory is made) ---------------------------

def _cell_cfg(tmp: Path, *overrides: str):
    os.environ["PLURAL_ICM_OUTPUT"] = str(tmp / "out")
    try:
        cfg = compose("progress=false", *overrides)
        OmegaConf.resolve(cfg)  # the paths, while the variable is set
        return cfg
    finally:
        os.environ.pop("PLURAL_ICM_OUTPUT")


@case("error", "fold=7", "valid folds are 0..")
def case_cell_invalid_fold_leaves_no_directory(tmp):
    from plural_icm.pipeline.cell import run_cell

    try:
        return run_cell(typed_settings(_cell_cfg(tmp, "fold=7", "condition=zero_shot")))
    finally:
        assert not list((tmp / "out").rglob("fold7")), "an empty fold7/ was left behind"


@case("error", "icm.alpha=nan")
def case_cell_alpha_nan_fails(tmp):
    from plural_icm.pipeline.task import run_task

    try:
        return run_task(_cell_cfg(tmp, "icm.alpha=nan"))
    finally:
        assert not (tmp / "out" / "results").exists()


@case("error", "global_opinions.csv", "not a readable CSV")
def case_cell_bad_data_writes_nothing(tmp):
    from plural_icm.pipeline.cell import run_cell

    bad = gqa_file(tmp, raw=TRUNCATED_CSV)
    try:
        return run_cell(typed_settings(_cell_cfg(tmp, "dataset=gqa", f'dataset.path="{bad}"',
                                  "condition=zero_shot")))
    finally:
        assert not (tmp / "out" / "results").exists()



# -- names are never paths (issue 28) -------------------------------------------------------------

#: Values that arrive from data files or the command line and become one directory each.
HOSTILE_NAMES = {
    "dotdot_slash": "../../outside", "absolute": "/tmp/plural_icm_escape", "dotdot": "..",
    "dot": ".", "empty": "", "nul": "a\x00b", "long_ascii": "x" * 1000, "long_utf8": "é" * 400,
    "inner_traversal": "a/../../b", "backslashes": "..\\..\\win", "percent_escapes": "%2e%2e%2f",
    "newline": "line\nbreak", "tilde": "~root", "shell": "$(touch pwned);`id`",
    "unicode_slash": "a\u2215b", "trailing_slash": "persona/",
}
NAME_FIELDS = ("persona", "model", "dataset", "condition", "run_tag", "method")


def _path_for(root: Path, field: str, value: str) -> tuple[Path, int]:
    """The directory the layout makes with ``value`` in ``field`` (others ordinary) and the index
    of that field's part below ``root``."""
    from plural_icm.layout import cell_dir, collaborative_dir, search_dir

    names = {"persona": "p", "model": "m", "dataset": "d", "condition": "c", "run_tag": "main",
             "method": "random", field: value}
    if field in ("persona",):
        return search_dir(root, names["model"], names["dataset"], 0, value, "abc123"), 3
    if field == "method":
        return collaborative_dir(root, "m", "d", "p", value, 0), 4
    return (cell_dir(root, names["run_tag"], names["model"], names["dataset"], names["condition"],
                     None, 0, 0), ("run_tag", "model", "dataset", "condition").index(field))


def _name_case(field: str, value: str):
    def fn(tmp: Path):
        from plural_icm.layout import MAX_COMPONENT_BYTES, name_of_component

        root = tmp / "out"
        path, index = _path_for(root, field, value)
        part = path.relative_to(root).parts[index]
        assert part not in ("", ".", "..") and "/" not in part and "\x00" not in part, part
        assert len(part.encode("utf-8")) <= MAX_COMPONENT_BYTES, len(part.encode())
        assert "~" in part or name_of_component(part) == value, (part, value)
        path.mkdir(parents=True)
        (path / "COMPLETE.json.test").write_text("{}")
        assert path.resolve().is_relative_to(root.resolve()), path
        outside = [p for p in tmp.rglob("*") if not p.is_relative_to(root)]
        assert outside == [], outside
        return f"{field}={value[:20]!r} -> {part[:40]!r}"
    return fn


for _field in NAME_FIELDS:
    for _label, _value in HOSTILE_NAMES.items():
        CASES[f"name_{_field}_{_label}"] = ("valid", (), _name_case(_field, _value))


@case("valid")
def case_name_ordinary_names_keep_their_directories(tmp):
    from plural_icm.data.demo import PERSONAS
    from plural_icm.data.gqa import COUNTRIES
    from plural_icm.data.ot import PERSONAS as OT_PERSONAS
    from plural_icm.data.pt import KEYWORDS
    from plural_icm.layout import path_component

    ordinary = [*COUNTRIES, *PERSONAS, *OT_PERSONAS, *KEYWORDS, "rural_traditionalists",
                "Direct, Concise, Fact-first", "Côte d'Ivoire", "Less than $30,000",
                "llama-3.1-8b", "Qwen2.5-14B", "smollm2", "gqa_claims", "main", "acc_matched",
                "zero_shot_base"]
    ordinary += [p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")]
    changed = {n: path_component(n) for n in ordinary if path_component(n) != n}
    assert not changed, changed
    return f"{len(ordinary)} names unchanged"


@case("valid")
def case_name_distinct_names_give_distinct_directories(tmp):
    from plural_icm.layout import path_component

    names = list(HOSTILE_NAMES.values()) + ["..%2F..%2Foutside", "%", "%2E", "x" * 999,
                                            "é" * 401, "a%00b"]
    parts = [path_component(n) for n in names]
    assert len(set(parts)) == len(set(names)), sorted(parts)
    return f"{len(names)} names, {len(set(parts))} directories"


def hostile_search_tree(tmp: Path) -> list[str]:
    """Complete searches (fake model) whose persona, model and dataset are the hostile names;
    the files written, relative to ``tmp`` (all must lie in ``tmp/out``)."""
    from fake_lm import FakeLM

    from plural_icm.search.store import run_or_load

    out = tmp / "out"
    values = list(HOSTILE_NAMES.values())
    tasks = [_search_task(persona=v, model=values[(k + 3) % len(values)],
                          dataset=values[(k + 7) % len(values)], n=2)
             for k, v in enumerate(values)]
    results = run_or_load(tasks, out / "searches", FakeLM)
    assert all(r.computed for r in results)
    assert {r.task.persona for r in results} == set(values)
    for r in results:  # the original names are kept in the record
        assert json.loads((r.path / "summary.json").read_text())["persona"] == r.task.persona
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    assert all(f.startswith("out/") for f in files), [f for f in files if not f.startswith("out/")]
    assert not Path("/tmp/plural_icm_escape").exists()
    return files


def _drop(tree: Path) -> None:
    shutil.rmtree(tree)  # complete searches: not left for the harness's no-COMPLETE check


@case("valid")
def case_name_hostile_searches_stay_in_the_output_folder(tmp):
    files = hostile_search_tree(tmp)
    _drop(tmp / "out")
    return f"{len(files)} files, all under out/"


# -- secrets, by any route (issue 28) ---------------------------------------------------------------

FAKE_HF = "hf_" + "Q" * 34
FAKE_OPENAI = "sk-" + "R" * 40


def _cli_with_env(env: dict, *argv: str):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return command_line(*argv)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


SECRET_LINES = {
    "hydra_env_set_dict": ("+hydra.job.env_set={HF_TOKEN: abc123}", "hydra.job.env_set.HF_TOKEN"),
    "hydra_env_set_key": ("hydra.job.env_set.WANDB_API_KEY=abc", "WANDB_API_KEY"),
    "hydra_env_set_plus_key": ("+hydra.job.env_set.OPENAI_API_KEY=abc", "OPENAI_API_KEY"),
    "hydra_run_dir_token": (f"hydra.run.dir=/tmp/{FAKE_HF}", "credential"),
    "hydra_job_name_token": (f"hydra.job.name={FAKE_OPENAI}", "credential"),
    "hydra_launcher_setup": (f"+hydra.launcher.setup=['export HF_TOKEN={FAKE_HF}']", "credential"),
    "model_base_token": (f"model.base={FAKE_OPENAI}", "credential"),
    "sweep_choice_token": (f"model.base=a,{FAKE_HF}", "credential"),
    "nested_api_key": ("+dataset.options={a: {api_key: x}}", "dataset.options.a.api_key"),
    "oc_env_interpolation": ("+dataset.options.note=${oc.env:HF_TOKEN}", "oc.env:HF_TOKEN"),
    "github_token": ("+dataset.options.note=ghp_" + "a" * 36, "credential"),
    "aws_key": ("+dataset.options.note=AKIAABCDEFGHIJKLMNOP", "credential"),
    "private_key": ("'+dataset.options.note=\"-----BEGIN RSA PRIVATE KEY-----\"'", None),
    "password_key": ("+logger.password=x", "looks like a secret"),
    "camel_case_key": ("+dataset.options.apiKey=x", "looks like a secret"),
}


def _secret_case(line: str, needle: str | None):
    def fn(tmp: Path):
        if line.startswith("'"):  # a value the shell would pass quoted
            return command_line(line.strip("'"))
        return command_line(line)
    return fn


for _label, (_line, _needle) in SECRET_LINES.items():
    _names = ("command line",) + ((_needle,) if _needle else ())
    CASES[f"secret_{_label}"] = ("error", _names, _secret_case(_line, _needle))


@case("error", "environment variable WANDB_API_KEY")
def case_secret_value_of_an_environment_secret(tmp):
    return _cli_with_env({"WANDB_API_KEY": "0123456789abcdef" * 2 + "01234567"},
                         "hydra.job.name=0123456789abcdef0123456789abcdef01234567")


@case("valid")
def case_secret_ordinary_values_pass(tmp):
    assert command_line("model.revision=" + "a1b2c3d4" * 5, "model.api_key_env=MY_KEY",
                        "hydra.job.chdir=false", "inference.max_new_tokens=5",
                        "hydra/launcher=local", "dataset.personas=[Britain,Japan]",
                        "hydra.job.env_copy=[HF_TOKEN]")  # a variable's name, not its value
    return True


@case("valid")
def case_secret_shaped_values_scrubbed_from_files(tmp):
    from plural_icm.config.guard import _scrub_yaml

    f = tmp / "hydra.yaml"
    f.write_text(f"hydra:\n  run:\n    dir: /x\n  job:\n    name: {FAKE_HF}\nmodel:\n"
                 f"  revision: {'a1b2c3d4' * 5}\n")
    _scrub_yaml(f)
    text = f.read_text()
    assert FAKE_HF not in text and "<redacted>" in text and "a1b2c3d4" * 5 in text, text
    return text


@case("valid")
def case_secret_hydra_files_scrub_nested_env(tmp):
    from plural_icm.config.guard import _scrub_yaml

    f = tmp / "config.yaml"
    f.write_text(f"hydra:\n  job:\n    env_set:\n      OPENAI_API_KEY: {FAKE_OPENAI}\nkeep: 2\n")
    _scrub_yaml(f)
    assert FAKE_OPENAI not in f.read_text() and "keep: 2" in f.read_text()
    return f.read_text()


# -- state files on disk (issue 28) -----------------------------------------------------------------

def _search_task(persona="p", model="fake", dataset="t", n=6):
    from test_search_engine import make_claims

    from plural_icm.data.records import ConsistencyRule
    from plural_icm.search.engine import SearchParams
    from plural_icm.search.store import SearchTask

    params = SearchParams(alpha=5, num_seed=4, max_iters=30, patience=1000, checkpoint_every=5)
    return SearchTask(model=model, dataset=dataset, fold=0, persona=persona, claims=make_claims(n),
                      rule=ConsistencyRule.EXACTLY_ONE, params=params, seed=1,
                      template="Question: {question}\nClaim: {claim}\nI think this claim is",
                      labels=(" True", " False"), model_identity={"m": "fake"})


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _state_case(corrupt: Callable[[Path], None]):
    """A finished search, one of its files damaged by ``corrupt``, loaded again: the file is set
    aside with a warning naming it, and the search is recomputed to the same labels."""
    def fn(tmp: Path):
        from fake_lm import FakeLM

        from plural_icm.search.store import run_or_load

        [clean] = run_or_load([_search_task()], tmp / "s", FakeLM)
        corrupt(clean.path)
        handler = _Warnings()
        logger = logging.getLogger("plural_icm.search.store")
        logger.addHandler(handler)
        try:
            [again] = run_or_load([_search_task()], tmp / "s", FakeLM)
        finally:
            logger.removeHandler(handler)
        assert again.computed, "a damaged search was loaded as it was"
        assert again.labels == clean.labels and again.summary["U"] == clean.summary["U"]
        assert all(isinstance(v, bool) for v in again.labels.values())
        assert list(clean.path.glob("*.corrupt-*")), "nothing was set aside"
        shutil.rmtree(tmp / "s")  # the recomputed search is complete: not left for the harness
        return " ".join(handler.lines)
    return fn


def _rewrite_labels(edit: Callable[[list[dict]], list]) -> Callable[[Path], None]:
    def corrupt(d: Path):
        rows = [json.loads(x) for x in (d / "labels.jsonl").read_text().splitlines()]
        (d / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    return corrupt


def _rewrite_summary(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def corrupt(d: Path):
        s = json.loads((d / "summary.json").read_text())
        out = edit(s)
        (d / "summary.json").write_text(out if isinstance(out, str) else json.dumps(out))
    return corrupt


def _set(rows, k, key, value):
    rows[k][key] = value
    return rows


STATE_DAMAGE = {
    "label_string_false": (_rewrite_labels(lambda r: _set(r, 0, "label", "false")), "label"),
    "label_int_one": (_rewrite_labels(lambda r: _set(r, 0, "label", 1)), "is not a bool"),
    "label_null": (_rewrite_labels(lambda r: _set(r, 1, "label", None)), "label"),
    "labels_row_missing": (_rewrite_labels(lambda r: r[:-1]), "have no label"),
    "labels_other_item_id": (_rewrite_labels(lambda r: _set(r, 0, "item_id", "other/q9")),
                             "not a claim of this search"),
    "labels_duplicate_row": (_rewrite_labels(lambda r: r + [r[0]]), "appears twice"),
    "labels_item_id_number": (_rewrite_labels(lambda r: _set(r, 0, "item_id", 7)),
                              "item_id = 7"),
    "confidence_nan": (_rewrite_labels(lambda r: _set(r, 0, "confidence", float("nan"))),
                       "finite number"),
    "confidence_string": (_rewrite_labels(lambda r: _set(r, 0, "confidence", "high")),
                          "confidence"),
    "labels_row_a_list": (_rewrite_labels(lambda r: [[1, 2]] + r[1:]), "expected a JSON object"),
    "labels_empty_file": (lambda d: (d / "labels.jsonl").write_text(""), "empty file"),
    "labels_truncated_line": (lambda d: (d / "labels.jsonl").write_text(
        (d / "labels.jsonl").read_text()[:-20]), "labels.jsonl"),
    "labels_binary": (lambda d: (d / "labels.jsonl").write_bytes(GARBAGE[:4000]), "labels.jsonl"),
    "summary_u_nan": (_rewrite_summary(lambda s: {**s, "U": float("nan")}), "U = nan"),
    "summary_u_missing": (_rewrite_summary(lambda s: {k: v for k, v in s.items() if k != "U"}),
                          "needs the keys ['U']"),
    "summary_u_string": (_rewrite_summary(lambda s: {**s, "U": "12.5"}), "is not a float"),
    "summary_truncated": (_rewrite_summary(lambda s: json.dumps(s)[:30]), "not readable JSON"),
    "summary_list": (_rewrite_summary(lambda s: [s]), "expected a JSON object"),
    "summary_other_hash": (_rewrite_summary(lambda s: {**s, "hash": "0" * 16}),
                           "belongs to search"),
    "summary_nested_deeply": (_rewrite_summary(lambda s: "[" * 100_000 + "]" * 100_000),
                              "summary.json"),
    "summary_missing": (lambda d: (d / "summary.json").unlink(), "COMPLETE.json"),
    "complete_marker_a_list": (lambda d: (d / "COMPLETE.json").write_text("[]"), "COMPLETE.json"),
    "complete_marker_other_hash": (lambda d: (d / "COMPLETE.json").write_text(
        '{"hash": "ffff", "finished": 1}'), "not this search's marker"),
}

for _label, (_corrupt, _needle) in STATE_DAMAGE.items():
    CASES[f"state_{_label}"] = ("skip", ("set aside", "computed again", _needle),
                                _state_case(_corrupt))


@case("valid", "labels.jsonl:1", "is not a bool")
def case_state_unrecoverable_is_a_named_error(tmp):
    """Where nothing can be recomputed (the record's reader alone, e.g. for the analysis), a
    SearchRecordError names the file and line (the search store turns it into set-aside and
    recompute, above)."""
    from plural_icm.search.records import SearchRecordError, read_labels

    (tmp / "labels.jsonl").write_text('{"item_id": "a", "label": "false", "confidence": 0.9}\n')
    with pytest.raises(SearchRecordError) as info:
        read_labels(tmp)
    return str(info.value)


@case("valid")
def case_stop_between_batches_resumes_to_the_same_search(tmp):
    """A stop between two scoring batches of one iteration keeps the last iteration boundary;
    the resumed search equals the one that was never stopped."""
    from fake_lm import FakeLM
    from test_search_engine import make_claims, make_search

    from plural_icm.search.engine import SearchInterrupted, SearchParams, run_searches

    params = SearchParams(alpha=5, num_seed=4, max_iters=40, patience=1000, checkpoint_every=1000)
    claims = make_claims(8)
    ref_lm = FakeLM()
    ref = run_searches([make_search(claims, ref_lm, params, seed=2)], ref_lm, [" True", " False"])[0]
    saved: dict = {}
    lm = FakeLM()
    polls = {"n": 0}

    def stop():
        polls["n"] += 1
        return polls["n"] > 23  # some batch in the middle of an iteration

    s = make_search(claims, lm, params, seed=2,
                    checkpoint=lambda st: saved.update(json.loads(json.dumps(st))))
    with pytest.raises(SearchInterrupted) as info:
        run_searches([s], lm, [" True", " False"], should_stop=stop)
    assert lm.calls == 23 and info.value.kept == [saved["iteration"]]
    lm2 = FakeLM()
    resumed = run_searches([make_search(claims, lm2, params, seed=2, resume_state=saved)], lm2,
                           [" True", " False"])[0]
    assert resumed.labels == ref.labels and resumed.trajectory == ref.trajectory
    return f"stopped after batch 23 at iteration {saved['iteration']}; resumed equal"


# -- config values and claim files (issue 28) ------------------------------------------------------

@case("error", "icm.restarts=1000000000", "1..1000")
def case_config_restarts_a_billion(tmp):
    return validated("icm.restarts=1000000000")


@case("error", "icm.restarts=0")
def case_config_restarts_zero(tmp):
    return validated("icm.restarts=0")


@case("error", "icm.initial_temp=0.001", "icm.final_temp")
def case_config_initial_temp_below_final(tmp):
    return validated("icm.initial_temp=0.001", "icm.final_temp=0.01")


@case("error", "share_sum_tolerance=2", "[0, 1)")
def case_config_share_tolerance_two(tmp):
    return validated("dataset=gqa", "dataset.options.share_sum_tolerance=2")


@case("error", "share_sum_tolerance=-0.1", "[0, 1)")
def case_config_share_tolerance_negative(tmp):
    return validated("dataset=gqa", "dataset.options.share_sum_tolerance=-0.1")


@case("error", "share_sum_tolerance='lots'", "expected a number")
def case_loader_share_tolerance_not_a_number(tmp):
    return load(gqa_cfg(GQA_CSV, share_sum_tolerance="lots"))


@case("error", "inference.n_examples=0", ">= 1")
def case_config_n_examples_zero(tmp):
    return validated("inference.n_examples=0")


@case("valid")
def case_n_examples_above_the_pool_says_so(tmp):
    from test_search_engine import make_claims

    from plural_icm.conditions.labels import subset_for_n_examples

    handler = _Warnings()
    logger = logging.getLogger("plural_icm.conditions.labels")
    logger.addHandler(handler)
    try:
        got = subset_for_n_examples(make_claims(3), 100_000, 0)
    finally:
        logger.removeHandler(handler)
    assert len(got) == 6 and any("n_examples=100000" in x and "6 claims" in x
                                 for x in handler.lines), handler.lines
    return handler.lines[0]


@case("error", "dataset.n_folds=1", ">= 2")
def case_config_demo_one_fold(tmp):
    return validated("dataset.n_folds=1")


@case("error", "dataset.n_folds=1", ">= 2")
def case_config_claims_one_fold(tmp):
    return validated("dataset=gqa_claims", "dataset.n_folds=1")


@case("error", "demo", "dataset.n_folds=1")
def case_demo_loader_one_fold(tmp):
    return load(OmegaConf.structured(DatasetConfig(name="demo", loader="demo", n_folds=1)))


@case("error", "demo", "dataset.path", "dataset=gqa")
def case_demo_loader_refuses_a_path(tmp):
    return load(OmegaConf.structured(DatasetConfig(name="demo", loader="demo",
                                                   path=str(GQA_CSV))))


def claims_file(tmp: Path, rows: list | None = None, raw: bytes | None = None,
                name: str = "claims.jsonl") -> Path:
    path = tmp / "claims" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is None:
        raw = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(raw)
    return path


def claims_cfg(path, skip=False, **options):
    return OmegaConf.structured(DatasetConfig(name="c", loader="claims", path=str(path),
                                              skip_bad_rows=skip, options=options))


def claim_rows(n_q=8, persona="Brazil", raw_choices=True) -> list[dict]:
    rows = []
    for q in range(n_q):
        opts = ["Agree", "Disagree"] if q % 2 else ["Favor", "Oppose"]
        for k, o in enumerate(opts):
            r = {"question_id": q, "question": f"Question number {q}?", "persona": persona,
                 "choice": f"People from {persona} would answer this question as: '{o}'",
                 "label": int(k == q % 2), "consistency_id": q}
            if raw_choices:
                r.update(raw_choice_1=opts[0], raw_choice_2=opts[1])
            rows.append(r)
    return rows


@case("error", "claims.jsonl", "line 3", "UTF-8")
def case_claims_not_utf8(tmp):
    raw = "".join(json.dumps(r) + "\n" for r in claim_rows()[:2]).encode() + \
        '{"question": "Été"}\n'.encode("latin-1")
    return load(claims_cfg(claims_file(tmp, raw=raw)))


@case("error", "claims.jsonl", "UTF-8")
def case_claims_binary(tmp):
    return load(claims_cfg(claims_file(tmp, raw=GARBAGE)))


@case("error", "claims.json", "nested too deeply")
def case_claims_json_list_nested_deeply(tmp):
    return load(claims_cfg(claims_file(tmp, raw=b"[" * 200_000 + b"]" * 200_000,
                                       name="claims.json")))


@case("error", "claims.jsonl", "line 17", "nested too deeply")
def case_claims_jsonl_line_nested_deeply(tmp):
    raw = "".join(json.dumps(r) + "\n" for r in claim_rows()).encode() + b"[" * 100_000
    return load(claims_cfg(claims_file(tmp, raw=raw)))


@case("error", "claims.jsonl", "line 1", "duplicate key 'label'")
def case_claims_duplicate_key(tmp):
    rows = claim_rows()
    text = json.dumps(rows[0])[:-1] + ', "label": 1}'
    raw = (text + "\n" + "".join(json.dumps(r) + "\n" for r in rows[1:])).encode()
    return load(claims_cfg(claims_file(tmp, raw=raw)))


@case("error", "line 1", "choice is a list", "expected a string")
def case_claims_choice_a_list(tmp):
    rows = claim_rows()
    rows[0]["choice"] = ["Favor", "Oppose"]
    return load(claims_cfg(claims_file(tmp, rows)))


@case("error", "line 2", "question is a dict")
def case_claims_question_a_dict(tmp):
    rows = claim_rows()
    rows[1]["question"] = {"text": "Q?"}
    return load(claims_cfg(claims_file(tmp, rows)))


@case("error", "line 1", "question is a int")
def case_claims_question_a_number(tmp):
    rows = claim_rows()
    rows[0]["question"] = 42
    return load(claims_cfg(claims_file(tmp, rows)))


@case("error", "line 1", "persona is a list")
def case_claims_persona_a_list(tmp):
    rows = claim_rows()
    rows[0]["persona"] = ["Brazil"]
    return load(claims_cfg(claims_file(tmp, rows)))


@case("error", "consistency_id", "expected a string or an integer")
def case_claims_consistency_id_a_dict(tmp):
    rows = claim_rows()
    rows[0]["consistency_id"] = {"id": 1}
    return load(claims_cfg(claims_file(tmp, rows)))


@case("error", "consistency_id '3'", "Question number 3?", "Another question?", "line 8",
      "line 17")
def case_claims_two_questions_one_group(tmp):
    rows = claim_rows()
    extra = dict(rows[6], question="Another question?", choice="People ... 'Maybe'", label=0)
    return load(claims_cfg(claims_file(tmp, rows + [extra])))


@case("skip", "1 bad row")
def case_claims_choice_a_list_skipped(tmp):
    rows = claim_rows()
    rows[0]["choice"] = ["Favor", "Oppose"]
    return load(claims_cfg(claims_file(tmp, rows), skip=True)).description


@case("error", "dataset.options.rule='most'", "exactly_one")
def case_claims_bad_rule(tmp):
    return load(claims_cfg(claims_file(tmp, claim_rows()), rule="most"))


@case("error", "dataset.options.folds='thirds'", "'cv', 'halves'")
def case_claims_bad_folds(tmp):
    return load(claims_cfg(claims_file(tmp, claim_rows()), folds="thirds"))


@case("valid")
def case_claims_folds_without_raw_choices(tmp):
    """Without the optional raw_choice_* keys the questions are still dealt to every fold (their
    Agree/Disagree claim texts once joined them into one unit: fold 0)."""
    from collections import Counter

    rows = [r for p in ("Brazil", "Japan") for r in claim_rows(16, p, raw_choices=False)]
    folds = Counter(load(claims_cfg(claims_file(tmp, rows))).folds.values())
    assert sorted(folds) == [0, 1, 2, 3] and max(folds.values()) - min(folds.values()) <= 1, folds
    return dict(folds)


# -- OpinionQA duplicates and ragged rows (issue 28) -----------------------------------------------

@case("error", "POLPARTY_data.json", "duplicate key 'Yes'")
def case_oqa_duplicate_json_key(tmp):
    return oqa_counts(tmp, '4, "Yes": 5')


def _oqa_responses_edit(tmp: Path, edit: Callable[[list[str]], list[str]]) -> object:
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W27" / "responses.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(edit(lines)) + "\n")
    return load(oqa_cfg(hr))


@case("error", "responses.csv", "data row 1", "fields", "one field per column")
def case_oqa_responses_row_too_long(tmp):
    return _oqa_responses_edit(tmp, lambda ls: [ls[0], ls[1] + ",1.0"] + ls[2:])


@case("error", "responses.csv", "data row 2", "fields")
def case_oqa_responses_row_too_short(tmp):
    return _oqa_responses_edit(tmp, lambda ls: ls[:2] + [ls[2].rsplit(",", 1)[0]] + ls[3:])


@case("error", "info.csv", "fields")
def case_oqa_info_ragged(tmp):
    hr = oqa_tree(tmp)
    f = hr / "American_Trends_Panel_W26" / "info.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], lines[1] + ",extra"] + lines[2:]) + "\n")
    return load(oqa_cfg(hr))


# -- the environment: output folder, disk (issue 28) -----------------------------------------------

def _output_env(value: str | None, *argv: str):
    from plural_icm.config.guard import output_folder_error

    old = os.environ.get("PLURAL_ICM_OUTPUT")
    if value is None:
        os.environ.pop("PLURAL_ICM_OUTPUT", None)
    else:
        os.environ["PLURAL_ICM_OUTPUT"] = value
    try:
        problem = output_folder_error(list(argv))
    finally:
        if old is None:
            os.environ.pop("PLURAL_ICM_OUTPUT", None)
        else:
            os.environ["PLURAL_ICM_OUTPUT"] = old
    if problem:
        raise UserError(problem)
    return True


@case("error", "PLURAL_ICM_OUTPUT", "root")
def case_env_output_root(tmp):
    return _output_env("/")


@case("error", "PLURAL_ICM_OUTPUT", "root")
def case_env_output_root_dotdot(tmp):
    return _output_env("/tmp/../")


@case("error", "is a file, not a folder")
def case_env_output_is_a_file(tmp):
    (tmp / "f").write_text("x")
    return _output_env(str(tmp / "f"))


@case("error", "paths.output_dir", "which is a file")
def case_env_output_below_a_file(tmp):
    (tmp / "f").write_text("x")
    return _output_env(None, f"paths.output_dir={tmp}/f/out")


@case("error", "paths.output_dir", "cannot be written")
def case_env_output_not_writable(tmp):
    return _output_env(None, "paths.output_dir=/proc/plural_icm_out")


@case("error", "hydra.run.dir", "cannot be written")
def case_env_hydra_run_dir_not_writable(tmp):
    return _output_env(str(tmp), "hydra.run.dir=/sys/plural_icm_run")


@case("error", "broken symbolic link")
def case_env_output_broken_link(tmp):
    (tmp / "link").symlink_to(tmp / "gone" / "deeper")
    return _output_env(str(tmp / "link" / "out"))


@case("valid")
def case_env_output_fresh_folder(tmp):
    assert _output_env(str(tmp / "new" / "out"))
    assert not (tmp / "new").exists() and not list(tmp.iterdir())  # the probe leaves nothing
    return True


@case("error", "cannot write", "metrics.json", "No space left", "nothing half-written")
def case_env_disk_full_mid_write(tmp):
    import errno

    from plural_icm.utils.io import atomic_write_json

    target = tmp / "metrics.json"
    target.write_text('{"old": 1}')
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    os.fsync = full
    try:
        return atomic_write_json(target, {"new": 2})
    finally:
        os.fsync = real
        assert target.read_text() == '{"old": 1}' and [p.name for p in tmp.iterdir()] == \
            ["metrics.json"]


# -- the harness -------------------------------------------------------------------------------------

def run_case(name: str, tmp: Path) -> tuple[str, str]:
    """(outcome observed, message or returned text)."""
    outcome, names, fn = CASES[name]
    try:
        result = fn(tmp)
    except UserError as exc:
        return "error", str(exc)
    return outcome if outcome != "error" else "no error", str(result)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    outcome, names, _ = CASES[name]
    observed, text = run_case(name, tmp_path)
    assert observed == outcome, f"{name}: expected {outcome}, got {observed}: {text[:300]}"
    for part in names:
        assert part in text, f"{name}: {part!r} not in {text[:500]!r}"
    if outcome == "error":
        assert len(text) < 1500, f"{name}: message of {len(text)} characters"
        assert "Traceback" not in text
    assert not list(tmp_path.rglob("COMPLETE.json")), f"{name}: a result was written as complete"


def test_there_are_at_least_200_cases():
    assert len(CASES) >= 200


def test_a_clear_error_prints_once_without_a_trace(tmp_path):
    """Through launch.py: the message once on stderr, no traceback, nothing written."""
    bad = gqa_file(tmp_path, raw=TRUNCATED_CSV)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PLURAL_ICM_OUTPUT=str(tmp_path / "out"), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "launch.py", "dataset=gqa", f'dataset.path="{bad}"',
                        "condition=zero_shot", "logger=none"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.count("not a readable CSV") == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "results").exists()
    r = subprocess.run([sys.executable, "launch.py", "+model.api_key=sk-live-123"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "looks like a secret" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or "sk-live-123" not in "".join(
        p.read_text(errors="ignore") for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_a_nan_metric_fails_the_cell_instead_of_completing_it(tmp_path, tiny_model_dir,
                                                                 monkeypatch):
    """A real (tiny-model) cell whose metrics come out NaN: an error, no COMPLETE.json."""
    import plural_icm.metrics.aggregate as aggregate
    from plural_icm.metrics.finite import NonFiniteMetricError
    from plural_icm.pipeline.cell import run_cell

    real = aggregate.cell_metrics

    def nan_metrics(df, rule):
        m = real(df, rule)
        m["overall"]["accuracy"] = float("nan")  # what a NaN count or alpha used to produce
        return m

    monkeypatch.setattr(aggregate, "cell_metrics", nan_metrics)
    cfg = _cell_cfg(tmp_path, f"model.base={tiny_model_dir}", f"model.instruct={tiny_model_dir}",
                    "model.name=tiny", "condition=zero_shot")
    with pytest.raises(NonFiniteMetricError, match=r"overall\.accuracy"):
        run_cell(typed_settings(cfg))
    # the metrics are checked before the cell's directory is made: nothing is written at all
    results = tmp_path / "out" / "results"
    assert not list(results.rglob("COMPLETE.json")) and not list(results.rglob("metrics.json"))


def test_a_corrupt_checkpoint_is_set_aside_and_the_search_restarts(tmp_path, caplog):
    """run_or_load with a damaged checkpoint.json: a warning, the file moved aside, and the same
    result as a search that never had one (a real checkpoint is accepted as it is)."""
    from fake_lm import FakeLM
    from test_search_engine import make_claims

    from plural_icm.data.records import ConsistencyRule
    from plural_icm.search.engine import SearchParams
    from plural_icm.search.store import SearchTask, checkpoint_problem, run_or_load

    params = SearchParams(alpha=5, num_seed=4, max_iters=30, patience=1000, checkpoint_every=5)

    def task():
        return SearchTask(model="fake", dataset="t", fold=0, persona="p", claims=make_claims(6),
                          rule=ConsistencyRule.EXACTLY_ONE, params=params, seed=1,
                          template="Question: {question}\nClaim: {claim}\nI think this claim is",
                          labels=(" True", " False"), model_identity={"m": "fake"})

    clean = run_or_load([task()], tmp_path / "clean", FakeLM)[0]
    d = task().directory(tmp_path / "hurt")
    d.mkdir(parents=True)
    (d / "checkpoint.json").write_text('{"rng": {"state": ')  # a disk that filled up
    with caplog.at_level(logging.WARNING):
        hurt = run_or_load([task()], tmp_path / "hurt", FakeLM)[0]
    assert "restarts from scratch" in caplog.text
    assert len(list(d.glob("checkpoint.json.corrupt-*"))) == 1
    assert hurt.labels == clean.labels and hurt.summary["U"] == clean.summary["U"]

    from test_search_engine import make_search

    from plural_icm.search.engine import run_searches

    saved: dict = {}
    backend = FakeLM()
    run_searches([make_search(make_claims(6), backend, params, seed=1,
                              checkpoint=lambda st: saved.update(json.loads(json.dumps(st))))],
                 backend, [" True", " False"])
    assert saved and checkpoint_problem(saved) is None


STOP_SCRIPT = r"""
import json, sys, time
sys.path[:0] = [{tests!r}, {root!r}]
from fake_lm import FakeLM
import test_hostile as t
from plural_icm.search.store import run_or_load

class SlowLM(FakeLM):
    def label_logprobs(self, prompts, labels):
        if self.calls >= {slow_after}:
            print("SLOW BATCH", flush=True)
            time.sleep(60)  # a batch far longer than any stop may wait for
        return super().label_logprobs(prompts, labels)

tasks = [t._search_task(persona=p) for p in ("a", "b")]
try:
    run_or_load(tasks, {out!r}, SlowLM)
except KeyboardInterrupt:
    sys.exit(130)
print("FINISHED", flush=True)
"""


def test_a_signal_ignored_at_start_stays_ignored():
    """A background job (`launch.py &`, nohup) starts with SIGINT ignored: the stop handler leaves
    it so (as Python does), catches the others, and restores every handler on exit."""
    import signal as _signal

    from plural_icm.utils.stop import StopRequest

    before = {s: _signal.getsignal(s) for s in StopRequest.SIGNALS}
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            assert _signal.getsignal(_signal.SIGINT) is _signal.SIG_IGN
            assert _signal.getsignal(_signal.SIGTERM) == stop._handle
            os.kill(os.getpid(), _signal.SIGINT)  # ignored: no stop requested
            assert not stop()
        assert _signal.getsignal(_signal.SIGINT) is _signal.SIG_IGN
        assert _signal.getsignal(_signal.SIGTERM) == before[_signal.SIGTERM]
    finally:
        for s, h in before.items():
            _signal.signal(s, h)


def test_the_stop_line_names_the_furthest_along_search(capsys, monkeypatch):
    """Of several kept checkpoints the line names the one with the most iterations, not the first
    found (a stop once named iteration 0 while another search had kept 10)."""
    import signal as _signal

    from plural_icm.utils import stop

    monkeypatch.setattr(stop, "_reported", False)  # restored after: other tests see no report
    line = stop.report_stop(_signal.SIGTERM, [("a/checkpoint.json", 0), ("b/checkpoint.json", 10),
                                              ("c/checkpoint.json", None)])
    assert "kept 2 of 3 running search checkpoint(s) (e.g. iteration 10 in b/checkpoint.json)" in line
    assert line in capsys.readouterr().err


from plural_icm.bench.stop import sigint_default  # noqa: E402  (children start with SIGINT at its default)


def _stop_run(tmp: Path, sig: int, slow_after: int = 12):
    """A child process running two fake-model searches whose batch ``slow_after`` never ends in
    time; ``sig`` is sent during that batch. (seconds to exit, returncode, stderr)."""
    import signal as _signal  # noqa: F401
    import time

    out = tmp / "searches"
    code = STOP_SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT), out=str(out),
                              slow_after=slow_after)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    line = proc.stdout.readline()
    assert "SLOW BATCH" in line, (line, proc.stderr.read()[-2000:] if proc.poll() else "")
    sent = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return time.time() - sent, proc.returncode, err, out


@pytest.mark.parametrize("sig, code", [(15, -15), (2, 130)])
def test_a_stop_during_a_long_batch_checkpoints_within_seconds(tmp_path, sig, code):
    """SIGTERM / Ctrl-C in the middle of a model call: the call is abandoned, both searches
    checkpoint their last iteration boundary, the claims are released, one line says what was
    kept; the relaunch resumes to the labels of a run that was never stopped."""
    from fake_lm import FakeLM

    from plural_icm.search.store import run_or_load

    took, rc, err, out = _stop_run(tmp_path, sig)
    assert took < 10, f"{took:.1f} s from the signal to the exit"
    assert rc == code, (rc, err[-2000:])
    checkpoints = sorted(out.rglob("checkpoint.json"))
    assert len(checkpoints) == 2 and not list(out.rglob(".claim*")), list(out.rglob("*"))
    kept = [json.loads(c.read_text())["iteration"] for c in checkpoints]
    assert all(k >= 1 for k in kept), kept
    stop_lines = [ln for ln in err.splitlines() if ln.startswith("plural_icm: stopped")]
    assert len(stop_lines) == 1 and "kept 2 of 2" in stop_lines[0] and "resume" in stop_lines[0]
    assert "Traceback" not in err, err[-3000:]
    tasks = [_search_task(persona=p) for p in ("a", "b")]
    resumed = run_or_load(tasks, out, FakeLM)
    fresh = run_or_load(tasks, tmp_path / "fresh", FakeLM)
    assert [r.labels for r in resumed] == [r.labels for r in fresh]
    assert [r.summary["U"] for r in resumed] == [r.summary["U"] for r in fresh]


def _wait_until_python_handles_sigint(pid: int, timeout: float = 30.0) -> None:
    """Until the interpreter has installed its SIGINT handler (bit 2 of SigCgt in /proc)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            caught = next(int(ln.split()[1], 16) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ln.startswith("SigCgt:"))
        except (OSError, StopIteration):
            caught = 0
        if caught & (1 << (2 - 1)):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not install a SIGINT handler in {timeout} s")


def test_ctrl_c_early_in_launch_prints_one_line_and_no_trace(tmp_path):
    """Ctrl-C while launch.py imports or composes (before any search): one line, no traceback."""
    import time

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PLURAL_ICM_OUTPUT=str(tmp_path / "out"), PYTHONPATH=str(ROOT))
    # the paper grid's plan composes for several seconds (stage=data_stats on the demo took about
    # 1 s here: a Ctrl-C 0.5 s in could come after it ended and be missed)
    proc = subprocess.Popen([sys.executable, "launch.py", "-m", "experiment=paper", "stage=plan",
                             "logger=none"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_default)
    _wait_until_python_handles_sigint(proc.pid)  # before that, SIGINT kills the process silently
    time.sleep(0.5)
    proc.send_signal(2)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
    assert sum(ln.startswith("plural_icm: stopped by SIGINT") for ln in err.splitlines()) == 1, err
    assert proc.returncode in (130, 1, -2), proc.returncode


def test_refused_launches_write_nothing_and_planted_secrets_reach_no_file(tmp_path):
    """Every refused command line (secrets by each route, an unwritable output folder) leaves no
    file; an accepted run with secrets planted in the environment writes them nowhere."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    planted = {"HF_TOKEN": FAKE_HF, "OPENAI_API_KEY": FAKE_OPENAI,
               "WANDB_API_KEY": "0123456789abcdef" * 2 + "fedcba98"}
    env.update(planted, PLURAL_ICM_OUTPUT=str(out), PYTHONPATH=str(ROOT))
    refused = [[line.strip("'")] for line, _ in SECRET_LINES.values()] + \
        [["hydra.job.name=" + planted["WANDB_API_KEY"]], ["paths.output_dir=/proc/x"]]
    for argv in refused:
        r = subprocess.run([sys.executable, "launch.py", "logger=none", *argv], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (argv, r.stderr[-1500:])
        assert not out.exists(), (argv, list(out.rglob("*")))
    root_env = {**env, "PLURAL_ICM_OUTPUT": "/"}
    r = subprocess.run([sys.executable, "launch.py", "logger=none"], cwd=ROOT, env=root_env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "root" in r.stderr and not Path("/hydra").exists()
    # an accepted run that writes its Hydra files, the data statistics and a log
    r = subprocess.run([sys.executable, "launch.py", "logger=none", "stage=data_stats",
                        "+hydra.job.env_set.PLURAL_ICM_NOTE=fine"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in written), written
    found = {str(p): [k for k, v in planted.items() if v in p.read_text(errors="ignore")]
             for p in written}
    assert not any(found.values()), found
    print(f"planted-secret grep: {len(planted)} secrets x {len(written)} files written: "
          f"{sum(map(len, found.values()))} hits; {len(refused) + 1} refused launches wrote nothing")


def test_the_working_directory_variables_are_not_secrets():
    """PWD holds the word ``pwd`` but its value is a path: overrides under the working directory
    (a SLURM sweep's ``hydra.searchpath``) must not be refused as secrets."""
    from plural_icm.config.secrets import secret_environment_values, secret_in_text

    env = {"PWD": "/work/project", "OLDPWD": "/work/elsewhere", "HF_TOKEN": "hf_secretvalue123"}
    assert set(secret_environment_values(env)) == {"HF_TOKEN"}
    assert secret_in_text("hydra.searchpath=[file:///work/project/conf]", env) is None
    assert secret_in_text("x=hf_secretvalue123", env) is not None


if __name__ == "__main__":  # the count by outcome, for the record
    import tempfile
    from collections import Counter

    counts: Counter = Counter()
    wrong = []
    for name in sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            observed, text = run_case(name, Path(d))
        counts[observed] += 1
        if observed != CASES[name][0]:
            wrong.append(f"{name}: expected {CASES[name][0]}, got {observed}")
        print(f"{observed:8s} {name}: {' '.join(repr(text)[1:-1].split())[:150]}")
    if "--tree" in sys.argv:  # the output tree after searches named by the hostile names
        with tempfile.TemporaryDirectory() as d:
            print("\n".join(hostile_search_tree(Path(d))))
    print(dict(counts), "of", len(CASES), "cases;", len(wrong), "not as declared", *wrong,
          sep="\n" if wrong else " ")
