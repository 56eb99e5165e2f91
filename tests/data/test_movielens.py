"""The movielens format: 100K and 1M layouts, Latin-1 titles, genres, and the exact 100K counts."""

from __future__ import annotations

import pytest

from genrec.data import DataFormatError, load_prepared
from genrec.data.prepare import prepare_dataset
from tests.data.conftest import real_dataset


def make_1m(folder, ratings, movies):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("".join(r + "\n" for r in ratings))
    (folder / "movies.dat").write_bytes("".join(m + "\n" for m in movies).encode("latin-1"))
    return folder


RATINGS = ["1::10::5::300", "1::20::3::100", "1::30::4::200", "2::20::1::50", "2::30::5::40", "2::10::4::60"]
MOVIES = [
    "10::Amélie (2001)::Comedy|Romance",
    "20::Heat (1995)::Action",
    "30::Solaris (1972)::(no genres listed)",
    "40::Unrated::Drama",
]


def test_1m_layout_order_titles_genres(tmp_path):
    ds = load_prepared(
        prepare_dataset("movielens", make_1m(tmp_path / "src", RATINGS, MOVIES), tmp_path / "out")
    )
    items = ds.item_table().to_pylist()
    ids = [r["item_id"] for r in items]
    assert [[ids[i] for i in ds.sequence(u)] for u in range(2)] == [["20", "30", "10"], ["30", "20", "10"]]
    by_id = {r["item_id"]: r for r in items}
    assert by_id["10"]["title"] == "Amélie (2001)" and by_id["10"]["categories"] == ["Comedy", "Romance"]
    assert by_id["30"]["categories"] == []
    assert ds.manifest["filtered"]["catalogue_rows_without_interactions"] == 1  # movie 40
    assert ds.manifest["options"]["variant"] == "1m"
    high = load_prepared(
        prepare_dataset("movielens", tmp_path / "src", tmp_path / "high", min_rating=3, skip=["short_users"])
    )
    assert high.num_users == 1 and high.manifest["options"]["ratings_below_min"] == 1
    assert high.manifest["skipped"] == {"short_users": 1}


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ([*RATINGS, "3::10::5"], r"ratings.dat, line 7: expected 4 fields separated by '::', got 3"),
        ([*RATINGS, "3::ten::5::1"], r"ratings.dat, line 7, field 'item_id': 'ten' is not a number"),
        (
            [*RATINGS, "1::10::5::300"],
            r"ratings.dat, line 7: duplicate row: user '1', item '10' at timestamp 300",
        ),
    ],
)
def test_bad_ratings_are_located(tmp_path, ratings, message):
    with pytest.raises(DataFormatError, match=message):
        prepare_dataset("movielens", make_1m(tmp_path / "src", ratings, MOVIES), tmp_path / "out")


def test_wrong_encoding_names_the_line(tmp_path):
    source = make_1m(tmp_path / "src", RATINGS, MOVIES)
    (source / "ratings.dat").write_bytes(
        (source / "ratings.dat").read_bytes() + "3::10::5::1 é\n".encode("latin-1")
    )
    with pytest.raises(
        DataFormatError,
        match=r"ratings.dat, line 7: byte 12 \(b'\\xe9'\) is not valid utf-8 \(pass --encoding",
    ):
        prepare_dataset("movielens", source, tmp_path / "out")


@pytest.mark.slow
def test_movielens_100k_exact_counts(tmp_path):
    source = real_dataset("movielens/ml-100k", "u.data", "u.item", "u.genre")
    ds = load_prepared(prepare_dataset("movielens", source, tmp_path / "ml"))
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1_682, 100_000)
    titles = dict(zip(*ds.item_table(["item_id", "title"]).to_pydict().values(), strict=True))
    assert titles["543"] == "Misérables, Les (1995)"  # Latin-1 decoded
    genres = dict(zip(*ds.item_table(["item_id", "categories"]).to_pydict().values(), strict=True))
    assert genres["1"] == ["Animation", "Children's", "Comedy"]  # Toy Story
    assert (
        ds.manifest["sources"][0]["sha256"]
        == "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
    )
    times = ds.interactions().column("timestamp").to_numpy()
    for u in range(0, ds.num_users, 97):
        lo, hi = ds.offsets[u], ds.offsets[u + 1]
        assert (times[lo + 1 : hi] >= times[lo : hi - 1]).all()  # chronological within each user
