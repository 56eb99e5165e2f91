"""The cold-start protocol: a seeded share of the items loses every training interaction.

:func:`write_cold_start` derives a prepared dataset from another: a ``fraction`` of the items
(default 10%), chosen by a seeded hash of their indices, become *cold*. Their interactions are
removed from every user's training part (all positions before the last two), so no model,
popularity count or collaborative embedding learned from the training part ever sees them;
validation and test keep them as targets (and the test history keeps the validation item, as
leave-one-out does). The item table is unchanged, so embeddings, semantic IDs and the decoding
trie still cover every item. A user whose training part held only cold items has no history
left and is dropped (counted in the manifest).

The derived directory's manifest names the scheme ``cold_start``; loading it gives a
:class:`ColdStart` split (leave-one-out on the stored sequences) whose :attr:`ColdStart.cold_items`
the evaluator uses to report metrics on cold-target users separately. The cold set is
recomputed from (num_items, fraction, seed) and checked against the sha256 the manifest holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from genrec.data.dataset import PreparedDataset, load_prepared
from genrec.data.errors import DataError, PreparedDatasetError
from genrec.data.split import SCHEMES, LeaveOneOut
from genrec.data.writer import write_prepared_arrays

DEFAULT_FRACTION = 0.1
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a fixed, well-mixed hash of uint64 values (stable across numpy versions)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def select_cold_items(num_items: int, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> np.ndarray:
    """The cold items: the ``round(fraction * num_items)`` (at least one) item indices with the
    smallest seeded hash, sorted. A pure function of its arguments, on any machine."""
    if not 0 < fraction < 1:
        raise ValueError(f"cold-start fraction must be in (0, 1), got {fraction}")
    if num_items < 2:
        raise ValueError(f"cold start needs at least 2 items, got {num_items}")
    count = min(num_items - 1, max(1, round(fraction * num_items)))
    keys = _splitmix64(np.arange(num_items, dtype=np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64)))
    return np.sort(np.argsort(keys, kind="stable")[:count]).astype(np.int64)


def cold_items_sha256(cold: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(cold, dtype="<i8").tobytes()).hexdigest()


def cold_start_mask(offsets: np.ndarray, items: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """bool [num_interactions]: False for interactions with cold items in a user's training part."""
    lengths = np.diff(offsets)
    position = np.arange(len(items)) - np.repeat(offsets[:-1], lengths)
    training = position < np.repeat(lengths - 2, lengths)
    is_cold = np.zeros(int(items.max(initial=-1)) + 1 if len(items) else 0, dtype=bool)
    is_cold[cold[cold < len(is_cold)]] = True
    return ~(training & is_cold[items])


class ColdStart(LeaveOneOut):
    """Leave-one-out over sequences whose training parts lack the cold items (see the module doc)."""

    name: ClassVar[str] = "cold_start"

    def __init__(
        self,
        num_items: int,
        fraction: float = DEFAULT_FRACTION,
        seed: int = 0,
        users_dropped: int = 0,
        cold_items: np.ndarray | None = None,
    ):
        """``cold_items``: an explicit set (a dataset derived from a cold-start one, e.g. by
        genrec.data.hold_back, whose item indices moved); default: the seeded selection."""
        self.num_items, self.fraction, self.seed = int(num_items), float(fraction), int(seed)
        self.users_dropped = int(users_dropped)
        self.explicit = cold_items is not None
        if cold_items is None:
            self.cold_items = select_cold_items(self.num_items, self.fraction, self.seed)
        else:
            cold = np.unique(np.asarray(cold_items, dtype=np.int64))
            if len(cold) and (cold[0] < 0 or cold[-1] >= self.num_items):
                raise ValueError(f"cold items must be item indices in 0..{self.num_items - 1}")
            self.cold_items = cold

    @classmethod
    def from_config(cls, config: dict) -> ColdStart:
        missing = [
            k for k in ("num_items", "cold_fraction", "cold_seed", "cold_items_sha256") if k not in config
        ]
        if missing:
            raise PreparedDatasetError(
                f"manifest.json: split {cls.name!r} lacks field(s) {', '.join(missing)}"
            )
        explicit = config.get("cold_items")
        if explicit is not None and not (
            isinstance(explicit, list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in explicit)
        ):
            raise PreparedDatasetError(
                "manifest.json: split field 'cold_items' must be a list of item indices"
            )
        try:
            scheme = cls(
                config["num_items"],
                config["cold_fraction"],
                config["cold_seed"],
                config.get("users_dropped", 0),
                None if explicit is None else np.asarray(explicit, dtype=np.int64),
            )
        except ValueError as e:
            raise PreparedDatasetError(f"manifest.json: split field 'cold_items': {e}") from None
        if explicit is not None and len(scheme.cold_items) != len(explicit):
            raise PreparedDatasetError("manifest.json: split field 'cold_items' lists an item twice")
        if cold_items_sha256(scheme.cold_items) != config["cold_items_sha256"]:
            if explicit is not None:
                raise PreparedDatasetError(
                    "manifest.json: split field 'cold_items_sha256' does not match the listed 'cold_items'"
                )
            raise PreparedDatasetError(
                "manifest.json: split field 'cold_items_sha256' does not match the cold items this genrec selects for "
                f"num_items={scheme.num_items}, cold_fraction={scheme.fraction}, cold_seed={scheme.seed}; "
                "derive the cold-start dataset again"
            )
        return scheme

    def describe(self, offsets: np.ndarray) -> dict:
        return {
            **super().describe(offsets),
            "scheme": self.name,
            "train": "each user's sequence minus its last two items, cold items removed",
            "valid": "second-to-last item (cold items included), history before it",
            "test": "last item (cold items included), history before it",
            "num_items": self.num_items,
            "cold_fraction": self.fraction,
            "cold_seed": self.seed,
            "num_cold_items": len(self.cold_items),
            "cold_items_sha256": cold_items_sha256(self.cold_items),
            "users_dropped": self.users_dropped,
            **({"cold_items": self.cold_items.tolist()} if self.explicit else {}),
        }


