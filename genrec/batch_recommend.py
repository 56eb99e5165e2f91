"""Batch inference: the top K of every user of a run's dataset (or of a list of users) into one
Parquet file, in resumable batches (``genrec recommend --run R --users all --out recs.parquet``).

The lists are the test stage's: the run's recommender (genrec.serve.run.load_run) with the test's
batch size and precision, each user's test history (all but the last item) cut to the run's
``train.max_history``, and lists as long as the test asks for (max of ``eval.ks``) cut to K. With
the test's batch size and all users, each batch is exactly one of the test's batches, so items
and scores equal the ones the test scored.

Finished batches are written as ``part-NNNNN.parquet`` files into ``<out>.parts/`` beside the
output, with a ``manifest.json`` naming what they were computed from (run, model and semantic-ID
fingerprints, the users' sha256, K, batch size, ...). A restart with the same arguments skips the
parts already there; a restart with other arguments is refused; ``restart=True`` starts over. The parts are then concatenated into the output through a temporary file and a
rename, and the staging folder is removed.

Output rows (one per user and rank; slots a list leaves empty are not written): ``user_idx``,
``user_id``, ``rank`` (1 = best), ``item_idx``, ``item_id``, ``score`` (float32, the recommender's
score: see genrec.serve and genrec.fusion).

numpy and pyarrow only (no polars, no faiss): this runs on the GPU machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.batch_users import BatchRecommendError, select_rows, user_ids_of
from genrec.data import load_prepared
from genrec.eval.by_item_id import ItemIdMapped, item_index_map
from genrec.faults import fault_point
from genrec.files import atomic_path, atomic_write_text, file_sha256
from genrec.progress import progress_bar
from genrec.run_format import RunError
from genrec.serve.run import load_run
from genrec.train.recipe import autocast_dtype

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
_PART = re.compile(r"part-(\d{5,})\.parquet")
SCHEMA = pa.schema(
    [
        ("user_idx", pa.int64()),
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_idx", pa.int64()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
    ]
)


@dataclass
class BatchSummary:
    out: Path
    users: int
    batches: int
    computed: list[int] = field(default_factory=list)  # batch numbers decoded by this call
    skipped: list[int] = field(default_factory=list)  # batch numbers a previous call had finished
    computed_users: int = 0
    seconds: float = 0.0  # wall clock of this call's decoding

    @property
    def users_per_second(self) -> float | None:
        return None if self.seconds <= 0 else self.computed_users / self.seconds


def staging_dir(out: Path) -> Path:
    """Where the finished batches of ``out`` wait: ``<out>.parts`` beside it."""
    return out.with_name(out.name + ".parts")


# ---- which users ------------------------------------------------------------------------------


# ---- what the parts were computed from --------------------------------------------------------


def build_manifest(run_dir: Path, info: dict, dataset, user_idx: np.ndarray, decoding: dict) -> dict:
    """The identity of a batch job: a restart may reuse parts only where all of this is equal."""
    return {
        "format_version": MANIFEST_VERSION,
        "run": str(Path(run_dir).resolve()),
        "model_sha256": file_sha256(run_dir / "model.safetensors", missing_ok=True),
        "semantic_ids_sha256": file_sha256(run_dir / "tokenizer" / "semantic_ids.npy", missing_ok=True),
        "cooccurrence_sha256": file_sha256(run_dir / "cooccurrence.safetensors", missing_ok=True),
        "similarity_sha256": file_sha256(run_dir / "similarity.safetensors", missing_ok=True),
        "fusion": (info.get("fusion") or {}).get("weights"),
        "model_config": info["config"]["model"],
        "dataset_fingerprint": dataset.fingerprint,
        "users": len(user_idx),
        "users_sha256": hashlib.sha256(np.ascontiguousarray(user_idx, dtype="<i8").tobytes()).hexdigest(),
        **decoding,
    }


def _check_staging(folder: Path, manifest: dict, restart: bool) -> None:
    """Make ``folder`` hold only parts of ``manifest``'s job: reuse them, refuse a folder of another
    job, or (``restart``) empty it; never touch files genrec did not write there."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise BatchRecommendError(f"{folder} is in the way of the staging folder and is not a folder")
    ours = [p for p in folder.iterdir() if p.name == MANIFEST or _ours(p.name)]
    foreign = sorted(p.name for p in folder.iterdir() if p not in ours)
    if foreign:
        raise BatchRecommendError(
            f"{folder} holds files genrec did not write ({', '.join(foreign[:3])}); move them or choose another --out"
        )
    saved_path = folder / MANIFEST
    if not saved_path.is_file():  # a start that died before its manifest: nothing reusable
        saved = None
    else:
        try:
            saved = json.loads(saved_path.read_text())
        except json.JSONDecodeError:
            saved = None
    if saved == manifest and not restart:
        return
    if not restart and saved is not None:
        differ = sorted(k for k in set(saved) | set(manifest) if saved.get(k) != manifest.get(k))
        raise BatchRecommendError(
            f"{folder} holds batches of another job (different {', '.join(differ)}; see {saved_path}); "
            "rerun with the same arguments to resume, or pass --restart to start over"
        )
    for p in ours:
        p.unlink()


