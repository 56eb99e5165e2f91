"""How far item content alone reaches cold targets: content-KNN ranking only the cold items.

For every valid/test row whose target is a cold item, the content-KNN query (the weighted mean of
the last ``history`` items' unit embeddings, decay ** j for the item j steps before the last) is
compared with the cold items only (history items excluded), and the target's rank among them is
recorded. Recall@k here is what a list that gave its first k places to content's best cold items
would find; TIGER's epsilon of 0.1 gives a top 10 one such place.

    python cold_only_bound.py PREPARED_COLD_START EMBEDDINGS.npy HISTORY DECAY > out.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from genrec.data.dataset import load_prepared

KS = (1, 2, 3, 5, 10)


def cold_ranks(dataset, emb: np.ndarray, split: str, history: int, decay: float) -> np.ndarray:
    """Rank (0 = first) of each cold-target row's target among the cold items."""
    cold = dataset.cold_items()
    is_cold = np.zeros(dataset.num_items, dtype=bool)
    is_cold[cold] = True
    rows = dataset.split(split)
    ranks = []
    for i in np.flatnonzero(is_cold[rows.targets]):
        recent = rows.history(i)[-history:][::-1]  # the last item first
        query = ((decay ** np.arange(len(recent)))[:, None] * emb[recent]).sum(0)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        scores = emb[cold] @ query
        scores[np.isin(cold, recent)] = -np.inf
        target = scores[np.searchsorted(cold, rows.targets[i])]
        ranks.append(int((scores > target).sum()))
    return np.asarray(ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared")
    parser.add_argument("embeddings")
    parser.add_argument("history", type=int)
    parser.add_argument("decay", type=float)
    args = parser.parse_args()
    dataset = load_prepared(args.prepared)
    emb = np.load(args.embeddings).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = {"dataset": dataset.name, "history": args.history, "decay": args.decay}
    for split in ("valid", "test"):
        ranks = cold_ranks(dataset, emb, split, args.history, args.decay)
        out[split] = {"cold_target_rows": len(ranks), **{f"recall@{k}": float((ranks < k).mean()) for k in KS}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
