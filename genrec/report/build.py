"""Assembling a report: every number it shows, computed from the runs (and the prepared dataset).

:func:`build_report` reads the runs, refuses mismatched ones, computes the tables and writes
``report.md``, ``report.json`` (the same numbers, machine-readable) and the PNG plots into
``out_dir``. Per-user values of a method trained with several seeds are averaged over its seeds
before the paired tests, so a test compares the methods, not one lucky seed.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genrec.data import DataError, load_prepared
from genrec.files import atomic_write_text
from genrec.report import buckets as B
from genrec.report.markdown import render_markdown
from genrec.report.plots import write_plots
from genrec.report.runs import (
    Method,
    ReportInputError,
    RunMismatchError,
    check_comparable,
    read_method,
    unique_labels,
)
from genrec.report.stats import compare_paired, holm, mean_and_spread

ACCURACY = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
MORE_ACCURACY = ("recall@20", "ndcg@20", "mrr")
BEYOND = ("coverage@10", "gini@10", "novelty@10", "avg_popularity@10")
BUCKET_METRICS = ("recall@10", "ndcg@10")
DEFAULT_TESTED = ("recall@10", "ndcg@10")
#: On a cold-start split (per-user files with a ``cold_target`` column) the accuracy table and the
#: paired tests also cover the users whose target is cold, and those whose target is warm, apart.
GROUPS = ("cold_target", "warm_target")
GROUP_METRICS = ("recall@10", "ndcg@10")


@dataclass
class ReportOptions:
    tested_metrics: tuple[str, ...] = DEFAULT_TESTED
    permutations: int = 10_000
    seed: int = 0
    alpha: float = 0.05
    popularity_cuts: tuple[float, float] = B.DEFAULT_POPULARITY_CUTS
    history_edges: tuple[int, ...] = B.DEFAULT_HISTORY_EDGES
    plots: bool = True


@dataclass
class Report:
    """What :func:`build_report` computed and wrote."""

    data: dict
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def _finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.floating | np.integer):
        return _finite_or_none(x.item())
    return x


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return _finite_or_none(obj)


# ---- the dataset behind the runs ----
def locate_dataset(methods: list[Method], data: str | Path | None):
    """The prepared dataset the runs were scored on: ``data``, else the path they recorded (if present).

    Returns None when neither is available. A given dataset must hold the runs' held-out pairs.
    """

    ref = methods[0].evaluations[0]
    candidates = [Path(data)] if data is not None else []
    if data is None:
        recorded = ref.info.get("dataset_path")
        if recorded:
            candidates += [Path(recorded), ref.path.parent / recorded]
    for path in candidates:
        if not (path / "manifest.json").is_file():
            if data is not None:
                raise ReportInputError(f"--data {path} is not a prepared dataset (manifest.json is missing)")
            continue
        try:
            dataset = load_prepared(path)
        except DataError as e:
            raise ReportInputError(str(e)) from None
        _check_dataset(dataset, ref, explicit=data is not None)
        return dataset
    return None


def _check_dataset(dataset, ref, explicit: bool) -> None:
    info = ref.info
    problem = None
    if dataset.num_items != info.get("num_items"):
        problem = f"it has {dataset.num_items} items, the runs {info.get('num_items')}"
    elif ref.per_user is not None:
        split = dataset.split(info["split"])
        rows = ref.per_user["row"]
        if len(rows) and (rows.max() >= len(split)):
            problem = (
                f"its {info['split']!r} split has {len(split)} rows, the runs scored row {int(rows.max())}"
            )
        elif not (
            np.array_equal(split.users[rows], ref.per_user["user_idx"])
            and np.array_equal(split.targets[rows], ref.per_user["target"])
        ):
            problem = f"its {info['split']!r} split holds different (user, held-out item) pairs"
    elif dataset.fingerprint != info.get("dataset_fingerprint"):
        problem = "its manifest fingerprint differs and the runs saved no per-user arrays to compare"
    if problem:
        how = "--data" if explicit else "the recorded dataset_path"
        raise RunMismatchError(
            f"{how} {dataset.path} is not the dataset these runs were scored on: {problem}"
        )


# ---- tables ----
def _per_user_mean(method: Method, metric: str) -> np.ndarray | None:
    """Per-user ``metric`` averaged over the method's seeds (None without per-user arrays)."""
    arrays = []
    for ev in method.evaluations:
        if ev.per_user is None or metric not in ev.per_user:
            return None
        arrays.append(np.asarray(ev.per_user[metric], dtype=np.float64))
    return np.mean(arrays, axis=0)


def _metric_table(methods: list[Method], names) -> dict:
    return {
        m.label: {name: mean_and_spread([ev.metrics.get(name) for ev in m.evaluations]) for name in names}
        for m in methods
    }


