"""Load benchmark of ``genrec serve``: a real HTTP client on loopback against a real server,
with and without micro-batching.

For each mode the server runs as its own process (``genrec serve`` on a free localhost port); many
concurrent clients (asyncio + httpx, one connection each) send POST /recommend with the test
histories of users drawn from the run's dataset (the same requests, in the same order, in both
modes) until ``requests`` are answered or ``duration`` seconds have passed (then the requests in
flight finish). Reported per mode: requests/s, latency p50/p90/p99/max, errors, the server's batch
counters; and how far the batched answers are from the unbatched ones.

    python -m genrec.bench.serve_load --run runs/R --out bench/results/serve-cpu

Writes serve_load.json (with the environment), serve_load.csv and serve_load.png, each atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq

from genrec.batch_recommend import run_dataset
from genrec.bench.results import environment, write_results
from genrec.data import load_prepared
from genrec.files import save_figure
from genrec.run_format import RunError

MODES = ("batched", "unbatched")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def histories_of(run_dir: Path, count: int, seed: int, max_history: int | None = None) -> list[list[str]]:
    """Test histories (all but the last item) of ``count`` users of the run's dataset, drawn with
    ``seed``, as item ids."""
    info = json.loads((run_dir / "run.json").read_text())
    dataset = run_dataset(run_dir, info, None, load_prepared, RunError)  # checked against the run
    item_ids = [str(x) for x in pq.read_table(run_dir / "items.parquet", columns=["item_id"]).column(0).to_pylist()]
    test = dataset.split("test")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(test), size=min(count, len(test)), replace=False)
    out = []
    for h in test.history_list(rows):
        h = h if max_history is None else h[len(h) - min(len(h), max_history) :]
        out.append([item_ids[i] for i in h])
    return out


class Server:
    """``genrec serve`` in a child process (at the lowest priority the parent has), until stopped."""

    def __init__(self, run_dir: Path, batching: bool, args) -> None:  # args: device, max_batch, max_wait_ms
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "genrec.cli", "serve", "--run", str(run_dir), "--port", str(self.port),
            "--device", args.device, "--no-users", "--log-level", "warning",
            "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
            "--batching" if batching else "--no-batching",
        ]  # fmt: skip
        fd, log = tempfile.mkstemp(prefix=f"genrec-serve-{'batched' if batching else 'unbatched'}-", suffix=".log")
        os.close(fd)
        self.log = open(log, "w")  # noqa: SIM115  (kept, and named in the error, where the server fails)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"genrec serve exited with {self.process.returncode}; see {self.log.name}")
            try:
                return httpx.get(f"{self.url}/health", timeout=5).json()
            except httpx.HTTPError:
                time.sleep(0.5)
        raise RuntimeError(f"genrec serve did not answer within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        healthy = self.process.poll() is None
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        if healthy:
            Path(self.log.name).unlink(missing_ok=True)


async def drive(url: str, bodies: list[dict], clients: int, duration: float) -> dict:
    """``clients`` concurrent clients sending ``bodies`` in order, each waiting for its answer before
    sending the next, until all are sent or ``duration`` seconds have passed."""
    import httpx

    latencies = np.full(len(bodies), np.nan)
    answers: list[list[tuple[str, float]] | None] = [None] * len(bodies)
    errors: dict[str, int] = {}
    next_body = 0
    counts = {"sent": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        stop_at = started + duration

        async def one_client():
            nonlocal next_body
            while next_body < len(bodies) and time.perf_counter() < stop_at:
                n = next_body
                next_body += 1
                counts["sent"] += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/recommend", json=bodies[n])
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                latencies[n] = time.perf_counter() - t
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
                answers[n] = [(x["item_id"], x["score"]) for x in r.json()["items"]]

        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    done = latencies[~np.isnan(latencies)] * 1000
    ok = sum(a is not None for a in answers)
    return {
        "sent": counts["sent"],
        "answered": ok,
        "errors": errors,
        "seconds": elapsed,
        "requests_per_s": ok / elapsed if elapsed > 0 else None,
        "latency_ms_mean": float(done.mean()) if len(done) else None,
        "latency_ms_p50": float(np.percentile(done, 50)) if len(done) else None,
        "latency_ms_p90": float(np.percentile(done, 90)) if len(done) else None,
        "latency_ms_p99": float(np.percentile(done, 99)) if len(done) else None,
        "latency_ms_max": float(done.max()) if len(done) else None,
        "answers": answers,
    }


def compare(a: list, b: list) -> dict:
    """How the batched answers differ from the unbatched ones, over requests answered in both."""
    both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    same_items = sum([i for i, _ in x] == [i for i, _ in y] for x, y in both)
    diffs = [abs(s - t) for x, y in both for (_, s), (_, t) in zip(x, y, strict=False)]
    return {
        "compared": len(both),
        "identical_item_lists": same_items,
        "max_score_difference": max(diffs) if diffs else None,
    }


def plot(path: Path, rows: list[dict], title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r["mode"] + (f"\n{r['max_wait_ms']:g} ms wait" if r["max_wait_ms"] is not None else "") for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.bar(names, [r["requests_per_s"] or 0 for r in rows], color="tab:blue")
    left.set_ylabel("requests / s")
    left.set_title("throughput")
    x = np.arange(len(rows))
    for i, (key, label) in enumerate((("latency_ms_p50", "p50"), ("latency_ms_p99", "p99"))):
        right.bar(x + (i - 0.5) * 0.38, [r[key] or 0 for r in rows], 0.38, label=label)
    right.set_xticks(x, names)
    right.set_ylabel("latency (ms)")
    right.set_title("latency")
    right.legend(loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def run_load(
    run: Path,
    out: Path,
    *,
    clients: int = 64,
    requests: int = 2000,
    duration: float = 60.0,
    k: int = 10,
    max_batch: int = 64,
    max_wait_ms: float | tuple[float, ...] = 2.0,
    device: str = "cpu",
    warmup: int = 8,
    modes: tuple[str, ...] = MODES,
    seed: int = 0,
    startup_timeout: float = 300.0,
) -> dict:
    """Measure each of ``modes`` (see the module doc) and write serve_load.json/.csv/.png into
    ``out``; returns the JSON payload with its rows. Several ``max_wait_ms`` measure the batched mode
    once per value. Bad settings raise ValueError before anything runs or is written."""
    run, out = Path(run), Path(out)
    waits = _checked_waits(run, modes, clients, requests, k, max_batch, max_wait_ms, duration, warmup)
    out.mkdir(parents=True, exist_ok=True)

    import httpx  # noqa: F401  (used by _measure_mode; imported here, before the histories are read)

    info = json.loads((run / "run.json").read_text())
    histories = histories_of(run, requests + warmup, seed, info["config"]["train"]["max_history"])
    bodies = [{"history": h, "k": k} for h in histories]
    warm, timed = bodies[:warmup], bodies[warmup:]
    rows, answers, health = [], [], {}
    measured = [(m, w) for m in modes for w in (waits if m == "batched" else (None,))]
    for mode, wait in measured:
        row, mode_answers, health = _measure_mode(
            run, mode, wait, warm, timed, clients=clients, k=k, duration=duration, device=device,
            max_batch=max_batch, startup_timeout=startup_timeout,
        )  # fmt: skip
        answers.append(mode_answers)
        rows.append(row)
    if "unbatched" in modes:  # each batched mode's answers against the unbatched ones
        _compare_to_unbatched(rows, answers, measured)
    payload = {
        "benchmark": "serve_load",
        "run": str(run),
        "model": health.get("model"),
        "num_items": health.get("num_items"),
        "beam_size": health.get("beam_size"),
        "settings": {
            "clients": clients,
            "requests": requests,
            "duration_s": duration,
            "k": k,
            "max_batch": max_batch,
            "max_wait_ms": list(waits),
            "warmup": warmup,
            "seed": seed,
            "histories": "test histories of users drawn from the run's dataset",
        },
        "load_average": os.getloadavg(),
        "environment": environment(device),
    }
    paths = write_results(out, "serve_load", payload, rows)
    paths["png"] = plot(
        out / "serve_load.png",
        rows,
        f"genrec serve, {run.name}: {clients} clients on loopback, k={k}, {payload['environment']['device']}",
    )
    return {**payload, "rows": rows, "paths": paths}


def _checked_waits(
    run: Path,
    modes: tuple[str, ...],
    clients: int,
    requests: int,
    k: int,
    max_batch: int,
    max_wait_ms: float | tuple[float, ...],
    duration: float,
    warmup: int,
) -> tuple[float, ...]:
    """The batched mode's waits (ms) as a tuple of floats; ValueError on a bad setting or where
    ``run`` is not a finished run."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes {', '.join(bad) or 'none'}: use {' and/or '.join(MODES)}")
    for name, value in (("clients", clients), ("requests", requests), ("k", k), ("max_batch", max_batch)):
        if value < 1:
            raise ValueError(f"{name} = {value}: must be >= 1")
    waits = tuple(float(w) for w in (max_wait_ms if isinstance(max_wait_ms, tuple | list) else (max_wait_ms,)))
    if duration <= 0 or not waits or min(waits) < 0 or warmup < 0:
        raise ValueError("duration must be > 0 seconds, max_wait_ms and warmup >= 0")
    if not (run / "run.json").is_file():
        raise ValueError(f"{run}: no run.json there (not a finished genrec run)")
    return waits


