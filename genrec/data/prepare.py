"""The steps every format shares after reading: checks, k-core, ordering, indexing, writing.

A format reader (``genrec.data.formats.<name>.read``) turns its files into a :class:`RawData`;
:func:`prepare_raw` checks it (duplicates, unknown items, short users), filters it, orders each
user's interactions chronologically with the source order breaking ties, indexes users and items,
and writes the prepared directory. Polars does the work here; loading never needs it.
"""

from __future__ import annotations

import codecs
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genrec.data import formats
from genrec.data.download import verify_registered_sources
from genrec.data.errors import DataFormatError
from genrec.data.formats._io import SkipPolicy
from genrec.data.writer import MIN_SEQUENCE_LENGTH, build_item_table, file_digest, write_prepared_arrays


@dataclass
class RawData:
    """What a format reader hands over.

    ``interactions`` (a polars DataFrame) has ``user_id`` str, ``item_id`` str, ``timestamp`` i64
    and ``line`` i64 (the source line, which breaks timestamp ties and locates errors) from the
    file ``interactions_path``. ``items`` has ``item_id`` plus text columns, or is None.
    ``items_are_catalogue``: the item file describes a whole catalogue (Amazon metadata,
    MovieLens movies), so rows of items without interactions are expected and dropped; otherwise
    such a row is an unknown item id. ``user_order``/``item_order`` pin the indexing (P5 ids);
    by default users are indexed by first appearance in the source, items by first appearance in
    the ordered sequences.
    """

    interactions: Any
    interactions_path: Path
    sources: list[Path]
    items: Any | None = None
    items_path: Path | None = None
    items_are_catalogue: bool = False
    user_order: list[str] | None = None
    item_order: list[str] | None = None
    timestamp_unit: str = "s"
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)  # counts of rows a reader left out by design


@dataclass(frozen=True)
class PrepareOptions:
    """The choices of ``genrec data prepare`` shared by all formats."""

    min_user_interactions: int = 0  # iterative k-core thresholds; 0 disables that side
    min_item_interactions: int = 0
    skip: frozenset[str] = frozenset()
    name: str | None = None
    overwrite: bool = False


def prepare_raw(raw: RawData, out_dir: str | Path, options: PrepareOptions, policy: SkipPolicy) -> Path:
    import polars as pl

    df = raw.interactions.select(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("line").cast(pl.Int64),
    )
    filtered: dict[str, int] = dict(raw.filtered)
    df = _drop_duplicates(df, raw, policy)
    text = raw.items
    if text is not None:
        text, df = _match_item_table(df, text, raw, policy, filtered)
    df = _k_core(df, options.min_user_interactions, options.min_item_interactions, filtered)
    df = _drop_short_users(df, raw, policy)
    if df.height == 0:
        raise DataFormatError(
            raw.interactions_path,
            "no interactions left after filtering (k-core: users with >= "
            f"{options.min_user_interactions}, items with >= {options.min_item_interactions} interactions)",
        )

    # Users by first appearance (or the pinned order), then time, then source line: a stable order.
    if raw.user_order is not None:
        rank = pl.DataFrame({"user_id": raw.user_order, "user_rank": np.arange(len(raw.user_order))})
        df = df.join(rank, on="user_id", how="left")
    else:
        df = df.with_columns(pl.col("line").min().over("user_id").alias("user_rank"))
    df = df.sort(["user_rank", "timestamp", "line"])
    users = df.select("user_id").unique(maintain_order=True)["user_id"].to_list()
    if raw.item_order is not None:
        present = set(df["item_id"].unique().to_list())
        items = [i for i in raw.item_order if i in present]
    else:
        items = df.select("item_id").unique(maintain_order=True)["item_id"].to_list()
    user_index = pl.DataFrame({"user_id": users, "user_idx": np.arange(len(users), dtype=np.int64)})
    item_index = pl.DataFrame({"item_id": items, "item_idx": np.arange(len(items), dtype=np.int64)})
    df = df.join(user_index, on="user_id", how="left", maintain_order="left").join(
        item_index, on="item_id", how="left", maintain_order="left"
    )

    item_table, text_columns = build_item_table(items, _text_for(text, items))
    items_without_text = _count_without_text(item_table, text_columns)
    name = options.name or Path(raw.interactions_path).parent.name
    return write_prepared_arrays(
        out_dir,
        user_idx=df["user_idx"].to_numpy(),
        item_idx=df["item_idx"].to_numpy(),
        timestamps=df["timestamp"].to_numpy(),
        user_ids=users,
        item_table=item_table,
        name=name,
        source_format=raw.options.get("format", "unknown"),
        sources=[file_digest(p) for p in raw.sources],
        options={
            **raw.options,
            "min_user_interactions": options.min_user_interactions,
            "min_item_interactions": options.min_item_interactions,
            "skip": sorted(options.skip),
            "text_cleaning": "HTML entities decoded, whitespace trimmed",
        },
        skipped=policy.report(),
        item_text_columns=text_columns,
        extra_manifest={
            "timestamp_unit": raw.timestamp_unit,
            "filtered": filtered,
            "items_without_text": items_without_text,
            "notes": raw.notes,
        },
        overwrite=options.overwrite,
    )


