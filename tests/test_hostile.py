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
        return run_cell(_cell_cfg(tmp, "fold=7", "condition=zero_shot"))
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
        return run_cell(_cell_cfg(tmp, "dataset=gqa", f'dataset.path="{bad}"',
                                  "condition=zero_shot"))
    finally:
        assert not (tmp / "out" / "results").exists()


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


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60


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
        run_cell(cfg)
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


if __name__ == "__main__":  # the count by outcome, for the record
    import tempfile
    from collections import Counter

    counts: Counter = Counter()
    for name in sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            observed, text = run_case(name, Path(d))
        counts[observed] += 1
        print(f"{observed:8s} {name}: {' '.join(text.split())[:150]}")
    print(dict(counts), "of", len(CASES), "cases")
