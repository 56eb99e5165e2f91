"""Known public datasets: their format, folder under the data dir, and where to download them.

``genrec data download NAME`` fetches a dataset's files into ``data_dir() / folder``;
``genrec data prepare --format FORMAT --source THAT_FOLDER`` then reads them. Checksums are
given where they are public facts (the sha256 of the exact bytes); files without one are
downloaded unverified and their measured sha256 is recorded in the folder's download manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_ICLREC = "https://raw.githubusercontent.com/salesforce/ICLRec/4afb54a036ebbf4166ed5858122d89c0642251a7/data"
_P5_MAPS = "https://raw.githubusercontent.com/Wenyueh/LLM-RecSys-ID"
_SNAP = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"

_AMAZON_CITATION = (
    'R. He and J. McAuley, "Ups and Downs", WWW 2016; J. McAuley et al., "Image-based '
    'recommendations on styles and substitutes", SIGIR 2015'
)
_AMAZON_TERMS = "Amazon review data (2014), UCSD: research use only."
_MOVIELENS_CITATION = (
    'F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015'
)
_MOVIELENS_TERMS = (
    "GroupLens: research use only, no redistribution without permission (see the README inside)."
)


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. ``filename`` is its name in the dataset folder.

    A zip archive (``extract=True``) is unpacked into the folder, dropping ``strip_prefix`` from
    member names; ``member_sha256`` pins members whose checksums are known.
    """

    url: str
    filename: str
    sha256: str | None = None
    extract: bool = False
    strip_prefix: str = ""
    member_sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KnownDataset:
    name: str
    format: str  # a `genrec data prepare --format` value
    folder: str  # relative to the data dir
    files: tuple[RemoteFile, ...]
    description: str
    citation: str
    terms: str
    notes: str = ""


def _p5(category: str, iclrec_file: str, seq_sha256: str, maps_commit: str) -> KnownDataset:
    return KnownDataset(
        name=f"amazon2014/{category}",
        format="p5",
        folder=f"amazon2014/{category}",
        files=(
            RemoteFile(f"{_ICLREC}/{iclrec_file}", "sequential_data.txt", seq_sha256),
            RemoteFile(f"{_P5_MAPS}/{maps_commit}/data/{category}/datamaps.json", "datamaps.json"),
        ),
        description=f"Amazon 2014 5-core {category}, the P5/S3-Rec/TIGER sequences (leave-one-out benchmark)",
        citation=_AMAZON_CITATION,
        terms=_AMAZON_TERMS,
        notes="Item text (item_meta.jsonl.gz) is a derived file with no public URL; without it the "
        "item table carries ids only. amazon2014-raw/<category> has the original metadata.",
    )


def _raw_amazon(category: str, file_category: str) -> KnownDataset:
    return KnownDataset(
        name=f"amazon2014-raw/{category}",
        format="amazon2014",
        folder=f"amazon2014-raw/{category}",
        files=(
            RemoteFile(f"{_SNAP}/reviews_{file_category}_5.json.gz", f"reviews_{file_category}_5.json.gz"),
            RemoteFile(f"{_SNAP}/meta_{file_category}.json.gz", f"meta_{file_category}.json.gz"),
        ),
        description=f"Amazon 2014 {file_category}: original 5-core reviews and product metadata",
        citation=_AMAZON_CITATION,
        terms=_AMAZON_TERMS,
    )


_DATASETS = (
    _p5(
        "beauty",
        "Beauty.txt",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "377977a29e68e18842ffa06e96e8be05825dd524",
    ),
    _p5(
        "sports",
        "Sports_and_Outdoors.txt",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        "d5d5e8b2471fe074308d2a2615f40e0a879eb8be",
    ),
    _raw_amazon("beauty", "Beauty"),
    _raw_amazon("sports", "Sports_and_Outdoors"),
    KnownDataset(
        name="movielens/ml-100k",
        format="movielens",
        folder="movielens/ml-100k",
        files=(
            RemoteFile(
                f"{_GROUPLENS}/ml-100k.zip",
                "ml-100k.zip",
                extract=True,
                strip_prefix="ml-100k/",
                member_sha256={
                    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
                    "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
                    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
                },
            ),
        ),
        description="MovieLens 100K: 100,000 ratings from 943 users on 1,682 movies",
        citation=_MOVIELENS_CITATION,
        terms=_MOVIELENS_TERMS,
    ),
    KnownDataset(
        name="movielens/ml-1m",
        format="movielens",
        folder="movielens/ml-1m",
        files=(RemoteFile(f"{_GROUPLENS}/ml-1m.zip", "ml-1m.zip", extract=True, strip_prefix="ml-1m/"),),
        description="MovieLens 1M: 1,000,209 ratings from 6,040 users on 3,706 movies",
        citation=_MOVIELENS_CITATION,
        terms=_MOVIELENS_TERMS,
    ),
)

DATASETS: dict[str, KnownDataset] = {d.name: d for d in _DATASETS}


def get_dataset(name: str) -> KnownDataset:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise KeyError(f"unknown dataset {name!r}; known datasets: {known}") from None
