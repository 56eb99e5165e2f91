"""The original Amazon review data (2014), as published by McAuley's lab.

Files in the source folder:
- ``reviews_<Category>[_5].json[.gz]``: one JSON object per line with ``reviewerID``, ``asin``,
  ``unixReviewTime`` (and ``overall``, the rating);
- ``meta_<Category>.json[.gz]`` (optional): one *Python dict literal* per line (single quotes),
  with ``asin``, ``title``, ``brand``, ``categories`` (a list of category paths), ``description``.
  These are parsed with ``ast.literal_eval``, which reads literals only and never runs code.

The metadata covers the whole category, so its rows for items without (k-core) interactions are
dropped and counted. Each user's reviews are ordered by ``unixReviewTime``; reviews on the same
day keep the order of the file.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from genrec.data.errors import DataFormatError
from genrec.data.formats._io import SkipPolicy, find_file, interactions_frame, text_frame, text_lines
from genrec.data.prepare import RawData

_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_META_TEXT_FIELDS = ("title", "brand", "categories", "description")


def read(
    source: Path,
    policy: SkipPolicy,
    encoding: str = "utf-8",
    min_rating: float | None = None,
    items_file: Path | None = None,
) -> RawData:
    if source.is_file():
        reviews_path, source = source, source.parent
    else:
        reviews_path = find_file(source, ("reviews_*.json.gz", "reviews_*.json"), "Amazon reviews file")
    meta_path = items_file or find_file(
        source, ("meta_*.json.gz", "meta_*.json"), "Amazon metadata file", required=False
    )

    users, items, times, lines = [], [], [], []
    below_rating = 0
    for lineno, obj in _records(reviews_path, policy, encoding):
        try:
            user = _field(obj, "reviewerID", reviews_path, lineno, str)
            item = _field(obj, "asin", reviews_path, lineno, str)
            when = _field(obj, "unixReviewTime", reviews_path, lineno, int)
            rating = _field(obj, "overall", reviews_path, lineno, float) if min_rating is not None else None
        except DataFormatError as e:
            policy.skip_or_raise(e)
            continue
        if rating is not None and rating < min_rating:
            below_rating += 1
            continue
        users.append(user)
        items.append(item)
        times.append(when)
        lines.append(lineno)
    df = interactions_frame(users, items, times, lines)
    raw = RawData(
        interactions=df,
        interactions_path=reviews_path,
        sources=[p for p in (reviews_path, meta_path) if p is not None],
        items_are_catalogue=True,
        timestamp_unit="s",
        options={
            "format": "amazon2014",
            "source": str(source),
            "encoding": encoding,
            "min_rating": min_rating,
            "ratings_below_min": below_rating,
        },
    )
    if meta_path is not None:
        raw.items, others = _read_meta(meta_path, set(items), policy, encoding)
        raw.filtered["catalogue_rows_without_interactions"] = others
        raw.items_path = meta_path
    else:
        raw.notes.append("no meta_*.json.gz in the source: the item table has ids only")
    return raw


def _records(path: Path, policy: SkipPolicy, encoding: str):
    """(line, dict) per review line: JSON, or a Python literal as some releases are written."""
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        obj = _parse_object(line)
        if not isinstance(obj, dict):
            policy.skip_or_raise(
                DataFormatError(
                    path, "not a JSON object or Python dict literal", line=lineno, reason="malformed"
                )
            )
            continue
        yield lineno, obj


def _parse_object(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(line)  # literals only: never runs code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _field(obj: dict, name: str, path: Path, lineno: int, kind: type):
    if name not in obj or obj[name] is None:
        raise DataFormatError(path, "missing", line=lineno, field=name, reason="malformed")
    value = obj[name]
    try:
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        if not isinstance(value, str) or not value:
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise DataFormatError(
            path, f"expected {kind.__name__}, got {value!r}", line=lineno, field=name, reason="malformed"
        ) from None


def _read_meta(path: Path, wanted: set[str], policy: SkipPolicy, encoding: str):
    """Metadata rows of the ``wanted`` items, and how many other items' rows there were.

    Other lines are only scanned for their asin, which skips the (slow) literal parse."""
    rows, others = [], 0
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        found = _ASIN.search(line)
        if found is not None and found.group(1) not in wanted:
            others += 1
            continue
        obj = _parse_object(line)
        if not isinstance(obj, dict):
            policy.skip_or_raise(
                DataFormatError(path, "not a Python dict literal", line=lineno, reason="malformed")
            )
            continue
        asin = obj.get("asin")
        if not isinstance(asin, str) or not asin:
            policy.skip_or_raise(
                DataFormatError(path, "missing", line=lineno, field="asin", reason="malformed")
            )
            continue
        if asin not in wanted:
            others += 1
            continue
        rows.append({"item_id": asin, "line": lineno, **{f: obj.get(f) for f in _META_TEXT_FIELDS}})
    return text_frame(rows), others
