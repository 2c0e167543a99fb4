"""Safe reading of dataset files: every failure is a short :class:`DataFormatError` naming the
file (and row where there is one) and what was expected, never a raw ``UnicodeDecodeError``,
``RecursionError``, pandas or pyarrow message.

* Only regular files are read, and dataset paths are regular files or directories: a FIFO would
  block forever and ``/dev/zero`` reads gigabytes before failing.
* :func:`literal` caps the size of what :func:`ast.literal_eval` parses (a 10 MB list literal
  took 10 GB of memory) and never evaluates anything but literals.
* :func:`finite_number` refuses ``Infinity``, ``NaN`` and integers too large for a float
  (``10**400``), which would otherwise pass ``>= 0`` checks and end as NaN metrics.
* :func:`check_option_range` checks a numeric ``dataset.options`` entry (from an options
  dataclass's ``__post_init__``), naming the option.
"""

from __future__ import annotations

import ast
import json
import math
import stat
from pathlib import Path
from typing import Any

import pandas as pd

from plural_icm.data.sources import DataFormatError, check_file_or_dir  # noqa: F401 (re-exported)
from plural_icm.errors import ConfigError

#: Longest text field :func:`literal` parses (characters). Real option lists and share tables
#: are a few kB; parsing costs ~200x the text in memory.
MAX_FIELD_CHARS = 200_000
#: Longest JSON document :func:`read_json` reads (bytes).
MAX_JSON_BYTES = 2_000_000_000
#: How much of a bad value an error message shows.
PREVIEW_CHARS = 60


def preview(value: Any, n: int = PREVIEW_CHARS) -> str:
    """A short repr of a value for error messages."""
    text = str(value)
    return repr(text[:n] + "...") if len(text) > n else repr(text)


def check_regular_file(path: Path) -> None:
    """Refuse a missing path, a directory, a FIFO or a device before opening it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise DataFormatError(f"{path}: expected a regular file (a FIFO, device or directory "
                              f"is never read)")


def read_text(path: str | Path) -> str:
    """The file's text, UTF-8; an error names the byte offset of the first invalid byte."""
    path = Path(path)
    check_regular_file(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(f"{path}: line {line} (byte {exc.start}) is not UTF-8 text; "
                              f"expected a UTF-8 file") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON data may hold here")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r} in one object (JSON readers disagree on which "
                             f"value wins; the file is ambiguous)")
        out[k] = v
    return out


def parse_json(text: str, where: str) -> Any:
    """JSON without NaN/Infinity or duplicate keys, with nesting too deep for Python reported as
    an error."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno}, column "
                              f"{exc.colno})") from None
    except RecursionError:
        raise DataFormatError(f"{where}: JSON nested too deeply to parse; expected the "
                              f"documented layout") from None
    except ValueError as exc:  # NaN / Infinity, or an integer with too many digits
        raise DataFormatError(f"{where}: {exc}") from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    check_regular_file(path)
    if path.stat().st_size > MAX_JSON_BYTES:
        raise DataFormatError(f"{path}: {path.stat().st_size} bytes; at most {MAX_JSON_BYTES} "
                              f"expected")
    return parse_json(read_text(path), str(path))


def check_rectangular(path: Path) -> None:
    """Every data row has as many fields as the header: pandas fills a short row with NaN and,
    when the first data row is longer, silently takes the extra field as an index, shifting the
    columns (a weight read from the wrong column). An error naming the row."""
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except csv.Error:
            return
        if header is None:
            return
        try:
            for n, row in enumerate(reader, start=1):
                if row and len(row) != len(header):
                    raise DataFormatError(f"{path}: data row {n} has {len(row)} fields, the "
                                          f"header {len(header)}; expected one field per column")
        except csv.Error:
            return  # a malformed file: pandas' own reading names the problem


def read_csv(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` of a regular UTF-8 file; empty, binary, malformed or ragged files are
    errors naming the file."""
    path = Path(path)
    check_regular_file(path)
    try:
        if kwargs.get("nrows") is None:
            check_rectangular(path)
        return pd.read_csv(path, encoding="utf-8", **kwargs)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: byte {exc.start} is not UTF-8 text; expected a UTF-8 "
                              f"CSV file") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: empty file; expected a CSV file with a header row") \
            from None
    except (pd.errors.ParserError, ValueError, OverflowError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV file "
                              f"({str(exc).splitlines()[0][:200]})") from None


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame; truncated or non-Parquet files are errors naming it."""
    path = Path(path)
    check_regular_file(path)
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:  # pyarrow.ArrowInvalid etc.
        raise DataFormatError(f"{path}: not a readable Parquet file (truncated or another "
                              f"format?): {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}") from None


def read_arrow(path: str | Path) -> pd.DataFrame:
    """An Arrow stream (``datasets.save_to_disk``) or Arrow IPC file as a DataFrame."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    path = Path(path)
    check_regular_file(path)
    errors = []
    for open_reader in (ipc.open_stream, ipc.open_file):
        try:
            with pa.memory_map(str(path)) as src:
                return open_reader(src).read_all().to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc)
                          else type(exc).__name__)
    raise DataFormatError(f"{path}: not a readable Arrow stream or file (truncated or another "
                          f"format?): {errors[-1]}")