def _groups(methods: list[Method]) -> dict[str, np.ndarray]:
    """Row masks of the user groups every method's per-user file marks the same way ({} if none)."""
    marks = [
        ev.per_user.get("cold_target") if ev.per_user is not None else None
        for m in methods
        for ev in m.evaluations
    ]
    if not marks or any(mark is None for mark in marks):
        return {}
    cold = np.asarray(marks[0], dtype=bool)
    if any(not np.array_equal(np.asarray(mark, dtype=bool), cold) for mark in marks[1:]):
        return {}
    # A group of fewer than two users has no paired test (a file of only cold-target users, say).
    return {name: mask for name, mask in (("cold_target", cold), ("warm_target", ~cold)) if mask.sum() >= 2}


def _significance(methods: list[Method], options: ReportOptions) -> list[dict]:
    tests = []
    groups = {"": None, **_groups(methods)}
    for group, mask in groups.items():
        for metric in options.tested_metrics:
            if group and metric not in GROUP_METRICS:
                continue
            for a, b in itertools.combinations(methods, 2):
                va, vb = _per_user_mean(a, metric), _per_user_mean(b, metric)
                if va is None or vb is None:
                    continue
                keep = np.isfinite(va) & np.isfinite(vb)
                if mask is not None:
                    keep &= mask
                result = compare_paired(
                    va[keep], vb[keep], permutations=options.permutations, seed=options.seed
                )
                name = f"{group}/{metric}" if group else metric
                tests.append({"metric": name, "a": a.label, "b": b.label, **result.to_dict()})
    if tests:
        for key in ("p_t", "p_perm"):
            adjusted = holm([t[key] for t in tests])
            for t, p in zip(tests, adjusted, strict=True):
                t[f"{key}_holm"] = float(p)
    return tests


def _bucket_table(methods: list[Method], buckets: B.Buckets) -> dict:
    table = {}
    for m in methods:
        per_metric = {}
        for metric in BUCKET_METRICS:
            per_seed = []
            for ev in m.evaluations:
                if ev.per_user is None or metric not in ev.per_user:
                    break
                per_seed.append(B.bucket_means(ev.per_user[metric], buckets))
            else:
                stacked = np.stack(per_seed)  # (seeds, buckets)
                per_metric[metric] = [
                    mean_and_spread(stacked[:, i].tolist()) for i in range(len(buckets.labels))
                ]
        table[m.label] = per_metric
    return table


def _cost_row(method: Method) -> dict:
    """Cost figures of a method, averaged over its seeds where they vary."""

    def values(getter):
        out = []
        for ev in method.evaluations:
            try:
                v = getter(ev)
            except (KeyError, TypeError):
                v = None
            if isinstance(v, int | float) and math.isfinite(v):
                out.append(float(v))
        return out

    def mean(getter):
        v = values(getter)
        return float(np.mean(v)) if v else None

    decode = lambda ev: ev.cost.get("decode") or {}  # noqa: E731

    def device(ev) -> str:
        return str(
            ev.cost.get("device")
            or (ev.run.get("summary") or {}).get("device")
            or ev.info.get("device")
            or ""
        )

    def train_seconds(ev):
        if ev.cost.get("train_seconds") is not None:
            return ev.cost["train_seconds"]
        return (ev.run.get("train") or {}).get("train_seconds")  # the training loop's own clock

    devices = sorted({device(ev) for ev in method.evaluations} - {""})
    return {
        "device": ", ".join(devices) or None,
        "train_seconds": mean(train_seconds),
        "train_peak_memory_bytes": mean(lambda ev: ev.cost["train_peak_memory"]["bytes"]),
        "train_peak_memory_kind": next(
            (
                ev.cost["train_peak_memory"].get("kind")
                for ev in method.evaluations
                if ev.cost.get("train_peak_memory")
            ),
            None,
        ),
        "parameters": mean(lambda ev: ev.cost["parameters"]),
        "latency_ms_p50": mean(lambda ev: decode(ev)["latency_ms_p50"]),
        "latency_ms_p95": mean(lambda ev: decode(ev)["latency_ms_p95"]),
        "throughput_users_per_s": mean(lambda ev: decode(ev)["throughput_users_per_s"]),
        "eval_users_per_s": mean(lambda ev: ev.info["users_per_second"]),
        "decode_peak_memory_bytes": mean(lambda ev: ev.cost["decode_peak_memory"]["bytes"]),
        "decode_peak_memory_kind": next(
            (
                ev.cost["decode_peak_memory"].get("kind")
                for ev in method.evaluations
                if ev.cost.get("decode_peak_memory")
            ),
            None,
        ),
    }