SCHEMES[ColdStart.name] = ColdStart


def write_cold_start(
    source,
    out_dir: str | Path,
    *,
    fraction: float = DEFAULT_FRACTION,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the cold-start version of prepared dataset ``source`` (a path or PreparedDataset) to ``out_dir``."""

    dataset = source if isinstance(source, PreparedDataset) else load_prepared(source)
    scheme_name = dataset.manifest.get("split", {}).get("scheme", LeaveOneOut.name)
    if scheme_name != LeaveOneOut.name:
        raise DataError(
            f"{dataset.path}: cold start applies to a leave-one-out dataset, this one is split by {scheme_name!r}"
        )
    if Path(out_dir).resolve() == dataset.path.resolve():
        raise DataError(f"{out_dir}: the cold-start dataset must go to another folder than its source")
    scheme = ColdStart(dataset.num_items, fraction, seed)
    offsets, items = dataset.offsets, dataset.items
    keep = cold_start_mask(offsets, items, scheme.cold_items)
    users = np.repeat(np.arange(dataset.num_users), np.diff(offsets))
    kept_per_user = np.bincount(users[keep], minlength=dataset.num_users)
    alive = kept_per_user >= LeaveOneOut.min_length  # at least one training item left
    keep &= alive[users]
    new_index = np.cumsum(alive) - 1
    interactions = dataset.interactions()
    timestamps = interactions.column("timestamp").to_numpy()
    user_ids = [
        str(u) for u, a in zip(dataset.user_table().column("user_id").to_pylist(), alive, strict=True) if a
    ]
    scheme.users_dropped = int((~alive).sum())
    kept_offsets = np.concatenate([[0], np.cumsum(kept_per_user[alive])]).astype(np.int64)
    manifest = dataset.manifest
    cold_info = {
        "source": str(dataset.path),
        "source_fingerprint": dataset.fingerprint,
        "fraction": scheme.fraction,
        "seed": scheme.seed,
        "cold_items": len(scheme.cold_items),
        "interactions_removed": int((~keep).sum()),
        "users_dropped": scheme.users_dropped,
    }
    return write_prepared_arrays(
        out_dir,
        user_idx=new_index[users[keep]],
        item_idx=items[keep],
        timestamps=timestamps[keep],
        user_ids=user_ids,
        item_table=dataset.item_table(),
        name=f"{dataset.name}-cold{round(100 * scheme.fraction)}",
        source_format=manifest.get("source_format", "prepared"),
        sources=manifest.get("sources", []),
        options=manifest.get("options", {}),
        skipped=manifest.get("skipped", {}),
        item_text_columns=dataset.item_text_columns,
        extra_manifest={
            **{
                k: manifest[k]
                for k in ("timestamp_unit", "filtered", "items_without_text", "notes")
                if k in manifest
            },
            "split": scheme.describe(kept_offsets),
            "cold_start": cold_info,
        },
        overwrite=overwrite,
    )
