"""Checks the feature store runs before it writes anything: names, dtypes, and the rows of ingested data.

Every problem becomes a one-line :class:`~mlops_nb.exceptions.ValidationError` naming the view, the column, the
first bad row (its position in the data, 0-based) and its value, how many rows are bad, and how to fix it.
"""

from __future__ import annotations

import re
from typing import Any

from ...exceptions import ValidationError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESERVED = {"_created", "_superseded", "_seq"}

# dtype name -> (kind, arrow type factory name)
DTYPES = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "float32": "float",
    "float64": "float",
    "bool": "bool",
    "string": "string",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "date": "date",
}
ALIASES = {
    "int": "int64",
    "integer": "int64",
    "bigint": "int64",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "real": "float32",
    "boolean": "bool",
    "str": "string",
    "varchar": "string",
    "text": "string",
    "object": "string",
    "datetime": "timestamp",
    "datetime64": "timestamp",
    "datetime64[ns]": "timestamp",
    "datetime64[us]": "timestamp",
    "datetime64[ns, utc]": "timestamptz",
    "datetime64[us, utc]": "timestamptz",
    "timestamp with time zone": "timestamptz",
}
KEY_DTYPES = ("int8", "int16", "int32", "int64", "string", "date")
_INT_RANGE = {"int8": 2**7, "int16": 2**15, "int32": 2**31, "int64": 2**63}
_TZ_SUFFIX = re.compile(r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|UTC|utc|[+-]\d{2}(?::?\d{2})?)$")