def excludes_seen(method: Method) -> bool:
    """Whether the method's lists leave out the user's history items (by the evaluator or by itself)."""
    ev = method.evaluations[0]
    return bool(
        ev.info.get("exclude_history")
        or ev.info.get("exclude_seen")  # genrec train's test_eval.json (model.exclude_seen)
        or (ev.info.get("recommender_config") or {}).get("exclude_seen")
    )


def _seen_note(methods: list[Method]) -> list[str]:
    flags = {m.label: excludes_seen(m) for m in methods}
    if len(set(flags.values())) < 2:
        return []
    yes = ", ".join(k for k, v in flags.items() if v)
    no = ", ".join(k for k, v in flags.items() if not v)
    return [f"{yes} never recommend items already in the user's history; {no} may (see the Methods table)"]


def compute_report(
    methods: list[Method], dataset=None, options: ReportOptions | None = None, notes=()
) -> dict:
    """Every number of the report, as a JSON-ready dict."""
    options = options or ReportOptions()
    ref = methods[0].evaluations[0]
    ks_present = set(ref.metrics)
    accuracy = [m for m in ACCURACY + MORE_ACCURACY if m in ks_present]
    accuracy += [f"{g}/{m}" for g in GROUPS for m in GROUP_METRICS if f"{g}/{m}" in ks_present]
    beyond = [m for m in BEYOND if m in ks_present]
    extra = sorted(
        {k for m in methods for ev in m.evaluations for k in ev.metrics} - set(accuracy) - set(beyond)
    )
    extra = [k for k in extra if k == "invalid_rate"]
    data = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": ref.info.get("dataset"),
        "split": ref.info.get("split"),
        "num_users": ref.info.get("num_users"),
        "num_items": ref.info.get("num_items"),
        "dataset_fingerprint": ref.info.get("dataset_fingerprint"),
        "notes": [*notes, *_seen_note(methods)],
        "methods": [
            {
                "label": m.label,
                "path": str(m.path),
                "seeds": m.seeds,
                "recommender": m.evaluations[0].info.get("recommender"),
                "excludes_seen": excludes_seen(m),
            }
            for m in methods
        ],
        "accuracy": _metric_table(methods, accuracy),
        "beyond_accuracy": _metric_table(methods, beyond + extra),
        "significance": _significance(methods, options),
        "significance_settings": {
            "metrics": list(options.tested_metrics),
            "permutations": options.permutations,
            "seed": options.seed,
            "alpha": options.alpha,
            "correction": "Holm-Bonferroni over all tests in the table",
        },
        "cost": {m.label: _cost_row(m) for m in methods},
    }
    if dataset is not None and ref.per_user is not None:
        split = dataset.split(ref.info["split"])
        rows = ref.per_user["row"]
        pop = B.popularity_buckets(split.targets[rows], dataset.train_item_counts(), options.popularity_cuts)
        hist = B.history_buckets(split.history_lengths[rows], options.history_edges)
        data["popularity_buckets"] = {"buckets": pop.details, "by_method": _bucket_table(methods, pop)}
        data["history_buckets"] = {"buckets": hist.details, "by_method": _bucket_table(methods, hist)}
    return _clean(data)


def build_report(
    runs: list[str | Path],
    out_dir: str | Path,
    *,
    labels: list[str] | None = None,
    data: str | Path | None = None,
    options: ReportOptions | None = None,
) -> Report:
    """Read ``runs``, compare them, and write report.md, report.json and the plots into ``out_dir``."""

    options = options or ReportOptions()
    if not runs:
        raise ReportInputError("give at least one run to report on")
    if labels and len(labels) != len(runs):
        raise ReportInputError(
            f"--name was given {len(labels)} times for {len(runs)} runs; give one per run or none"
        )
    methods = [read_method(r, labels[i] if labels else None) for i, r in enumerate(runs)]
    unique_labels(methods)
    notes = check_comparable(methods)
    dataset = locate_dataset(methods, data)
    if dataset is None:
        notes.append(
            "accuracy by popularity and history length needs the prepared dataset the runs were scored on: "
            "pass --data DIR"
        )
    numbers = compute_report(methods, dataset, options, notes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if options.plots:
        files.update(write_plots(numbers, out_dir))
    markdown = render_markdown(numbers, {k: p.name for k, p in files.items()})
    atomic_write_text(out_dir / "report.json", json.dumps(numbers, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", markdown)
    files = {"markdown": out_dir / "report.md", "json": out_dir / "report.json", **files}
    return Report(numbers, markdown, files)


__all__ = ["Report", "ReportOptions", "RunMismatchError", "build_report", "compute_report", "locate_dataset"]