def _drop_duplicates(df, raw: RawData, policy: SkipPolicy):
    """An identical (user, item, timestamp) row twice is a duplicate; repeats at other times are kept."""
    import polars as pl

    dup = df.filter(pl.struct("user_id", "item_id", "timestamp").is_first_distinct().not_())
    if dup.height == 0:
        return df
    first = dup.row(0, named=True)
    error = DataFormatError(
        raw.interactions_path,
        f"duplicate row: user {first['user_id']!r}, item {first['item_id']!r} at timestamp "
        f"{first['timestamp']} already appeared ({dup.height} duplicate rows in all)",
        line=first["line"],
        reason="duplicates",
        unit=_unit(raw.interactions_path),
    )
    policy.skip_or_raise(error, count=dup.height)
    return df.filter(pl.struct("user_id", "item_id", "timestamp").is_first_distinct())


def _match_item_table(df, text, raw: RawData, policy: SkipPolicy, filtered: dict):
    """Keep item-table rows of items that occur; a row naming no known item is an error unless skipped."""
    import polars as pl

    known = df.select("item_id").unique()
    unknown = text.join(known, on="item_id", how="anti")
    if unknown.height:
        if raw.items_are_catalogue:
            key = "catalogue_rows_without_interactions"
            filtered[key] = filtered.get(key, 0) + unknown.height
        else:
            row = unknown.row(0, named=True)
            line = row.get("line")
            policy.skip_or_raise(
                DataFormatError(
                    raw.items_path or raw.interactions_path,
                    f"item id {row['item_id']!r} does not occur in the interactions "
                    f"({unknown.height} such rows)",
                    line=None if line is None else int(line),
                    field="item_id",
                    reason="unknown_items",
                    unit=_unit(raw.items_path),
                ),
                count=unknown.height,
            )
        text = text.join(known, on="item_id", how="semi")
    dup = text.filter(pl.col("item_id").is_first_distinct().not_())
    if dup.height:
        row = dup.row(0, named=True)
        line = row.get("line")
        policy.skip_or_raise(
            DataFormatError(
                raw.items_path or raw.interactions_path,
                f"item id {row['item_id']!r} has more than one row in the item table",
                line=None if line is None else int(line),
                field="item_id",
                reason="duplicates",
                unit=_unit(raw.items_path),
            ),
            count=dup.height,
        )
        text = text.filter(pl.col("item_id").is_first_distinct())
    return text, df


def _unit(path: Path | None) -> str:
    """How ``line`` numbers of a file read: Parquet has rows, text files have lines."""
    return "row" if path is not None and Path(path).suffix in (".parquet", ".pq") else "line"


def _k_core(df, min_user: int, min_item: int, filtered: dict):
    """Iteratively drop users and items with fewer interactions than asked until none remain."""
    import polars as pl

    if min_user <= 0 and min_item <= 0:
        return df
    start_users, start_items, start_rows = df["user_id"].n_unique(), df["item_id"].n_unique(), df.height
    rounds = 0
    while True:
        keep = pl.lit(True)
        if min_user > 0:
            keep = keep & (pl.len().over("user_id") >= min_user)
        if min_item > 0:
            keep = keep & (pl.len().over("item_id") >= min_item)
        kept = df.filter(keep)
        rounds += 1
        if kept.height == df.height:
            break
        df = kept
    filtered.update(
        {
            "k_core_rounds": rounds,
            "k_core_users_removed": start_users - df["user_id"].n_unique(),
            "k_core_items_removed": start_items - df["item_id"].n_unique(),
            "k_core_interactions_removed": start_rows - df.height,
        }
    )
    return df