def check_name(name: Any, what: str) -> str:
    """``name`` if it is a valid identifier (letters, digits, ``_``; not starting with a digit; <= 63 chars)."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name.lower() in RESERVED or name.startswith("__"):
        raise ValidationError(
            f"invalid {what} name {name!r}: use letters, digits and _ (not starting with a digit or __, at most "
            "63 characters, not _created/_superseded/_seq)"
        )
    return name


def quote(name: str) -> str:
    """A validated identifier, double-quoted for SQL."""
    return '"' + check_name(name, "column").replace('"', '""') + '"'


def normalize_dtype(dtype: Any, where: str) -> str:
    """The canonical dtype name of ``dtype`` (a name such as ``"int64"``/``"float"``/``"string"``, or a
    numpy/pandas dtype)."""
    text = str(dtype).strip().lower()
    text = ALIASES.get(text, text)
    if text.startswith("datetime64[") and "," in text:
        text = "timestamptz"
    if text not in DTYPES:
        raise ValidationError(
            f"{where}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} (or int, float, str, datetime)"
        )
    return text


def arrow_type(dtype: str):
    """The Arrow type that stores values of canonical ``dtype``."""
    import pyarrow as pa

    return {
        "int8": pa.int8(),
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }[dtype]


class BadRows(Exception):
    """Raised by a cast: which rows are bad (a boolean mask), why, and how to fix it."""

    def __init__(self, mask, problem: str, fix: str):
        super().__init__(problem)
        self.mask, self.problem, self.fix = mask, problem, fix


def _show(value: Any) -> str:
    text = repr(value.isoformat() if hasattr(value, "isoformat") else value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(view: str, column: str, series, bad: BadRows) -> ValidationError:
    """The one-line error for the first bad row of ``series``."""
    import numpy as np

    positions = np.flatnonzero(np.asarray(bad.mask, dtype=bool))
    row = int(positions[0])
    value = series.iloc[row]
    count = len(positions)
    more = f" ({count} bad rows in all)" if count > 1 else ""
    problem = bad.problem.format(value=_show(value))
    return ValidationError(f"view {view!r} column {column!r} row {row}: {problem}{more}; {bad.fix}")


def _numeric(series):
    import pandas as pd

    return pd.to_numeric(series, errors="coerce")


def cast_series(series, dtype: str, *, assume_utc: bool = False, required: bool = False):
    """Cast a pandas Series to an Arrow array of canonical ``dtype``; raise :class:`BadRows` for values that
    cannot be cast (and for nulls when ``required``)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pandas.api import types as pt

    notna = series.notna().to_numpy()
    if required and not notna.all():
        raise BadRows(~notna, "missing value (null)", "every row needs a value here: fill or drop those rows")
    kind = DTYPES[dtype]
    target = arrow_type(dtype)
    if kind in ("int", "float"):
        if pt.is_bool_dtype(series.dtype):
            values = series.astype("float64" if kind == "float" else "Int64")
        elif pt.is_numeric_dtype(series.dtype):
            values = series
        else:
            values = _numeric(series)
            bad = notna & values.isna().to_numpy()
            if bad.any():
                raise BadRows(bad, f"value {{value}} cannot be cast to {dtype}", "fix or drop those rows")
        if kind == "int" and not pt.is_integer_dtype(values.dtype):
            as_float = values.astype("float64").to_numpy()
            with np.errstate(invalid="ignore"):
                bad = notna & ~(np.isfinite(as_float) & (np.floor(as_float) == as_float))
            if bad.any():
                raise BadRows(bad, f"value {{value}} is not an integer ({dtype})", "round it or fix the dtype")
            limit = _INT_RANGE[dtype]
            with np.errstate(invalid="ignore"):
                bad = notna & ~((as_float >= -limit) & (as_float < limit))
            if bad.any():
                raise BadRows(bad, f"value {{value}} is out of range for {dtype}", "use a wider dtype")
            values = values.astype("Int64")
        if kind == "int":
            limit = _INT_RANGE[dtype]
            if pt.is_unsigned_integer_dtype(values.dtype):  # uint64 holds values int64 cannot: check before the cast
                bad = notna & (values.to_numpy(dtype="uint64", na_value=0) >= np.uint64(limit))
                if bad.any():
                    raise BadRows(bad, f"value {{value}} is out of range for {dtype}", "use a wider dtype")
            as_int = values.astype("Int64")
            bad = (notna & ((as_int < -limit) | (as_int >= limit)).fillna(False).to_numpy()).astype(bool)
            if bad.any():
                raise BadRows(bad, f"value {{value}} is out of range for {dtype}", "use a wider dtype")
            return pa.array(as_int, type=pa.int64(), from_pandas=True).cast(target)
        as_float = values.astype("float64")
        bad = notna & np.isinf(as_float.to_numpy())
        if bad.any():  # ±inf would skew every statistic and pass no model's input check
            raise BadRows(bad, f"value {{value}} is not a finite number ({dtype})", "store a null or drop those rows")
        return pa.array(as_float, type=pa.float64(), from_pandas=True).cast(target)
    if kind == "bool":
        if pt.is_bool_dtype(series.dtype):
            return pa.array(series, type=target, from_pandas=True)
        mapping = {"true": True, "false": False, "1": True, "0": False, "t": True, "f": False, "yes": True, "no": False}
        values = series.map(lambda v: mapping.get(str(v).strip().lower()) if v is not None and v == v else None)
        bad = notna & values.isna().to_numpy()
        if bad.any():
            raise BadRows(bad, "value {value} is not a boolean", "use True/False (or 1/0, true/false)")
        return pa.array(values, type=target, from_pandas=True)
    if kind == "string":
        if pt.is_string_dtype(series.dtype) and not pt.is_object_dtype(series.dtype):
            return pa.array(series, type=target, from_pandas=True)
        if pt.is_object_dtype(series.dtype):
            plain = series.map(lambda v: isinstance(v, (str, int, float, bool, np.generic)) or v is None).to_numpy()
            bad = notna & ~plain
            if bad.any():
                raise BadRows(bad, "value {value} is not a string", "convert it to str or drop those rows")
        values = series.astype(object).where(series.notna(), None).map(lambda v: v if v is None else str(v))
        return pa.array(values, type=target, from_pandas=True)
    if kind == "date":
        parsed = (
            pd.to_datetime(series, errors="coerce", format="mixed")
            if not pt.is_datetime64_any_dtype(series.dtype)
            else series
        )
        bad = notna & parsed.isna().to_numpy()
        if bad.any():
            raise BadRows(bad, "value {value} cannot be parsed as a date", "use YYYY-MM-DD")
        return pa.array(parsed.dt.date, type=target, from_pandas=True)
    return arrow_timestamps(parse_timestamps(series, aware=kind == "timestamptz", assume_utc=assume_utc), target)


def arrow_timestamps(series, target):
    """A datetime64 Series (tz-aware UTC or naive) as an Arrow array of ``target`` (microseconds; finer truncated)."""
    import pyarrow as pa

    naive = series.dt.tz_convert(None) if getattr(series.dtype, "tz", None) is not None else series
    return pa.array(naive.to_numpy(), from_pandas=True).cast(pa.timestamp("us"), safe=False).cast(target)


