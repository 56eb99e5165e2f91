"""Items held back from a prepared dataset, to be added to a run trained without them.

``write_held_back(SOURCE, OUT, count=100, seed=0)`` (``genrec data hold-back``) writes what an
"items that arrive after training" experiment needs:

```
OUT/                          SOURCE without the held-back items: their rows leave the item table
                              (the others keep their order, re-indexed) and every interaction with
                              them goes; a user left with fewer than 3 interactions is dropped. A
                              cold-start source stays one, its other cold items listed explicitly.
OUT/held_back/items.parquet   the held-back items' rows of SOURCE's item table (no item_idx): the
                              table `genrec add-items` reads
OUT/held_back/eval/           a prepared dataset of SOURCE's users whose test target is held back,
                              with their whole sequences and SOURCE's item table: score a run on it
                              with `genrec eval --run R --data OUT/held_back/eval --items-by-id`
OUT/held_back/held_back.json  source, its fingerprint, count, seed, the chosen item ids
```

The items are drawn (seeded) from SOURCE's cold items where it has them: those have no training
interactions anyway, so holding them back removes only validation and test interactions and the
training data stays what the cold-start protocol makes it. Without cold items they are drawn from
every item (and are the evaluation dataset's cold items). Everything is written under a temporary
name and renamed into place at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.data.cold_start import ColdStart
from genrec.data.dataset import PreparedDataset, load_prepared
from genrec.data.errors import DataError
from genrec.data.split import LeaveOneOut
from genrec.data.writer import check_destination, write_prepared_arrays
from genrec.files import replace_dir

HELD_BACK_DIR = "held_back"
COPIED_MANIFEST_KEYS = ("timestamp_unit", "filtered", "items_without_text", "notes", "cold_start")


def choose_held_back(dataset, count: int, seed: int) -> np.ndarray:
    """int64 [count] sorted: the held-back item indices (among the cold items where there are any)."""
    cold = dataset.cold_items()
    pool = cold if len(cold) else np.arange(dataset.num_items, dtype=np.int64)
    if not 0 < count < len(pool) or (not len(cold) and count >= dataset.num_items - 1):
        where = "cold items" if len(cold) else "items"
        raise DataError(f"{dataset.path}: cannot hold back {count} of its {len(pool)} {where}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=count, replace=False)).astype(np.int64)


def write_held_back(
    source, out_dir: str | Path, *, count: int = 100, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write SOURCE (a path or PreparedDataset) without ``count`` seeded items, and the held-back
    items' table and test rows (see the module doc). Returns ``out_dir``."""
    dataset = source if isinstance(source, PreparedDataset) else load_prepared(source)
    out_dir = Path(out_dir)
    if out_dir.resolve() == dataset.path.resolve():
        raise DataError(f"{out_dir}: the held-back dataset must go to another folder than its source")
    check_destination(out_dir, overwrite)
    held = choose_held_back(dataset, count, seed)
    is_held = np.zeros(dataset.num_items, dtype=bool)
    is_held[held] = True
    timestamps = dataset.interactions().column("timestamp").to_numpy()
    user_ids = dataset.user_table().column("user_id").to_pylist()
    item_table = dataset.item_table()
    item_ids = item_table.column("item_id").to_pylist()
    kept = _kept_dataset(dataset, is_held, timestamps, user_ids, item_table, count, seed)
    held_back = kept["extra_manifest"]["held_back"]
    evaluation = _evaluation_dataset(
        dataset, held, is_held, timestamps, user_ids, item_table, count, held_back
    )
    held_items = item_table.take(pa.array(held)).drop_columns(["item_idx"])
    tmp = out_dir.with_name(f".{out_dir.name}.held-back-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_prepared_arrays(tmp, **kept)
        folder = tmp / HELD_BACK_DIR
        folder.mkdir()
        pq.write_table(held_items, folder / "items.parquet")
        write_prepared_arrays(folder / "eval", **evaluation)
        info = {
            **held_back,
            "item_ids": [item_ids[i] for i in held],
            "eval_users": len(evaluation["user_ids"]),
        }
        (folder / "held_back.json").write_text(json.dumps(info, indent=1) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _kept_dataset(dataset, is_held, timestamps, user_ids, item_table, count: int, seed: int) -> dict:
    """``write_prepared_arrays`` arguments for SOURCE without the held-back items: their rows leave
    the item table (the others re-indexed), their interactions go, users left too short are dropped."""
    new_index = np.cumsum(~is_held) - 1  # old item index -> new (for the items that stay)
    items = dataset.items
    users = np.repeat(np.arange(dataset.num_users), np.diff(dataset.offsets))
    keep = ~is_held[items]
    kept_per_user = np.bincount(users[keep], minlength=dataset.num_users)
    alive = kept_per_user >= LeaveOneOut.min_length
    keep &= alive[users]
    kept_offsets = np.concatenate([[0], np.cumsum(kept_per_user[alive])]).astype(np.int64)
    stay = pa.array(np.flatnonzero(~is_held))
    kept_items = item_table.take(stay)
    kept_items = kept_items.set_column(
        kept_items.schema.get_field_index("item_idx"),
        "item_idx",
        pa.array(np.arange(kept_items.num_rows, dtype=np.int64)),
    )

    manifest = dataset.manifest
    extra = {k: manifest[k] for k in COPIED_MANIFEST_KEYS if k in manifest}
    scheme = dataset._scheme
    if isinstance(scheme, ColdStart):
        cold = new_index[scheme.cold_items[~is_held[scheme.cold_items]]]
        derived = ColdStart(
            kept_items.num_rows,
            scheme.fraction,
            scheme.seed,
            scheme.users_dropped + int((~alive).sum()),
            cold,
        )
        extra["split"] = derived.describe(kept_offsets)
    extra["held_back"] = {
        "source": str(dataset.path),
        "source_fingerprint": dataset.fingerprint,
        "count": int(count),
        "seed": int(seed),
        "interactions_removed": int((~keep).sum()),
        "users_dropped": int((~alive).sum()),
    }
    return {
        "user_idx": (np.cumsum(alive) - 1)[users[keep]],
        "item_idx": new_index[items[keep]],
        "timestamps": timestamps[keep],
        "user_ids": [str(u) for u, a in zip(user_ids, alive, strict=True) if a],
        "item_table": kept_items,
        "name": f"{dataset.name}-held-back{count}",
        "source_format": manifest.get("source_format", "prepared"),
        "sources": manifest.get("sources", []),
        "options": manifest.get("options", {}),
        "skipped": manifest.get("skipped", {}),
        "item_text_columns": dataset.item_text_columns,
        "extra_manifest": extra,
    }


def _evaluation_dataset(
    dataset, held, is_held, timestamps, user_ids, item_table, count: int, held_back
) -> dict:
    """``write_prepared_arrays`` arguments for the evaluation dataset: the users whose test target is
    held back, sequences and items as in SOURCE, its cold items (else the held-back ones) cold."""
    scheme = dataset._scheme
    test = dataset.split("test")
    eval_users = test.users[is_held[test.targets]]
    eval_lengths = np.diff(dataset.offsets)[eval_users]
    take = np.concatenate(
        [np.arange(dataset.offsets[u], dataset.offsets[u + 1]) for u in eval_users] or [np.zeros(0, np.int64)]
    )
    eval_cold = scheme.cold_items if isinstance(scheme, ColdStart) else held
    eval_scheme = ColdStart(
        dataset.num_items, getattr(scheme, "fraction", 0.1), getattr(scheme, "seed", 0), 0, eval_cold
    )
    eval_offsets = np.concatenate([[0], np.cumsum(eval_lengths)]).astype(np.int64)
    return {
        "user_idx": np.repeat(np.arange(len(eval_users)), eval_lengths),
        "item_idx": dataset.items[take],
        "timestamps": timestamps[take],
        "user_ids": [str(user_ids[u]) for u in eval_users],
        "item_table": item_table,
        "name": f"{dataset.name}-held-back{count}-eval",
        "source_format": dataset.manifest.get("source_format", "prepared"),
        "item_text_columns": dataset.item_text_columns,
        "extra_manifest": {
            "split": eval_scheme.describe(eval_offsets),
            "held_back": {**held_back, "role": "the users whose test target is held back"},
        },
    }
