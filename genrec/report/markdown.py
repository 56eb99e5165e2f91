"""The Markdown text of a report, rendered from :func:`genrec.report.build.compute_report`'s numbers."""

from __future__ import annotations

NAMES = {
    "recall": "Recall",
    "ndcg": "NDCG",
    "mrr": "MRR",
    "coverage": "Coverage",
    "gini": "Gini",
    "novelty": "Novelty",
    "avg_popularity": "Avg popularity",
    "invalid_rate": "Invalid rate",
}
LOWER_IS_BETTER = {"gini@10", "avg_popularity@10", "invalid_rate"}


def metric_name(key: str) -> str:
    base, _, k = key.partition("@")
    return f"{NAMES.get(base, base)}@{k}" if k else NAMES.get(base, base)


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) or (isinstance(x, float) and abs(x) >= 1000):
        return f"{x:,.0f}"
    if abs(x) >= 100:  # popularity counts, novelty bits: four decimals would be noise
        digits = min(digits, 1)
    elif abs(x) >= 10:
        digits = min(digits, 2)
    return f"{x:.{digits}f}"


def spread(d: dict | None, digits: int = 4) -> str:
    """ "mean ± std" over seeds, the bare value for one run, "–" when missing."""
    if not d or d.get("mean") is None:
        return "–"
    if d.get("n", 1) > 1:
        return f"{_num(d['mean'], digits)} ± {_num(d['std'], digits)}"
    return _num(d["mean"], digits)


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _best_marks(table: dict, keys: list[str]) -> dict[tuple[str, str], bool]:
    """(method, metric) -> True for the best mean of each column (bold in the table)."""
    marks = {}
    for key in keys:
        values = {m: (row.get(key) or {}).get("mean") for m, row in table.items()}
        values = {m: v for m, v in values.items() if v is not None}
        if len(values) < 2:
            continue
        pick = min if key in LOWER_IS_BETTER else max
        best = pick(values.values())
        for m, v in values.items():
            marks[(m, key)] = v == best
    return marks


def _metric_section(table: dict, keys: list[str], digits: int = 4, bold: bool = True) -> str:
    marks = _best_marks(table, keys) if bold else {}
    rows = []
    for method, row in table.items():
        cells = []
        for key in keys:
            text = spread(row.get(key), digits)
            cells.append(f"**{text}**" if marks.get((method, key)) else text)
        rows.append([method, *cells])
    return _table(["method", *[metric_name(k) for k in keys]], rows)


def _bytes(b) -> str:
    if b is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(b) < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return "–"


def _seconds(s) -> str:
    if s is None:
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _stat(x, spec: str) -> str:
    """A number in ``spec``, or a dash where the statistic is undefined (JSON null: e.g. the t of a
    group whose per-user differences are all equal)."""
    return "–" if x is None else format(x, spec)


def _p(p) -> str:
    if p is None:
        return "–"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def render_markdown(data: dict, images: dict[str, str] | None = None) -> str:
    images = images or {}
    out = _header(data)
    out += _methods_section(data)
    out += _accuracy_section(data, images)
    out += _significance_section(data)
    out += _beyond_accuracy_section(data, images)
    out += _bucket_sections(data, images)
    out += _cost_section(data, images)
    return "\n\n".join(out) + "\n"


def _header(data: dict) -> list[str]:
    """The title, what was scored against what, and the notes."""
    out = [f"# genrec report: {data['dataset']}, {data['split']} split"]
    out.append(
        f"{data['num_users']:,} users scored against the full catalogue of {data['num_items']:,} items "
        f"(dataset manifest {str(data.get('dataset_fingerprint') or 'unknown')[:12]}). Generated {data['created']}."
    )
    for note in data.get("notes", []):
        out.append(f"> Note: {note}")
    return out


def _methods_section(data: dict) -> list[str]:
    """One row per method: its seeds, recommender, whether seen items were allowed, and its source."""
    rows = [
        [
            m["label"],
            ", ".join("?" if s is None else str(s) for s in m["seeds"]) if len(m["seeds"]) > 1 else "1 run",
            str(m.get("recommender") or "–"),
            "excluded" if m.get("excludes_seen") else "allowed",
            f"`{m['path']}`",
        ]
        for m in data["methods"]
    ]
    return [
        "## Methods",
        _table(["method", "seeds", "recommender", "seen items", "source"], rows, ["---"] * 5),
    ]


def _accuracy_section(data: dict, images: dict[str, str]) -> list[str]:
    """The accuracy metrics of every method, the best of each column bold."""
    out = ["## Accuracy"]
    out.append(
        "Mean ± sample standard deviation over seeds (a single value: one run). One held-out item per "
        "user, ranked against every item; the best of each column is bold."
    )
    keys = list(next(iter(data["accuracy"].values())).keys())
    out.append(_metric_section(data["accuracy"], keys))
    if "accuracy" in images:
        out.append(f"![Accuracy]({images['accuracy']})")
    return out


def _significance_section(data: dict) -> list[str]:
    """The paired tests between methods, or a line saying there were none to run."""
    out = ["## Paired significance"]
    settings = data["significance_settings"]
    if not data["significance"]:
        out.append(
            "No pair of methods with per-user arrays to test (one method, or results saved without them)."
        )
        return out
    out.append(
        "Per-user values (averaged over each method's seeds) compared user by user: a two-sided paired "
        f"t-test and a paired sign-flip permutation test ({settings['permutations']:,} random sign patterns, "
        "exact enumeration when few users differ). Holm-adjusted p-values control the family of all tests "
        f"below; *significant* means Holm-adjusted t-test p < {settings['alpha']}."
    )
    header = [
        "metric",
        "A vs B",
        "mean",
        "A − B [95% CI]",
        "t",
        "p (t-test)",
        "p (permutation)",
        "Holm p (t)",
        "users A better / worse",
        "significant",
    ]
    rows = [_significance_row(t, settings["alpha"]) for t in data["significance"]]
    out.append(_table(header, rows, ["---", "---", *["---:"] * 7, "---"]))
    return out


