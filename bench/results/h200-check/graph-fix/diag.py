"""The beam search alone of a finished run, on the CPU and on CUDA eagerly and graphed: test Recall@10
and NDCG@10 of the first N test users, and per batch of 1,024 users the overlap of each CUDA top 10
with the CPU's.

    python diag.py RUN_DIR PREPARED_DIR [N] [OUT_JSON]

A graphed search that keeps anything from its capture batch matches the CPU on the first batch only.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from genrec.data.dataset import load_prepared
from genrec.serve.beam import BeamSearchRecommender
from genrec.serve.run import load_run

BATCH = 1024


def beam_only(run_dir: str, device: str, graphs: bool = True) -> BeamSearchRecommender:
    """The run's model and semantic IDs with its beam size and history exclusion, no fusion."""
    base = load_run(run_dir, device=device).recommender
    return BeamSearchRecommender(
        base.model,
        base.codes_np,
        beam_size=base.beam_size,
        batch_users=BATCH,
        device=device,
        cuda_graphs=graphs,
        exclude_history=base.exclude_history,
    )


def scores(items: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    hit = items == targets[:, None]
    found = hit.any(1)
    return float(found.mean()), float((found / np.log2(np.argmax(hit, 1) + 2.0)).mean())


def main(run_dir: str, prepared: str, n: int = 4096, out: str = "diag.json") -> None:
    test = load_prepared(prepared).split("test")
    rows = np.arange(min(n, len(test.targets)))
    histories = [h[-50:] for h in test.history_list(rows)]
    targets = np.asarray(test.targets)[rows]
    cpu = beam_only(run_dir, "cpu").recommend(histories, 10)
    result: dict = {"cpu": scores(cpu, targets)}
    for name, graphs in (("cuda_eager", False), ("cuda_graphs", True)):
        start = time.perf_counter()
        rec = beam_only(run_dir, "cuda", graphs)
        items = rec.recommend(histories, 10)
        shared = [len(set(a) & set(b)) / 10 for a, b in zip(items, cpu, strict=True)]
        overlap = [float(np.mean(shared[i : i + BATCH])) for i in range(0, len(rows), BATCH)]
        searches = list(rec._graphed.values())
        result[name] = {
            "score": scores(items, targets),
            "overlap_per_batch": overlap,
            "secs": time.perf_counter() - start,
            "fallback": searches[0].fallback_reason if searches else "n/a",
        }
        print(name, result[name], flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]), *sys.argv[4:5])