def _ours(name: str) -> bool:
    """A part, or a temporary file of a part or of the manifest that a kill left behind."""
    temporary = name.startswith(".") and (name.endswith(".tmp") or name.startswith(f".{MANIFEST}."))
    return bool(_PART.fullmatch(name)) or temporary


# ---- decoding ---------------------------------------------------------------------------------


def _write_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def batch_table(
    user_idx: np.ndarray, user_ids: pa.Array, items: np.ndarray, scores: np.ndarray, item_ids: pa.Array
) -> pa.Table:
    """One row per user and filled slot of ``items`` [U, K] (-1 = empty), in user then rank order."""
    filled = items >= 0
    r, c = np.nonzero(filled)
    return pa.table(
        {
            "user_idx": pa.array(user_idx[r], pa.int64()),
            "user_id": user_ids.take(pa.array(user_idx[r])),
            "rank": pa.array(c + 1, pa.int32()),
            "item_idx": pa.array(items[r, c], pa.int64()),
            "item_id": item_ids.take(pa.array(items[r, c])),
            "score": pa.array(scores[r, c].astype(np.float32), pa.float32()),
        },
        schema=SCHEMA,
    )


def _check_arguments(k: int, batch_users: int | None, out: Path) -> None:
    if k < 1:
        raise BatchRecommendError(f"k = {k} is invalid: ask for at least one recommendation")
    if batch_users is not None and batch_users < 1:
        raise BatchRecommendError(f"batch size {batch_users} is invalid: it must be >= 1")
    if out.is_dir():
        raise BatchRecommendError(f"{out} is a folder; --out names the parquet file to write")
    if not out.parent.is_dir():
        raise BatchRecommendError(f"{out.parent} does not exist (the folder --out is written into)")


def _decoding(recommender, config, k: int, fetch: int) -> dict:
    """How the lists are computed: the manifest's part that a restart must match."""
    return {
        "k": k,
        "fetch": fetch,
        "batch_users": recommender.batch_users,
        "beam_size": getattr(recommender, "beam_size", None),
        "max_history": config.train.max_history,
        "device": recommender.device.type,
        "amp_dtype": None if recommender.amp_dtype is None else str(recommender.amp_dtype),
    }


def recommend_to_parquet(
    run_dir: str | Path,
    users: str | Path,
    out: str | Path,
    *,
    k: int = 10,
    batch_users: int | None = None,
    device: str = "auto",
    beam_size: int | None = None,
    dataset_dir: str | Path | None = None,
    restart: bool = False,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Write the top ``k`` of each user (``"all"`` or a users file) of a run's dataset to ``out``.

    ``batch_users`` defaults to the run's ``eval.batch_users`` (then every batch of all users is
    one of the test's batches); ``dataset_dir`` to the prepared folder the run recorded (it must be
    the same data: its fingerprint is checked). ``on_batch(b)`` is called before batch b decodes.
    """
    run_dir, out = Path(run_dir), Path(out)
    _check_arguments(k, batch_users, out)
    tested = open_tested_run(
        run_dir, device=device, beam_size=beam_size, batch_users=batch_users, dataset_dir=dataset_dir
    )
    config, dataset, recommender = tested.config, tested.dataset, tested.recommender
    rows = select_rows(dataset, users)
    batch = recommender.batch_users
    # The test asks for max(eval.ks) items; a list of k is a prefix of that same computation.
    fetch = max(k, max(config.eval.ks))
    empty = np.zeros(0, dtype=np.int64)
    try:
        recommender.topk_ranges(empty, empty, empty, fetch)  # refuses a k the beam cannot hold
    except ValueError as e:
        raise BatchRecommendError(f"--k {k}: {e}") from None

    test = dataset.split("test")
    user_idx = test.users[rows]
    manifest = build_manifest(run_dir, tested.info, dataset, user_idx, _decoding(recommender, config, k, fetch))
    folder = staging_dir(out)
    _check_staging(folder, manifest, restart)

    # Validated: from here on, files are written.
    folder.mkdir(exist_ok=True)
    if not (folder / MANIFEST).is_file():
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    num_batches = -(-len(rows) // batch)
    summary = BatchSummary(out=out, users=len(rows), batches=num_batches)
    user_ids = pa.array(user_ids_of(dataset), pa.string())
    item_ids = pa.array(tested.item_ids, pa.string())
    max_history = config.train.max_history
    started = time.perf_counter()
    with progress_bar(f"recommend {run_dir.name}", len(rows), progress, unit="users") as advance:
        for b in range(num_batches):
            lo, hi = b * batch, min(len(rows), (b + 1) * batch)
            part = folder / f"part-{b:05d}.parquet"
            if part.is_file():
                summary.skipped.append(b)
                advance(hi - lo)
                continue
            if on_batch is not None:
                on_batch(b)
            # The evaluator's histories: the test history, its most recent max_history items.
            histories = [h[len(h) - min(len(h), max_history) :] for h in test.history_list(rows[lo:hi])]
            items, scores = recommender.topk(histories, fetch, user_idx[lo:hi])
            _write_atomic(batch_table(user_idx[lo:hi], user_ids, items[:, :k], scores[:, :k], item_ids), part)
            summary.computed.append(b)
            summary.computed_users += hi - lo
            advance(hi - lo)
            fault_point("recommend-part-written")
    summary.seconds = time.perf_counter() - started
    _concatenate(folder, num_batches, user_idx, batch, out)
    return summary


@dataclass
class OpenedRun:
    """A finished run opened the way its test stage decodes: the recommender with the test's batch
    size and precision, the run's dataset, config and run.json."""

    recommender: object
    dataset: object
    config: object
    info: dict
    item_ids: list[str]


