"""What a model costs to run: decode latency and throughput, peak memory, and the device.

``measure_decode`` times a recommender (genrec.eval's protocol) on a seeded sample of a split:
latency is one user per call (what an online request pays), throughput is users per second at a
large batch (what offline scoring pays). On CUDA, peak memory is ``torch.cuda.max_memory_allocated``
since ``reset_peak_memory`` (genrec.devices); on the CPU it is the process's peak resident set size (which
includes the Python interpreter and the data, and never goes down).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

import numpy as np
import torch

from genrec.devices import device_name, peak_memory, reset_peak_memory, synchronize
from genrec.files import atomic_write_text

COST_FORMAT_VERSION = 1


def measure_decode(
    recommender,
    dataset,
    split: str = "test",
    *,
    k: int = 10,
    latency_users: int = 200,
    throughput_users: int = 4096,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    seed: int = 0,
    warmup: int = 3,
) -> dict:
    """Latency (ms per single-user call: p50, p95, mean) and throughput (users/s at ``batch_size``)."""
    device = torch.device(device)
    data = dataset.split(split)
    rng = np.random.default_rng([seed, 0xC057])
    n = len(data)
    if n == 0:
        raise ValueError(f"split {split!r} has no rows to time")
    lat_rows = rng.choice(n, size=min(latency_users, n), replace=False)
    thr_rows = np.sort(rng.choice(n, size=min(throughput_users, n), replace=False))

    histories = data.history_list(lat_rows)
    users = data.users[lat_rows]
    for i in range(min(warmup, len(histories))):
        recommender.recommend([histories[i]], k, users[i : i + 1])
    times = []
    for i in range(len(histories)):
        synchronize(device)
        start = time.perf_counter()
        recommender.recommend([histories[i]], k, users[i : i + 1])
        synchronize(device)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3

    batches = [thr_rows[lo : lo + batch_size] for lo in range(0, len(thr_rows), batch_size)]
    recommender.recommend(
        data.history_list(batches[0][: min(len(batches[0]), 64)]), k, data.users[batches[0][:64]]
    )
    synchronize(device)
    start = time.perf_counter()
    for rows in batches:
        recommender.recommend(data.history_list(rows), k, data.users[rows])
    synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "k": k,
        "split": split,
        "latency_users": len(lat_rows),
        "latency_ms_p50": float(np.percentile(ms, 50)),
        "latency_ms_p95": float(np.percentile(ms, 95)),
        "latency_ms_mean": float(ms.mean()),
        "throughput_users": len(thr_rows),
        "batch_size": batch_size,
        "throughput_users_per_s": float(len(thr_rows) / seconds) if seconds > 0 else None,
    }


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def write_run_cost(
    run_dir,
    *,
    recommender,
    dataset,
    device: torch.device | str,
    train_seconds: float | None = None,
    train_peak_memory: dict | None = None,
    parameters: int | None = None,
    batch_size: int = 1024,
    k: int = 10,
) -> dict:
    """Measure the decode cost of a trained run and write ``run_dir/cost.json`` (what genrec report reads).

    ``train_peak_memory`` is :func:`peak_memory` taken right after training (reset before it on CUDA).
    """
    device = torch.device(device)
    reset_peak_memory(device)
    decode = measure_decode(recommender, dataset, "test", k=k, batch_size=batch_size, device=device)
    payload = {
        "format_version": COST_FORMAT_VERSION,
        "device": device_name(device),
        "train_seconds": train_seconds,
        "train_peak_memory": train_peak_memory,
        "parameters": parameters,
        "decode": decode,
        "decode_peak_memory": peak_memory(device),
        "torch": torch.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(Path(run_dir) / "cost.json", json.dumps(payload, indent=2) + "\n")
    return payload