def _compare_to_unbatched(rows: list[dict], answers: list[list], measured: list[tuple]) -> None:
    """Add to each batched row how far its answers are from the unbatched mode's (``vs_unbatched_*``)."""
    reference = answers[[m for m, _ in measured].index("unbatched")]
    for row, got in zip(rows, answers, strict=True):
        if row["mode"] == "batched":
            row.update({f"vs_unbatched_{key}": v for key, v in compare(got, reference).items()})


def _measure_mode(
    run: Path,
    mode: str,
    wait: float | None,
    warm: list[dict],
    timed: list[dict],
    *,
    clients: int,
    k: int,
    duration: float,
    device: str,
    max_batch: int,
    startup_timeout: float,
) -> tuple[dict, list, dict]:
    """One mode (the batched one at one ``wait``) against a server of its own: start it, send the
    ``warm`` requests one at a time, drive the ``timed`` ones, stop it and print a line. Returns
    the mode's row, its answers and the server's last /health."""
    import httpx

    options = SimpleNamespace(device=device, max_batch=max_batch, max_wait_ms=wait or 0.0)
    server = Server(run, mode == "batched", options)
    try:
        t = time.perf_counter()
        server.wait_ready(startup_timeout)
        startup = time.perf_counter() - t
        for body in warm:
            httpx.post(f"{server.url}/recommend", json=body, timeout=600).raise_for_status()
        before = httpx.get(f"{server.url}/health").json()["batching"]
        got = asyncio.run(drive(server.url, timed, clients, duration))
        health = httpx.get(f"{server.url}/health").json()
    finally:
        server.stop()
    after = health["batching"]
    batches = after["batches"] - before["batches"]
    answers = got.pop("answers")
    row = {
        "mode": mode,
        "max_wait_ms": wait,
        "clients": clients,
        "k": k,
        **{key: v for key, v in got.items() if key != "errors"},
        "errors": sum(got["errors"].values()),
        "server_batches": batches,
        "mean_batch": (after["requests"] - before["requests"]) / batches if batches else None,
        "largest_batch": after["largest_batch"],
        "server_startup_s": startup,
    }
    rate = got["requests_per_s"] or 0.0
    print(
        f"{mode}" + (f" ({wait:g} ms)" if wait is not None else "") + f": {got['answered']} answered in {got['seconds']:.1f} s = {rate:.1f} req/s, "
        f"p50 {got['latency_ms_p50'] or 0:.0f} ms, p99 {got['latency_ms_p99'] or 0:.0f} ms, errors {got['errors']}",
        flush=True,
    )
    return row, answers, health


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m genrec.bench.serve_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run folder (only read)")
    parser.add_argument("--out", required=True, type=Path, help="folder for serve_load.json/.csv/.png")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=2000, help="requests per mode at most")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per mode at most (then in-flight ones finish)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", default="2", help="batched mode's wait; comma-separated: one run each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=8, help="requests sent (one at a time) before timing")
    parser.add_argument("--modes", default=",".join(MODES), help="batched, unbatched or both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    settings = vars(args)
    settings["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    try:
        settings["max_wait_ms"] = tuple(float(w) for w in args.max_wait_ms.split(",") if w.strip())
    except ValueError:
        parser.error(f"--max-wait-ms {args.max_wait_ms!r}: give milliseconds, comma-separated")
    try:
        return run_load(settings.pop("run"), settings.pop("out"), **settings)
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