def _significance_row(t: dict, alpha: float) -> list[str]:
    """One paired test as a table row."""
    return [
        metric_name(t["metric"]),
        f"{t['a']} vs {t['b']}",
        f"{_stat(t['mean_a'], '.4f')} vs {_stat(t['mean_b'], '.4f')}",
        f"{_stat(t['mean_diff'], '+.4f')} [{_stat(t['ci_low'], '+.4f')}, {_stat(t['ci_high'], '+.4f')}]",
        _stat(t["t"], ".2f"),
        _p(t["p_t"]),
        _p(t["p_perm"]),
        _p(t["p_t_holm"]),
        f"{t['wins']:,} / {t['losses']:,}",
        "yes" if t["p_t_holm"] is not None and t["p_t_holm"] < alpha else "no",
    ]


def _beyond_accuracy_section(data: dict, images: dict[str, str]) -> list[str]:
    """Coverage, Gini, novelty and popularity of every method (no column is "best", so none is bold)."""
    out = ["## Beyond accuracy"]
    out.append(
        "Coverage@10: share of the catalogue in anyone's top 10 (higher: more items reach users). Gini@10: "
        "inequality of how often items are recommended (0 = perfectly even). Novelty@10: mean self-information "
        "−log2 p(item) of the top 10 (higher: less popular items). Avg popularity@10: mean training "
        "interactions of the recommended items (lower: less popularity bias)."
    )
    bkeys = list(next(iter(data["beyond_accuracy"].values())).keys())
    out.append(_metric_section(data["beyond_accuracy"], bkeys, bold=False))
    if "beyond_accuracy" in images:
        out.append(f"![Beyond accuracy]({images['beyond_accuracy']})")
    return out


def _bucket_sections(data: dict, images: dict[str, str]) -> list[str]:
    """Accuracy by item popularity and by history length: the buckets, then a table per metric."""
    out = []
    for key, title, describe in (
        ("popularity_buckets", "Accuracy by item popularity", _describe_popularity),
        ("history_buckets", "Accuracy by history length", _describe_history),
    ):
        out.append(f"## {title}")
        section = data.get(key)
        if section is None:
            out.append("Not computed: the prepared dataset was not available (pass `--data DIR`).")
            continue
        out.append(describe(section["buckets"]))
        labels = [b["bucket"] for b in section["buckets"]]
        for metric in ("recall@10", "ndcg@10"):
            rows = []
            for method, per_metric in section["by_method"].items():
                cells = per_metric.get(metric)
                rows.append([method, *([spread(c) for c in cells] if cells else ["–"] * len(labels))])
            out.append(f"{metric_name(metric)}:")
            out.append(_table(["method", *labels], rows))
        if key in images:
            out.append(f"![{title}]({images[key]})")
    return out


def _cost_section(data: dict, images: dict[str, str]) -> list[str]:
    """Training time, memory, latency and throughput of every method."""
    out = ["## Cost"]
    out.append(
        "Training time is the wall-clock time of the training loop (validation included); latency is one "
        "user per call (median and 95th percentile), throughput is users per second at a large batch, and "
        "'eval users/s' is the evaluator's own rate over the whole split. Peak memory is CUDA's allocator "
        "peak on a GPU and the process's peak resident memory on a CPU. Numbers from different devices are "
        "not comparable."
    )
    header = [
        "method",
        "device",
        "parameters",
        "training time",
        "peak memory (train)",
        "latency p50 / p95",
        "throughput (users/s)",
        "eval users/s",
        "peak memory (decode)",
    ]
    rows = [_cost_row(method, c) for method, c in data["cost"].items()]
    out.append(_table(header, rows, ["---", "---", *["---:"] * 7]))
    if "cost" in images:
        out.append(f"![Cost]({images['cost']})")
    return out


def _cost_row(method: str, c: dict) -> list[str]:
    """One method's costs as a table row ("–" for what was not measured)."""
    return [
        method,
        c.get("device") or "–",
        _num(c.get("parameters")) if c.get("parameters") is not None else "–",
        _seconds(c.get("train_seconds")),
        _bytes(c.get("train_peak_memory_bytes")),
        "–"
        if c.get("latency_ms_p50") is None
        else f"{c['latency_ms_p50']:.2f} / {c['latency_ms_p95']:.2f} ms",
        _num(c.get("throughput_users_per_s"), 0),
        _num(c.get("eval_users_per_s"), 0),
        _bytes(c.get("decode_peak_memory_bytes")),
    ]


def _describe_popularity(buckets: list[dict]) -> str:
    rows = [
        [
            b["bucket"],
            f"{b['items']:,}",
            f"{b['catalogue_share']:.1%}",
            f"{b['interaction_share']:.1%}",
            "–" if b["min_count"] is None else f"{b['min_count']}–{b['max_count']}",
            f"{b['users']:,}",
        ]
        for b in buckets
    ]
    return (
        "Users grouped by the training popularity of their held-out item. Items sorted by training "
        "interactions are cut where the cumulative share of interactions crosses each third: the head is "
        "the few items carrying the first third, the tail the many carrying the last.\n\n"
        + _table(
            ["bucket", "items", "of catalogue", "of training interactions", "training count", "test users"],
            rows,
        )
    )


def _describe_history(buckets: list[dict]) -> str:
    rows = [[b["bucket"], f"{b['users']:,}"] for b in buckets]
    return "Users grouped by the number of items in their history.\n\n" + _table(
        ["history length", "users"], rows
    )
