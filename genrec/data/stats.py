"""Describing a prepared dataset: counts, sequence lengths, density and popularity skew (numpy only)."""

from __future__ import annotations

import numpy as np

from genrec.eval.metrics import gini

_PERCENTILES = (5, 25, 50, 75, 95, 99)


def distribution(values: np.ndarray) -> dict:
    """min, mean, percentiles and max of integer counts."""
    values = np.asarray(values)
    if len(values) == 0:
        return {}
    out = {"min": int(values.min()), "mean": float(values.mean())}
    out.update({f"p{q}": float(np.percentile(values, q)) for q in _PERCENTILES})
    out["max"] = int(values.max())
    return out


def histogram(values: np.ndarray, edges: tuple[int, ...]) -> list[dict]:
    """Counts of values in [edges[i], edges[i+1]) plus a last open bucket ``>= edges[-1]``."""
    values = np.asarray(values)
    rows = []
    for lo, hi in zip(edges, (*edges[1:], None), strict=True):
        mask = values >= lo if hi is None else (values >= lo) & (values < hi)
        label = f">={lo}" if hi is None else (f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}")
        rows.append({"range": label, "count": int(mask.sum())})
    return rows


def dataset_stats(dataset) -> dict:
    """Everything ``genrec data stats`` shows, as a JSON-ready dict."""
    lengths = dataset.sequence_lengths
    counts = np.bincount(dataset.items, minlength=dataset.num_items)
    train_counts = dataset.train_item_counts()
    ordered = np.sort(counts)[::-1]
    total = max(int(counts.sum()), 1)

    def share_of_top(fraction: float) -> float:
        n = max(1, round(fraction * len(ordered)))
        return float(ordered[:n].sum() / total)

    users, items = dataset.num_users, dataset.num_items
    m = dataset.manifest
    return {
        "name": dataset.name,
        "path": str(dataset.path),
        "source_format": m.get("source_format"),
        "num_users": users,
        "num_items": items,
        "num_interactions": dataset.num_interactions,
        "density": dataset.num_interactions / (users * items) if users and items else 0.0,
        "sequence_length": distribution(lengths),
        "sequence_length_histogram": histogram(lengths, (3, 5, 10, 20, 50, 100, 200)),
        "item_interactions": distribution(counts),
        "item_popularity": {
            "gini": gini(counts),
            "share_top_1pct_items": share_of_top(0.01),
            "share_top_10pct_items": share_of_top(0.10),
            "items_with_fewer_than_5": int((counts < 5).sum()),
            "items_unseen_in_training": int((train_counts == 0).sum()),
        },
        "repeat_interactions": int(dataset.num_interactions - _distinct_pairs(dataset)),
        "split": m.get("split", {}),
        "item_text_columns": dataset.item_text_columns,
        "items_without_text": m.get("items_without_text"),
        "skipped": m.get("skipped", {}),
        "filtered": m.get("filtered", {}),
        **({"cold_items": cold_item_stats(dataset)} if len(dataset.cold_items()) else {}),
    }


def cold_item_stats(dataset) -> dict:
    """Per split of a cold-start dataset: the share of rows whose target is cold, whose history
    holds a cold item, and whose history ends with one (validation histories never do: cold items
    have no training interactions; a test history ends with its validation item)."""
    cold = np.zeros(dataset.num_items, dtype=bool)
    cold[dataset.cold_items()] = True
    out = {"num_cold_items": len(dataset.cold_items())}
    for name in ("valid", "test"):
        split = dataset.split(name)
        rows = len(split.users)
        # A history holds a cold item iff the count of cold items before its end exceeds the count before its start.
        before = np.concatenate([[0], np.cumsum(cold[split.items])])
        holds = before[split.ends] > before[split.starts]
        ends_cold = (split.ends > split.starts) & cold[split.items[np.maximum(split.ends - 1, 0)]]
        out[name] = {
            "rows": rows,
            "cold_target": float(cold[split.targets].mean()) if rows else 0.0,
            "history_holds_cold_item": float(holds.mean()) if rows else 0.0,
            "history_ends_with_cold_item": float(ends_cold.mean()) if rows else 0.0,
        }
    return out


def _distinct_pairs(dataset) -> int:
    """Distinct (user, item) pairs: interactions minus this are repeats of an item by its user."""
    users = np.repeat(np.arange(dataset.num_users, dtype=np.int64), dataset.sequence_lengths)
    return len(np.unique(users * dataset.num_items + dataset.items))