def _drop_short_users(df, raw: RawData, policy: SkipPolicy):
    import polars as pl

    counts = df.group_by("user_id", maintain_order=True).agg(pl.len().alias("n"), pl.col("line").min())
    short = counts.filter(pl.col("n") < MIN_SEQUENCE_LENGTH)
    if short.height == 0:
        return df
    row = short.sort("line").row(0, named=True)
    policy.skip_or_raise(
        DataFormatError(
            raw.interactions_path,
            f"user {row['user_id']!r} has {row['n']} interaction(s); leave-one-out needs at least "
            f"{MIN_SEQUENCE_LENGTH} ({short.height} such users; --min-user-interactions filters them too)",
            line=row["line"],
            field="user_id",
            reason="short_users",
            unit=_unit(raw.interactions_path),
        ),
        count=short.height,
    )
    return df.join(short.select("user_id"), on="user_id", how="anti")


def _text_for(text, items: list[str]):
    """Text rows of the final ``items`` (filtering may have dropped some) as a pyarrow table, or None."""
    import polars as pl

    if text is None:
        return None
    text = text.filter(pl.col("item_id").is_in(items))
    return text.select([c for c in text.columns if c != "line"]).to_arrow()


def _count_without_text(item_table, text_columns: list[str]) -> int:
    if not text_columns:
        return item_table.num_rows
    has = np.zeros(item_table.num_rows, dtype=bool)
    for c in text_columns:
        col = item_table.column(c).to_pylist()
        has |= np.array([bool(v) for v in col])
    return int((~has).sum())


# Iterative k-core defaults per format: the raw Amazon reviews get the 5-core the benchmarks use;
# the P5 files are already 5-core, and MovieLens/tables are kept whole unless asked.
DEFAULT_K_CORE = {"p5": (0, 0), "amazon2014": (5, 5), "movielens": (0, 0), "table": (0, 0)}
FORMATS = tuple(DEFAULT_K_CORE)


def prepare_dataset(
    fmt: str,
    source: str | Path,
    out_dir: str | Path,
    *,
    min_user_interactions: int | None = None,
    min_item_interactions: int | None = None,
    skip: tuple[str, ...] | frozenset[str] = (),
    name: str | None = None,
    overwrite: bool = False,
    **format_options,
) -> Path:
    """Read ``source`` in format ``fmt`` and write a prepared dataset directory at ``out_dir``.

    ``format_options`` go to the format's reader (e.g. ``encoding``, ``items_file``; for ``table``:
    ``user_col``, ``item_col``, ``time_col``, ...). ``skip`` names the bad-input reasons to drop
    rows for instead of failing (see ``genrec.data.formats._io.SKIP_REASONS``); the counts land in
    the manifest. Returns ``out_dir``.
    """
    if fmt not in DEFAULT_K_CORE:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"source {source} does not exist")
    if "encoding" in format_options:
        try:
            codecs.lookup(format_options["encoding"])
        except LookupError:
            raise ValueError(
                f"unknown text encoding {format_options['encoding']!r} (--encoding); e.g. utf-8, latin-1, cp1252"
            ) from None
    verify_registered_sources(source)
    policy = SkipPolicy(frozenset(skip))
    read = formats.reader(fmt)
    accepted = set(inspect.signature(read).parameters) - {"source", "policy"}
    unknown = sorted(set(format_options) - accepted)
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} do not apply to format {fmt!r} (it takes {', '.join(sorted(accepted))})"
        )
    raw = read(source, policy, **format_options)
    default_user, default_item = DEFAULT_K_CORE[fmt]
    options = PrepareOptions(
        min_user_interactions=default_user if min_user_interactions is None else min_user_interactions,
        min_item_interactions=default_item if min_item_interactions is None else min_item_interactions,
        skip=frozenset(skip),
        name=name,
        overwrite=overwrite,
    )
    return prepare_raw(raw, out_dir, options, policy)
