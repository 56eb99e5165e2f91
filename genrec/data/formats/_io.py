"""Line-level reading shared by the format readers: decoding with line numbers, and skip policy."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from genrec.data.errors import DataFormatError
from genrec.data.writer import flatten_categories

# Reasons bad input can be skipped for, when the user asks (`--skip REASON`).
SKIP_REASONS = ("malformed", "duplicates", "short_users", "unknown_items")


class SkipPolicy:
    """Raises a :class:`DataFormatError` unless its reason was asked to be skipped; counts skips."""

    def __init__(self, skip: set[str] | frozenset[str] | tuple[str, ...] = ()) -> None:
        unknown = set(skip) - set(SKIP_REASONS)
        if unknown:
            raise ValueError(
                f"unknown skip reason(s) {sorted(unknown)}; choose from {', '.join(SKIP_REASONS)}"
            )
        self.allowed = frozenset(skip)
        self.counts: Counter[str] = Counter()

    def skip_or_raise(self, error: DataFormatError, count: int = 1) -> None:
        if error.reason not in self.allowed:
            if error.reason in SKIP_REASONS:
                error.args = (f"{error.args[0]} [pass --skip {error.reason} to drop such rows]",)
            raise error
        self.counts[error.reason] += count

    def report(self) -> dict[str, int]:
        """Counts per reason asked for (0 when nothing needed skipping), for the manifest."""
        return {reason: int(self.counts.get(reason, 0)) for reason in sorted(self.allowed)}


def open_binary(path: Path):
    """A file opened for binary reading, transparently gunzipped when it ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


# What reading a damaged gzip file raises: a truncated stream, a file that is not gzip, bad data.
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def gzip_error(path: Path, error: BaseException, line: int | None = None) -> DataFormatError:
    """The DataFormatError for a truncated or fake ``.gz`` file."""
    what = "is cut short (truncated)" if isinstance(error, EOFError) else "is not a valid gzip file"
    return DataFormatError(
        path,
        f"the gzip stream {what} ({error}); download or copy the file again",
        line=line,
        reason="malformed",
    )


@contextmanager
def gzip_checked(path: Path, line_of=lambda: None):
    """Turn gzip decoding errors inside the block into a DataFormatError naming ``path``."""
    try:
        yield
    except GZIP_ERRORS as e:
        raise gzip_error(path, e, line_of()) from None


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every line of a text file (``.gz`` too).

    A line that is not valid ``encoding`` raises a :class:`DataFormatError` naming the line and byte.
    """
    lineno = 0
    with gzip_checked(path, lambda: lineno + 1 if lineno else None), open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise DataFormatError(
                    path,
                    f"byte {e.start} ({raw[e.start : e.start + 1]!r}) is not valid {encoding}",
                    line=lineno,
                    reason="encoding",
                    hint="pass --encoding with the file's real encoding, e.g. latin-1",
                ) from None
            yield lineno, line.rstrip("\r\n")


def json_lines(path: Path, policy: SkipPolicy, encoding: str = "utf-8") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file; malformed lines per ``policy``."""
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            policy.skip_or_raise(
                DataFormatError(
                    path, f"not valid JSON ({e.msg} at column {e.colno})", line=lineno, reason="malformed"
                )
            )
            continue
        if not isinstance(obj, dict):
            policy.skip_or_raise(
                DataFormatError(
                    path, f"expected a JSON object, got {type(obj).__name__}", line=lineno, reason="malformed"
                )
            )
            continue
        yield lineno, obj


def find_file(source: Path, candidates: tuple[str, ...], what: str, required: bool = True) -> Path | None:
    """The first of ``candidates`` (file names or glob patterns) that exists in ``source``."""
    for pattern in candidates:
        matches = sorted(source.glob(pattern))
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise DataFormatError(source, f"several files could be the {what}: {names}; keep one")
        if matches:
            return matches[0]
    if required:
        raise DataFormatError(source, f"no {what} found (looked for {', '.join(candidates)})")
    return None


def interactions_frame(users: list[str], items: list[str], times: list[int], lines: list[int]):
    """The polars frame of parsed interactions every format hands to prepare: user and item ids as
    strings, the timestamp and the source line as int64."""
    import polars as pl

    return pl.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": times, "line": lines},
        schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64, "line": pl.Int64},
    )


def text_frame(rows: list[dict]):
    """A polars frame from item text rows (``item_id``, ``line``, text fields).

    ``categories`` is flattened to a list of strings (Amazon nests category paths); other fields
    become strings, or nulls where absent.
    """
    import polars as pl

    names = list(dict.fromkeys(k for r in rows for k in r)) or ["item_id", "line"]
    columns = []
    for name in names:
        values = [r.get(name) for r in rows]
        if name == "line":
            columns.append(pl.Series(name, values, dtype=pl.Int64))
        elif name == "categories":
            columns.append(pl.Series(name, [flatten_categories(v) for v in values], dtype=pl.List(pl.String)))
        else:
            columns.append(pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String))
    return pl.DataFrame(columns)
