"""The stages of ``genrec train`` before training: prepare, embed, tokenize, each cached.

Every stage's key hashes its settings (the fields that change its output) and the contents of
its inputs (the dataset's manifest hash, the embeddings' hash), never paths: a cache folder
copied to another machine is found there too. Folders given in the config (``data.prepared``,
``data.embeddings``, ``data.tokenizer``) replace a stage; they are checked against the dataset.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from genrec.config import Config
from genrec.data import dataset_dir, get_dataset, load_prepared
from genrec.data.cold_start import write_cold_start
from genrec.data.download import download_dataset
from genrec.data.errors import DownloadError
from genrec.data.prepare import prepare_dataset
from genrec.embed import embed_items
from genrec.embed.artifacts import item_ids_sha256, load_embeddings, read_meta
from genrec.files import array_sha256, file_sha256
from genrec.pipeline.cache import StageCache, StageOutput
from genrec.settings import ConfigError, hashed_settings, stable_hash
from genrec.tokenize.artifacts import load_semantic_ids, read_tokenizer_info
from genrec.tokenize.folders import tokenize_dataset

# Bump when a stage's output for the same settings changes meaning.
# embed 2: the output also holds the encoder state that embeds items added after training.
STAGE_VERSIONS = {"prepare": 1, "cold_start": 1, "embed": 2, "tokenize": 1}
def _file_digests(source: Path) -> dict[str, str]:
    """sha256 of every file under ``source`` (or of ``source`` itself), keyed by relative path."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    out = {}
    for path in files:
        out[str(path.relative_to(source)) if source.is_dir() else path.name] = file_sha256(path)
    return out


# ---- prepare ----
def prepare_stage(config: Config, cache: StageCache) -> StageOutput:
    """The prepared dataset, with the cold-start protocol applied when ``data.cold_start`` > 0."""
    prepared = _prepare_stage(config, cache)
    return cold_start_stage(config, prepared, cache) if config.data.cold_start > 0 else prepared


def cold_start_stage(config: Config, prepared: StageOutput, cache: StageCache) -> StageOutput:
    """The cold-start version of a prepared dataset (genrec.data.cold_start), keyed by its manifest."""
    source = load_prepared(prepared.path)
    if source.cold_items().size:
        raise ConfigError(
            f"data.cold_start: {prepared.path} is already a cold-start dataset; set data.cold_start = 0 to use it as is"
        )
    settings = {"fraction": config.data.cold_start, "seed": config.data.cold_start_seed}
    inputs = {"dataset": source.fingerprint}
    key = stable_hash({"stage": "cold_start", "v": STAGE_VERSIONS["cold_start"], **settings, **inputs})

    def produce(folder: Path) -> dict:
        write_cold_start(source, folder, fraction=settings["fraction"], seed=settings["seed"], overwrite=True)
        data = load_prepared(folder)
        return {
            "name": data.name,
            "num_users": data.num_users,
            "num_items": data.num_items,
            "cold_items": int(data.cold_items().size),
            "users_dropped": data.manifest["split"]["users_dropped"],
        }

    return cache.build("cold_start", key, settings, inputs, produce)


def _prepare_stage(config: Config, cache: StageCache) -> StageOutput:
    """The prepared dataset: ``data.prepared`` when given, else ``genrec data prepare`` of the source."""
    d = config.data
    if d.prepared:
        started = time.perf_counter()
        dataset = load_prepared(d.prepared)
        info = {
            "given": True,
            "name": dataset.name,
            "num_users": dataset.num_users,
            "num_items": dataset.num_items,
        }
        return StageOutput(
            "prepare", dataset.fingerprint[:16], Path(d.prepared), True, time.perf_counter() - started, info,
            {"given": str(d.prepared)},
        )  # fmt: skip

    fmt, source = d.format, Path(d.source) if d.source else None
    if source is None or not fmt:
        try:
            known = get_dataset(d.dataset)
        except KeyError as e:
            raise ConfigError(f"data.dataset: {e.args[0]}") from None
        fmt = fmt or known.format
        if source is None and not dataset_dir(d.dataset).exists() and d.download:
            _download(d.dataset)
        source = source or dataset_dir(d.dataset)
    if not source.exists():
        raise ConfigError(
            f"data: the raw files of {d.dataset!r} are not at {source} (set GENREC_DATA_DIR, run "
            "`genrec data download`, or point data.source / data.prepared elsewhere)"
        )
    options = {
        "min_user_interactions": None if d.min_user_interactions < 0 else d.min_user_interactions,
        "min_item_interactions": None if d.min_item_interactions < 0 else d.min_item_interactions,
    }
    name = d.dataset.split("/")[-1] if not d.source else source.name
    settings = {"format": fmt, "name": name, **options}
    inputs = {"source_sha256": _file_digests(source)}
    key = stable_hash({"stage": "prepare", "v": STAGE_VERSIONS["prepare"], **settings, **inputs})

    def produce(folder: Path) -> dict:
        prepare_dataset(fmt, source, folder, name=name, overwrite=True, **options)
        data = load_prepared(folder)
        return {"name": data.name, "num_users": data.num_users, "num_items": data.num_items}

    return cache.build("prepare", key, settings, {"source": str(source), **inputs}, produce)