def check_field_size(text: Any, where: str, column: str, max_chars: int = MAX_FIELD_CHARS
                     ) -> None:
    """Refuse a text field longer than ``max_chars`` before anything parses it."""
    n = len(str(text))
    if n > max_chars:
        raise DataFormatError(f"{where}: column {column!r} holds {n:,} characters; at most "
                              f"{max_chars:,} expected")


def literal(text: Any, where: str, column: str, expected: str,
            max_chars: int = MAX_FIELD_CHARS) -> Any:
    """A Python literal in a text field (``ast.literal_eval``: literals only, never code), at most
    ``max_chars`` long. ``expected`` says what the field should hold, for the error."""
    raw = str(text)
    check_field_size(raw, where, column, max_chars)
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise DataFormatError(f"{where}: column {column!r} is not {expected} "
                              f"({type(exc).__name__}): {preview(raw)}") from None


def finite_number(value: Any, where: str, what: str) -> float:
    """``value`` as a finite float; bools, strings, NaN, infinities and overflowing integers are
    errors naming ``where`` and ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(f"{where}: {what} must be a number, got {preview(value)}")
    try:
        out = float(value)
    except OverflowError:
        raise DataFormatError(f"{where}: {what} is too large for a float "
                              f"({len(str(value))} digits); expected a finite number") from None
    if not math.isfinite(out):
        raise DataFormatError(f"{where}: {what} must be finite, got {value!r}")
    return out


def finite_or_inf(value: Any) -> float:
    """``float(value)``, with integers too large for a float as ``inf`` (not OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def check_option_range(dataset: str, key: str, value: float, lo: float, hi: float,
                       lo_open: bool = False, hi_open: bool = False) -> None:
    """A numeric ``dataset.options.<key>`` lies within its interval (and is finite); else a
    :class:`ConfigError` naming the option, the value and the interval. Called by a loader's
    options dataclass (``__post_init__``), so the check runs where the options are validated."""
    bounds = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
    inside = math.isfinite(value) and (lo < value if lo_open else lo <= value) and \
        (value < hi if hi_open else value <= hi)
    if isinstance(value, bool) or not inside:
        raise ConfigError(f"{dataset}: dataset.options.{key}={value!r} is not accepted; expected "
                          f"a number in {bounds}")


__all__ = ["MAX_FIELD_CHARS", "check_field_size", "finite_or_inf", "check_file_or_dir", "check_regular_file", "read_text",
           "read_json", "parse_json", "read_csv", "read_parquet", "read_arrow", "literal",
           "finite_number", "check_option_range", "preview"]