def parse_timestamps(series, *, aware: bool, assume_utc: bool = False):
    """Parse ``series`` to timestamps: tz-aware UTC when ``aware`` (naive values refused unless ``assume_utc``),
    naive otherwise (tz-aware values refused). Raises :class:`BadRows`."""
    import numpy as np
    import pandas as pd
    from pandas.api import types as pt

    notna = series.notna().to_numpy()
    if pt.is_datetime64_any_dtype(series.dtype):
        has_tz = getattr(series.dtype, "tz", None) is not None
        if aware and not has_tz:
            if not assume_utc:
                raise _naive(notna)
            return series.dt.tz_localize("UTC")
        if not aware and has_tz:
            raise _aware(notna)
        return series.dt.tz_convert("UTC") if has_tz else series
    if pt.is_numeric_dtype(series.dtype) or pt.is_bool_dtype(series.dtype):
        raise BadRows(
            notna if notna.any() else np.ones(len(series), bool),
            "value {value} is a number, not a timestamp",
            "give timestamps as datetimes or ISO 8601 strings",
        )
    as_object = series.astype(object)
    is_str = as_object.map(lambda v: isinstance(v, str)).to_numpy()
    tz_of = as_object.map(
        lambda v: bool(_TZ_SUFFIX.search(v.strip())) if isinstance(v, str) else getattr(v, "tzinfo", None) is not None
    ).to_numpy()
    wrong_type = notna & ~is_str & ~as_object.map(lambda v: hasattr(v, "year") and hasattr(v, "hour")).to_numpy()
    if wrong_type.any():
        raise BadRows(wrong_type, "value {value} is not a timestamp", "give datetimes or ISO 8601 strings")
    parsed = pd.to_datetime(as_object.where(notna, None), utc=True, errors="coerce", format="ISO8601")
    bad = notna & parsed.isna().to_numpy()
    if bad.any():
        raise BadRows(bad, "value {value} cannot be parsed as a timestamp", "use ISO 8601, e.g. 2024-01-31T12:00:00Z")
    if aware:
        naive = notna & ~tz_of
        if naive.any() and not assume_utc:
            raise _naive(naive)
        return parsed
    aware_rows = notna & tz_of
    if aware_rows.any():
        raise _aware(aware_rows)
    return parsed.dt.tz_convert(None)


def _naive(mask) -> BadRows:
    return BadRows(
        mask,
        "timestamp {value} has no time zone",
        "make it tz-aware (e.g. df[col].dt.tz_localize('UTC')) or pass assume_utc=True",
    )


def _aware(mask) -> BadRows:
    return BadRows(
        mask,
        "timestamp {value} has a time zone but the column's dtype is timestamp (naive)",
        "convert it with .dt.tz_convert(None) or declare the column timestamptz",
    )


def validate_frame(view, data: Any, allow_extra: bool, assume_utc: bool):
    """The data for :class:`~mlops_nb.store.features.records.FeatureView` ``view`` as an Arrow table of its columns, or a
    ValidationError naming column and row."""
    import pandas as pd
    import pyarrow as pa

    df = data
    if not isinstance(df, pd.DataFrame):
        raise ValidationError(
            f"view {view.name!r}: ingest takes a pandas DataFrame or a .parquet/.csv path, not {type(df).__name__}"
        )
    if len(df) == 0:
        raise ValidationError(f"view {view.name!r}: the data has no rows; nothing to ingest")
    columns = [str(c) for c in df.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ValidationError(f"view {view.name!r} column {duplicated[0]!r}: appears more than once; rename one")
    schema = view.schema
    missing = [c for c in schema if c not in columns]
    if missing:
        raise ValidationError(
            f"view {view.name!r} column {missing[0]!r}: missing from the data (it has {', '.join(columns)}); "
            "add it (nulls are allowed in feature columns)"
        )
    extra = [c for c in columns if c not in schema]
    if extra and not allow_extra:
        raise ValidationError(
            f"view {view.name!r} column {extra[0]!r}: not in the view's schema; drop it, pass allow_extra=True to "
            "ignore it, or register the view with it (force=True)"
        )
    arrays = {}
    for column, dtype in schema.items():
        series = df[column].reset_index(drop=True)
        required = column in view.join_keys or column in (view.timestamp, view.created_timestamp)
        try:
            if column in (view.timestamp, view.created_timestamp):
                if not series.notna().all():
                    raise BadRows(~series.notna().to_numpy(), "missing timestamp (null)", "fill or drop those rows")
                arrays[column] = cast_series(series, "timestamptz", assume_utc=assume_utc)
            else:
                arrays[column] = cast_series(series, dtype, assume_utc=assume_utc, required=required)
        except BadRows as bad:
            if column in view.join_keys and "null" in bad.problem:
                bad = BadRows(bad.mask, "null join key", "every row needs its key: fill or drop those rows")
            raise fail(view.name, column, series, bad) from None
    return pa.table(arrays)


def read_data_file(view: str, path):
    """A .parquet, .csv or .jsonl file as a DataFrame, for ingesting into ``view``."""
    import pandas as pd

    if not path.is_file():
        raise ValidationError(f"view {view!r}: file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"view {view!r}: file {path} cannot be read ({exc})") from None
    raise ValidationError(f"view {view!r}: file {path} is not .parquet, .csv or .jsonl; convert it first")


def label_times(series, column: str):
    """The label-time column as an Arrow ``timestamp[us, UTC]`` array (naive values taken as UTC)."""
    import pyarrow as pa

    try:
        parsed = parse_timestamps(series.reset_index(drop=True), aware=True, assume_utc=True)
    except BadRows as bad:
        raise ValidationError(
            str(fail("?", column, series.reset_index(drop=True), bad)).replace("view '?' column", "entity_df column", 1)
        ) from None
    return arrow_timestamps(parsed, pa.timestamp("us", tz="UTC"))
