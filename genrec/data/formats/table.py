"""Any interaction table: Parquet, CSV or TSV with named user, item and timestamp columns.

``--source`` is the file (or a folder holding ``interactions.{parquet,csv,tsv}``). Timestamps may be
integers (kept as given), or date-times / ISO-8601 strings (converted to Unix seconds). Rows with
equal timestamps keep the file's order.

An optional item table (``--items``, Parquet/CSV/TSV) has the item id column (same name as
``--item-col``, or ``item_id``) and text columns: ``title``, ``brand``, ``categories`` (a list
column, or ``|``-separated in CSV) and any others. Its ids must all occur in the interactions.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from genrec.data.errors import DataFormatError
from genrec.data.formats._io import SkipPolicy, find_file, gzip_checked, open_binary
from genrec.data.prepare import RawData

_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")


def read(
    source: Path,
    policy: SkipPolicy,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    items_file: Path | None = None,
    encoding: str = "utf-8",
    min_rating: float | None = None,
    rating_col: str = "rating",
) -> RawData:
    import polars as pl

    path = source
    if source.is_dir():
        names = tuple(f"interactions{s}" for s in _SUFFIXES) + tuple(
            f"interactions{s}.gz" for s in (".csv", ".tsv")
        )
        path = find_file(source, names, "interaction table")
    wanted = [user_col, item_col, time_col] + ([rating_col] if min_rating is not None else [])
    table = read_table(path, encoding)
    _require_columns(table, wanted, path)
    df = table.select([*wanted, "line"])
    for col in (user_col, item_col):
        df = _id_column(df, col, path, policy)
    df = _drop_nulls(df, path, wanted, policy)
    df, unit = _timestamps(df, time_col, path, policy)
    below_rating = 0
    if min_rating is not None:
        df = _numeric(df, rating_col, path, policy)
        below_rating = df.filter(pl.col(rating_col) < min_rating).height
        df = df.filter(pl.col(rating_col) >= min_rating)
    df = df.select(
        pl.col(user_col).cast(pl.String).alias("user_id"),
        pl.col(item_col).cast(pl.String).alias("item_id"),
        pl.col(time_col).alias("timestamp"),
        "line",
    )
    raw = RawData(
        interactions=df,
        interactions_path=path,
        sources=[path],
        timestamp_unit=unit,
        options={
            "format": "table",
            "source": str(source),
            "columns": {"user": user_col, "item": item_col, "timestamp": time_col},
            "encoding": encoding,
            "min_rating": min_rating,
            "ratings_below_min": below_rating,
        },
    )
    if items_file is not None:
        raw.items = _item_text(Path(items_file), item_col, encoding)
        raw.items_path = Path(items_file)
        raw.sources.append(Path(items_file))
    return raw


def _is_parquet(path: Path) -> bool:
    return path.suffix in (".parquet", ".pq")


def read_table(path: Path, encoding: str = "utf-8"):
    """A Parquet file as is, or a CSV/TSV (optionally gzipped) with every column as a string, plus
    a ``line`` column: the Parquet row (from 1) or the CSV line where the record starts.

    A CSV byte that is not valid ``encoding`` raises a DataFormatError naming its line.
    """
    import polars as pl

    if not path.is_file():
        raise DataFormatError(path, "no such file")
    if _is_parquet(path):
        try:
            table = pl.read_parquet(path)
        except Exception as e:  # polars raises several error types for a corrupt file
            raise DataFormatError(path, f"not a readable Parquet file ({e})", reason="malformed") from None
        _reserved_line_column(table, path)
        return table.with_row_index("line", offset=1).with_columns(pl.col("line").cast(pl.Int64))
    with gzip_checked(path), open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataFormatError(
            path,
            f"byte {e.start} ({data[e.start : e.start + 1]!r}) is not valid {encoding}",
            line=line,
            field=_field_at(data, e.start, b"\t" if ".tsv" in path.suffixes else b","),
            reason="encoding",
            hint="pass --encoding with the file's real encoding, e.g. latin-1",
        ) from None
    sep = "\t" if ".tsv" in path.suffixes else ","
    try:
        table = pl.read_csv(io.StringIO(text), separator=sep, infer_schema=False)
    except Exception as e:
        raise DataFormatError(path, f"not a readable CSV file ({e})", reason="malformed") from None
    _reserved_line_column(table, path)
    return table.with_columns(pl.Series("line", _record_lines(text, sep, table.height), dtype=pl.Int64))


def _field_at(data: bytes, offset: int, sep: bytes) -> str | None:
    """The header's name of the column byte ``offset`` of a CSV falls in: the fields before it on its
    line, read by a CSV parser (so quoted separators count as text); a byte in the header, or in a
    quoted field that began on an earlier line, names no column."""
    start = data.rfind(b"\n", 0, offset) + 1
    if start == 0:
        return None
    delimiter = sep.decode()
    header = next(csv.reader([data[: data.find(b"\n")].decode("utf-8", errors="replace").rstrip("\r")], delimiter=delimiter))
    before = data[start:offset].decode("utf-8", errors="replace")
    column = len(next(csv.reader([before + "x"], delimiter=delimiter))) - 1
    return header[column] if column < len(header) else None


def _reserved_line_column(table, path: Path) -> None:
    if "line" in table.columns:
        raise DataFormatError(
            path, "a column named 'line' is reserved (genrec numbers the rows); rename it", field="line"
        )


def _record_lines(text: str, sep: str, rows: int) -> list[int]:
    """The line each CSV record starts on (the header is line 1). A quoted field may span lines,
    so records are counted by a CSV parser, not by newlines, when the text holds a quote."""
    if '"' not in text:
        return list(range(2, rows + 2))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    starts, previous = [], 0
    for record in reader:
        if record:  # polars skips blank lines too
            starts.append(previous + 1)
        previous = reader.line_num
    starts = starts[1:]  # the header
    return starts if len(starts) == rows else list(range(2, rows + 2))


def _require_columns(table, columns: list[str], path: Path) -> None:
    for c in columns:
        if c not in table.columns:
            raise DataFormatError(
                path,
                f"missing column {c!r}; the columns are {', '.join(map(repr, table.columns))}",
                field=c,
                hint="name the columns with --user-col, --item-col and --time-col",
            )


def _drop_nulls(df, path: Path, columns: list[str], policy: SkipPolicy):
    import polars as pl

    for c in columns:
        empty = pl.col(c).is_null()
        if df.schema[c] == pl.String:
            empty = empty | (pl.col(c).str.strip_chars() == "")
        bad = df.filter(empty)
        if bad.height:
            policy.skip_or_raise(
                DataFormatError(
                    path,
                    f"empty value ({bad.height} rows)",
                    line=bad["line"][0],
                    field=c,
                    reason="malformed",
                    unit="row" if _is_parquet(path) else "line",
                ),
                count=bad.height,
            )
            df = df.filter(~empty)
    return df


def _id_column(df, col: str, path: Path, policy: SkipPolicy):
    """Ids are text, whole numbers or finite floats; NaN or infinite ids and nested values are errors."""
    import polars as pl

    dtype = df.schema[col]
    if dtype.is_float():
        return _reject(df, col, ~pl.col(col).is_finite(), path, policy, "a finite number (an id)")
    if not (dtype == pl.String or dtype.is_integer() or dtype == pl.Boolean or dtype == pl.Categorical):
        raise DataFormatError(
            path,
            f"ids of type {dtype} are not supported (use text or whole numbers)",
            line=int(df["line"][0]) if df.height else None,
            field=col,
            unit="row" if _is_parquet(path) else "line",
        )
    return df


def _timestamps(df, col: str, path: Path, policy: SkipPolicy):
    """Timestamps as Int64: integers as given, date-times as Unix seconds. Returns (df, unit)."""
    import polars as pl

    dtype = df.schema[col]
    if dtype.is_integer():
        too_big = pl.col(col).cast(pl.Int64, strict=False).is_null() & pl.col(col).is_not_null()
        df = _reject(df, col, too_big, path, policy, "a whole number within the 64-bit range")
        return df.with_columns(pl.col(col).cast(pl.Int64)), "given"
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return df.with_columns(pl.col(col).cast(pl.Datetime("us")).dt.epoch("s")), "s"
    if dtype.is_float():
        bad = (
            ~pl.col(col).is_finite() | (pl.col(col).abs() >= 2.0**63) | (pl.col(col) != pl.col(col).round(0))
        )
        df = _reject(df, col, bad, path, policy, "a whole number within the 64-bit range")
        return df.with_columns(pl.col(col).cast(pl.Int64)), "given"
    if dtype != pl.String:
        raise DataFormatError(
            path,
            f"timestamps of type {dtype} are not supported (use integers or date-times)",
            line=int(df["line"][0]) if df.height else None,
            field=col,
            unit="row" if _is_parquet(path) else "line",
        )
    as_int = pl.col(col).str.strip_chars().cast(pl.Int64, strict=False)
    if df.filter(as_int.is_null()).height == 0:
        return df.with_columns(as_int), "given"
    as_time = pl.col(col).str.strip_chars().str.to_datetime(strict=False, time_unit="us")
    parsed = df.select(as_time.is_not_null().sum()).item()
    if parsed == 0:  # not date-times either: report the first value that is not an integer
        df = _reject(df, col, as_int.is_null(), path, policy, "an integer or an ISO-8601 date-time")
        return df.with_columns(as_int), "given"
    df = _reject(df, col, as_time.is_null(), path, policy, "an ISO-8601 date-time like the others")
    return df.with_columns(as_time.dt.epoch("s")), "s"


def _numeric(df, col: str, path: Path, policy: SkipPolicy):
    import polars as pl

    value = pl.col(col).cast(pl.Float64, strict=False)
    df = _reject(df, col, value.is_null(), path, policy, "a number")
    return df.with_columns(value)


def _reject(df, col: str, bad, path: Path, policy: SkipPolicy, expected: str):
    """Rows where ``bad`` holds are malformed: an error naming the first, or dropped when asked."""
    rows = df.filter(bad)
    if rows.height:
        first = rows.row(0, named=True)
        policy.skip_or_raise(
            DataFormatError(
                path,
                f"{first[col]!r} is not {expected} ({rows.height} such rows)",
                line=first["line"],
                field=col,
                reason="malformed",
                unit="row" if _is_parquet(path) else "line",
            ),
            count=rows.height,
        )
        df = df.filter(~bad)
    return df


def _item_text(path: Path, item_col: str, encoding: str):
    """The item table as ``item_id``, ``line`` and text columns (categories as lists of strings)."""
    import polars as pl

    table = read_table(path, encoding)
    id_col = item_col if item_col in table.columns else "item_id"
    _require_columns(table, [id_col], path)
    table = table.rename({id_col: "item_id"}).with_columns(pl.col("item_id").cast(pl.String))
    missing = table.filter(pl.col("item_id").is_null())
    if missing.height:
        raise DataFormatError(
            path,
            "empty item id",
            line=missing["line"][0],
            field=id_col,
            unit="row" if _is_parquet(path) else "line",
        )
    columns = []
    for name, dtype in table.schema.items():
        if name in ("item_id", "line"):
            columns.append(pl.col(name))
        elif name == "categories":
            if dtype == pl.String:
                columns.append(pl.col(name).str.split("|").list.eval(pl.element().str.strip_chars()))
            elif isinstance(dtype, pl.List):
                columns.append(pl.col(name).cast(pl.List(pl.String)))
            else:
                columns.append(pl.col(name).cast(pl.String).str.split("|"))
        elif dtype == pl.String or dtype.is_numeric() or dtype == pl.Boolean:
            columns.append(pl.col(name).cast(pl.String))
    return table.select(columns)