# ---- embed ----
def embed_stage(config: Config, dataset, cache: StageCache) -> StageOutput:
    """Item embeddings: ``data.embeddings`` when given, else ``genrec.embed.embed_items``."""
    if config.data.embeddings:
        started = time.perf_counter()
        path = Path(config.data.embeddings)
        item_ids = dataset.item_table(columns=["item_id"]).column("item_id").to_pylist()
        array, meta = load_embeddings(
            path, num_items=dataset.num_items, item_ids_hash=item_ids_sha256(item_ids)
        )
        info = {"given": True, "dimension": int(array.shape[1]), "encoder": meta.get("encoder")}
        return StageOutput(
            "embed", _embeddings_hash(path)[:16], path, True, time.perf_counter() - started, info,
            {"given": str(path)},
        )  # fmt: skip

    settings = hashed_settings(config.embed)
    inputs = {"dataset": dataset.fingerprint}
    key = stable_hash({"stage": "embed", "v": STAGE_VERSIONS["embed"], **settings, **inputs})

    def produce(folder: Path) -> dict:
        artifact = embed_items(dataset, config.embed, out_dir=folder)
        return {"dimension": int(artifact.embeddings.shape[1]), "encoder": artifact.meta.get("encoder")}

    return cache.build("embed", key, settings, inputs, produce)


def _embeddings_hash(path: Path) -> str:
    meta = read_meta(path) if path.is_dir() else {}
    if "embeddings_sha256" in meta:
        return meta["embeddings_sha256"]
    file = path / "embeddings.npy" if path.is_dir() else path
    return array_sha256(np.load(file, allow_pickle=False))


def _download(name: str) -> None:
    """Fetch a registered dataset into $GENREC_DATA_DIR (sha256-checked where published)."""
    print(f"  {name}: not under $GENREC_DATA_DIR yet, downloading (data.download = false turns this off)")
    try:
        download_dataset(name)
    except (OSError, DownloadError) as e:  # offline, refused, truncated: say what to do instead
        raise ConfigError(
            f"data: downloading {name!r} failed ({e}); set GENREC_DATA_DIR to a folder that holds it, "
            "or point data.source / data.prepared at local files"
        ) from None


# ---- tokenize ----
def tokenize_stage(config: Config, dataset, embeddings: StageOutput, cache: StageCache) -> StageOutput:
    """Semantic IDs: ``data.tokenizer`` when given, else ``genrec.tokenize.tokenize_dataset``."""
    if config.data.tokenizer:
        started = time.perf_counter()
        path = Path(config.data.tokenizer)
        ids = load_semantic_ids(path)
        if len(ids) != dataset.num_items:
            raise ConfigError(
                f"data.tokenizer: {path} gives {len(ids)} items semantic IDs but the dataset has {dataset.num_items}"
            )
        info = read_tokenizer_info(path)
        return StageOutput(
            "tokenize",
            semantic_ids_hash(ids)[:16],
            path,
            True,
            time.perf_counter() - started,
            _tok_info(info),
            {"given": str(path)},
        )

    settings = hashed_settings(config.tokenize)
    inputs = {"embeddings": _embeddings_hash(embeddings.path), "dataset": dataset.fingerprint}
    key = stable_hash({"stage": "tokenize", "v": STAGE_VERSIONS["tokenize"], **settings, **inputs})

    def produce(folder: Path) -> dict:
        tokenize_dataset(dataset.path, embeddings.path, folder, config.tokenize)
        return _tok_info(read_tokenizer_info(folder))

    return cache.build("tokenize", key, settings, inputs, produce)


def _tok_info(info: dict) -> dict:
    return {"method": info.get("method"), "level_sizes": info.get("level_sizes")}


def semantic_ids_hash(ids: np.ndarray) -> str:
    return array_sha256(np.ascontiguousarray(ids, dtype=np.int64))