def open_tested_run(
    run_dir: str | Path,
    *,
    device: str = "auto",
    beam_size: int | None = None,
    batch_users: int | None = None,
    dataset_dir: str | Path | None = None,
    items_by_id: bool = False,
) -> OpenedRun:
    """genrec.serve.run.load_run, set up as genrec.pipeline.run's test stage sets up its recommender
    (eval.batch_users unless ``batch_users``, the training precision's autocast), with the run's
    dataset (checked against the fingerprint run.json records). With ``items_by_id``,
    ``dataset_dir`` may be another dataset: its items are matched to the run's by id
    (genrec.eval.by_item_id) and the recommender speaks its item indices."""

    run_dir = Path(run_dir)
    if items_by_id and dataset_dir is None:
        raise BatchRecommendError("matching items by id needs the dataset to score (--data)")
    rec = load_run(run_dir, device=device, beam_size=beam_size)
    info, config = rec.info, rec.config
    if items_by_id:
        try:
            dataset = load_prepared(dataset_dir)
        except (OSError, ValueError) as e:
            raise BatchRecommendError(f"{dataset_dir}: cannot load the dataset: {e}") from None
    else:
        dataset = run_dataset(run_dir, info, dataset_dir, load_prepared, RunError)
    recommender = rec.recommender
    recommender.batch_users = int(batch_users or config.eval.batch_users)
    recommender.amp_dtype = autocast_dtype(config, recommender.device)
    if items_by_id:
        data_ids = dataset.item_table(["item_id"]).column("item_id").to_pylist()
        to_run = item_index_map(rec.item_ids, data_ids, str(dataset.path))
        mapped = ItemIdMapped(recommender, to_run, rec.num_items)
        mapped.beam_size = getattr(recommender, "beam_size", None)
        return OpenedRun(mapped, dataset, config, info, [str(i) for i in data_ids])
    return OpenedRun(recommender, dataset, config, info, rec.item_ids)


def run_dataset(run_dir: Path, info: dict, dataset_dir, load_prepared, run_error):
    """The prepared dataset the run was trained and tested on (its recorded folder, or the one
    given), checked against the run's recorded fingerprint."""
    recorded = (info.get("dataset") or {}).get("path")
    path = Path(dataset_dir) if dataset_dir is not None else (Path(recorded) if recorded else None)
    if path is None:
        raise BatchRecommendError(f"{run_dir / 'run.json'} names no dataset folder; pass --dataset")
    try:
        dataset = load_prepared(path)
    except (OSError, ValueError) as e:
        hint = "" if dataset_dir is not None else " (the folder run.json records; pass --dataset if it moved)"
        raise BatchRecommendError(f"{path}: cannot load the run's dataset{hint}: {e}") from None
    expected = (info.get("inputs") or {}).get("dataset")
    if expected is not None and dataset.fingerprint != expected:
        raise BatchRecommendError(
            f"{path} is not the dataset run {run_dir} was trained on (fingerprint {dataset.fingerprint[:16]}..., "
            f"run.json records {str(expected)[:16]}...)"
        )
    return dataset


def _concatenate(folder: Path, num_batches: int, user_idx: np.ndarray, batch: int, out: Path) -> None:
    """The parts, in batch order, into ``out`` (a temporary file renamed into place), each checked to
    hold its batch's users; then the staging folder is removed."""
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for b in range(num_batches):
            part = folder / f"part-{b:05d}.parquet"
            table = pq.read_table(part, schema=SCHEMA)
            expected = user_idx[b * batch : (b + 1) * batch]
            got = table.column("user_idx").to_numpy()
            if not np.isin(got, expected).all():
                raise BatchRecommendError(f"{part} holds users of another batch; pass --restart")
            writer.write_table(table)
    fault_point("recommend-concatenated")
    for p in folder.iterdir():
        if p.name == MANIFEST or _ours(p.name):
            p.unlink()
    folder.rmdir()
