"""``genrec bench cold``: a finished cold-start run's test lists at several caps epsilon on the share
of cold items in a top K (TIGER's epsilon), overall and for cold-target and warm-target users.

The test's candidates (genrec.fusion.Candidates: the beam's, the item head's, co-occurrence's and
the cold sources') are collected once; each epsilon re-ranks them with the run's own fusion weights
(chosen on validation) and only the cap changed, and genrec.eval scores the lists exactly as the
test does. Epsilon 0 is the list without cold items.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from genrec.bench.results import environment, git_sha, write_results
from genrec.data import load_prepared
from genrec.eval import evaluate
from genrec.files import atomic_write_text, save_figure
from genrec.report.plots import _pyplot
from genrec.run_format import RunError
from genrec.serve.run import load_run

EPSILONS = (0.0, 0.1, 0.2, 0.3, 0.5)
KEYS = (
    "recall@10",
    "ndcg@10",
    "cold_target/recall@10",
    "cold_target/ndcg@10",
    "warm_target/recall@10",
    "warm_target/ndcg@10",
)


class _Replay:
    """genrec.eval's recommender protocol over precomputed lists [R, k], served in row order."""

    def __init__(self, name: str, lists: np.ndarray) -> None:
        self.name, self.lists, self.next = name, lists, 0

    def recommend(self, histories, k: int, users=None) -> np.ndarray:
        lo, self.next = self.next, self.next + len(histories)
        if self.next > len(self.lists):
            raise ValueError(f"{self.name}: asked for more rows than were collected ({len(self.lists)})")
        return self.lists[lo : self.next, :k]


def run_cold_ablation(
    run_dir: Path, out_dir: Path, epsilons=EPSILONS, device: str = "cpu", progress: bool = True
) -> dict:
    """Score ``run_dir``'s test lists at each epsilon; write cold.json/.csv/.png and the per-user files
    of each epsilon (for genrec report's paired tests) under ``out_dir``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    loaded = load_run(run_dir, device=device)
    info = loaded.info
    rec = loaded.recommender
    fusion = getattr(rec, "fusion", None)
    if fusion is None or not fusion.cold_candidates or rec.model.cold_items() is None:
        raise RunError(f"{run_dir}: the run has no cold candidates (model.content_vectors and model.cold_candidates)")
    config = info["config"]
    dataset = load_prepared(info["dataset"]["path"])
    if not len(dataset.cold_items()):
        raise RunError(f"{run_dir}: its dataset {dataset.path} is not a cold-start split (data.cold_start)")
    ks = tuple(config["eval"]["ks"])
    options = dict(ks=ks, batch_size=config["eval"]["batch_users"], max_history=config["train"]["max_history"])
    k = max(ks)
    rec.collect_candidates = []
    final = evaluate(rec, dataset, "test", progress=progress, **options)
    candidates = rec.collect_candidates
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    tuned = fusion.weights
    for eps in sorted({*epsilons, tuned.cold_epsilon}):
        w = replace(tuned, cold_epsilon=float(eps))
        lists = np.concatenate([c.top(w, k)[0].numpy() for c in candidates])
        result = evaluate(_Replay(f"epsilon {eps}", lists), dataset, "test", progress=False, **options)
        result.save(out_dir / f"test_eval.epsilon_{eps:g}.json")
        rows.append(
            {"epsilon": float(eps), "chosen": eps == tuned.cold_epsilon, **{m: result.metrics.get(m) for m in KEYS}}
        )
    payload = {
        "benchmark": "cold",
        "run": str(run_dir),
        "dataset": dataset.name,
        "cold_items": len(dataset.cold_items()),
        "cold_target_users": final.metrics.get("cold_target/users"),
        "weights": tuned.to_dict(),
        "final": {m: final.metrics.get(m) for m in KEYS},
        "git": git_sha(),
        "environment": environment(device),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    paths = write_results(out_dir, "cold", payload, rows)
    plot = _plot(out_dir / "cold.png", rows, dataset.name)
    if plot is not None:
        paths["png"] = plot
    atomic_write_text(out_dir / "cold.md", _markdown(payload, rows))
    paths["md"] = out_dir / "cold.md"
    return {"payload": payload, "rows": rows, "paths": paths}


def _markdown(payload: dict, rows: list[dict]) -> str:
    lines = [
        f"# Cold items in the top 10 against the cap epsilon ({payload['dataset']})",
        "",
        f"Run `{payload['run']}`; {payload['cold_items']} cold items, "
        f"{int(payload['cold_target_users'] or 0)} cold-target test users. Fusion weights chosen on "
        f"validation: `{json.dumps(payload['weights'])}`; only epsilon changes between rows.",
        "",
        "| epsilon | Recall@10 | NDCG@10 | cold-target Recall@10 | warm-target Recall@10 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " (chosen on validation)" if r["chosen"] else ""
        lines.append(
            f"| {r['epsilon']:g}{mark} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
            f"{r['cold_target/recall@10']:.4f} | {r['warm_target/recall@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(path: Path, rows: list[dict], title: str) -> Path | None:
    plt = _pyplot()
    if plt is None:
        return None
    eps = [r["epsilon"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("recall@10", "all users"),
        ("cold_target/recall@10", "cold-target users"),
        ("warm_target/recall@10", "warm-target users"),
    ):
        ax.plot(eps, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("epsilon (cap on the share of cold items in the top 10)")
    ax.set_ylabel("Recall@10 (test)")
    ax.set_title(f"{title}: cold handling against epsilon")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
