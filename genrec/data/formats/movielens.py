"""MovieLens ratings as implicit feedback: MovieLens 100K and 1M (also 10M, which shares 1M's layout).

- 100K: ``u.data`` (``user \\t item \\t rating \\t unix time``), ``u.item`` (``|``-separated:
  id, title, release date, video date, IMDb URL, 19 genre flags; Latin-1), ``u.genre``;
- 1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genres`` with ``|``-separated genres; Latin-1).

Every rating is an interaction unless ``min_rating`` is given. Movies become items with their title
and genres (as ``categories``); the movie files list the whole catalogue, so movies nobody rated
are dropped and counted.
"""

from __future__ import annotations

from pathlib import Path

from genrec.data.errors import DataFormatError
from genrec.data.formats._io import SkipPolicy, find_file, interactions_frame, text_frame, text_lines
from genrec.data.prepare import RawData

# u.genre as shipped with 100K, used when the file is absent.
_GENRES_100K = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def read(
    source: Path,
    policy: SkipPolicy,
    encoding: str | None = None,
    min_rating: float | None = None,
    items_file: Path | None = None,
) -> RawData:
    if (source / "u.data").is_file():
        variant, ratings_path, sep = "100k", source / "u.data", "\t"
        movies_path = items_file or find_file(source, ("u.item",), "movie file", required=False)
    else:
        ratings_path = find_file(source, ("ratings.dat",), "MovieLens ratings file (u.data or ratings.dat)")
        variant, sep = "1m", "::"
        movies_path = items_file or find_file(source, ("movies.dat",), "movie file", required=False)

    users, items, times, lines = [], [], [], []
    below_rating = 0
    fields = ("user_id", "item_id", "rating", "timestamp")
    # Ratings are ASCII and the movie files Latin-1, unless an encoding is given for both.
    ratings_encoding, movies_encoding = (encoding, encoding) if encoding else ("utf-8", "latin-1")
    for lineno, line in text_lines(ratings_path, ratings_encoding):
        if not line.strip():
            continue
        parts = line.split(sep)
        try:
            if len(parts) != 4:
                raise DataFormatError(
                    ratings_path,
                    f"expected 4 fields separated by {sep!r}, got {len(parts)}",
                    line=lineno,
                    reason="malformed",
                )
            values = [_number(p, f, ratings_path, lineno) for p, f in zip(parts, fields, strict=True)]
        except DataFormatError as e:
            policy.skip_or_raise(e)
            continue
        if min_rating is not None and values[2] < min_rating:
            below_rating += 1
            continue
        users.append(parts[0].strip())
        items.append(parts[1].strip())
        times.append(int(values[3]))
        lines.append(lineno)
    df = interactions_frame(users, items, times, lines)
    raw = RawData(
        interactions=df,
        interactions_path=ratings_path,
        sources=[p for p in (ratings_path, movies_path) if p is not None],
        items_are_catalogue=True,
        timestamp_unit="s",
        options={
            "format": "movielens",
            "variant": variant,
            "source": str(source),
            "encoding": {"ratings": ratings_encoding, "movies": movies_encoding},
            "min_rating": min_rating,
            "ratings_below_min": below_rating,
        },
    )
    if movies_path is not None:
        genres = _genre_names(source / "u.genre", movies_encoding) if variant == "100k" else None
        raw.items = _read_movies(movies_path, variant, genres, policy, movies_encoding)
        raw.items_path = movies_path
        raw.sources += [source / "u.genre"] if variant == "100k" and (source / "u.genre").is_file() else []
    return raw


def _number(text: str, field: str, path: Path, lineno: int) -> float:
    try:
        value = float(text) if field == "rating" else int(text)
    except ValueError:
        raise DataFormatError(
            path, f"{text!r} is not a number", line=lineno, field=field, reason="malformed"
        ) from None
    return value


def _genre_names(path: Path, encoding: str) -> list[str]:
    if not path.is_file():
        return list(_GENRES_100K)
    names: dict[int, str] = {}
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        name, _, index = line.rpartition("|")
        if not index.strip().isdigit():
            raise DataFormatError(path, f"expected name|index, got {line!r}", line=lineno, field="index")
        names[int(index)] = name
    return [names[i] for i in sorted(names)]


def _read_movies(path: Path, variant: str, genres: list[str] | None, policy: SkipPolicy, encoding: str):
    rows = []
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        if variant == "100k":
            parts = line.split("|")
            if len(parts) != 5 + len(genres):
                policy.skip_or_raise(
                    DataFormatError(
                        path,
                        f"expected {5 + len(genres)} '|'-separated fields, got {len(parts)}",
                        line=lineno,
                        reason="malformed",
                    )
                )
                continue
            flags = parts[5:]
            bad = next((i for i, f in enumerate(flags) if f not in ("0", "1")), None)
            if bad is not None:
                policy.skip_or_raise(
                    DataFormatError(
                        path,
                        f"genre flag {flags[bad]!r} is not 0 or 1",
                        line=lineno,
                        field=genres[bad],
                        reason="malformed",
                    )
                )
                continue
            categories = [g for g, f in zip(genres, flags, strict=True) if f == "1"]
            rows.append(
                {"item_id": parts[0].strip(), "line": lineno, "title": parts[1], "categories": categories}
            )
        else:
            parts = line.split("::")
            if len(parts) != 3:
                policy.skip_or_raise(
                    DataFormatError(
                        path,
                        f"expected 3 '::'-separated fields, got {len(parts)}",
                        line=lineno,
                        reason="malformed",
                    )
                )
                continue
            genre_list = [g for g in parts[2].split("|") if g and g != "(no genres listed)"]
            rows.append(
                {"item_id": parts[0].strip(), "line": lineno, "title": parts[1], "categories": genre_list}
            )
    return text_frame(rows)
