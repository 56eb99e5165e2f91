"""``genrec bench kernels``: each operator per backend, against the PyTorch reference in the same run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genrec import _openmp
from genrec.bench.background import background_load
from genrec.bench.ceilings import measure_ceilings
from genrec.bench.results import environment, plot_bars, write_results
from genrec.bench.timing import median_seconds
from genrec.ops import Backend, available_backends, rq_encode


@dataclass(frozen=True)
class RQSize:
    n: int
    d: int
    levels: int
    k: int

    @property
    def label(self) -> str:
        return f"N={self.n} D={self.d} L={self.levels} K={self.k}"


CPU_SIZES = (
    RQSize(100_000, 32, 3, 256),
    RQSize(20_000, 128, 3, 256),
    RQSize(4_096, 768, 4, 1024),
)
GPU_SIZES = (
    RQSize(100_000, 32, 3, 256),
    RQSize(1_000_000, 32, 3, 256),
    RQSize(1_000_000, 128, 3, 256),
    RQSize(200_000, 768, 4, 1024),
)


def _rq_inputs(size: RQSize, device: torch.device, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(size.n, size.d, generator=g).to(device, dtype)
    # Codebooks on the scale of the residual at each level, as a trained RQ-VAE has.
    scale = torch.tensor([0.5**l for l in range(size.levels)]).view(-1, 1, 1)
    cb = (torch.randn(size.levels, size.k, size.d, generator=g) * scale).to(device, dtype)
    return x, cb


def bench_rq_encode(
    device: str | torch.device,
    sizes: tuple[RQSize, ...] | None = None,
    backends: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.5,
) -> list[dict]:
    device = torch.device(device)
    if sizes is None:
        sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    chosen = [Backend(b) for b in backends] if backends else available_backends("rq_encode", device)
    if device.type == "cpu" and not backends:
        chosen = [b for b in chosen if b is not Backend.TRITON]  # the interpreter is for tests only
    if Backend.REFERENCE not in chosen:
        chosen.append(Backend.REFERENCE)
    rows = []
    for size in sizes:
        x, cb = _rq_inputs(size, device, dtype)
        times = {}
        for backend in chosen:
            times[backend] = median_seconds(
                lambda b=backend, x=x, cb=cb: rq_encode(x, cb, backend=b, validate=False),
                device,
                min_run_time=min_run_time,
            )
        elem = x.element_size()
        flops = 2.0 * size.n * size.k * size.d * size.levels
        bytes_moved = size.n * size.d * elem + size.levels * size.k * size.d * elem + size.n * size.levels * 8
        for backend, t in times.items():
            rows.append(
                {
                    "op": "rq_encode",
                    "backend": backend.value,
                    "size": size.label,
                    "N": size.n,
                    "D": size.d,
                    "L": size.levels,
                    "K": size.k,
                    "dtype": str(dtype).removeprefix("torch."),
                    "median_ms": t * 1e3,
                    "rows_per_s": size.n / t,
                    "GFLOPs": flops / t / 1e9,
                    "GBps": bytes_moved / t / 1e9,
                    "speedup_vs_reference": times[Backend.REFERENCE] / t,
                }
            )
    return rows


def run_kernel_benchmarks(
    out_dir: Path, device: str, *, quick: bool = False, dtypes=("float32",), background: int = 0
) -> dict:
    """Time every kernel on ``device``; write kernels.json/.csv/.png under ``out_dir``.

    ``background``: CPU-bound processes kept running beside the run (genrec.bench.background)."""
    device = torch.device(device)
    sizes = None
    if quick:
        sizes = (RQSize(10_000, 32, 3, 256), RQSize(2_000, 128, 2, 64))
    rows = []
    with background_load(background) as load_record:
        ceilings = measure_ceilings(device)
        for dtype_name in dtypes:
            rows += bench_rq_encode(
                device, sizes=sizes, dtype=getattr(torch, dtype_name), min_run_time=0.1 if quick else 0.5
            )
    for row in rows:
        row["pct_of_copy_bw"] = 100 * row["GBps"] / ceilings["copy_GBps"]
        peak = ceilings.get("matmul_float32_TFLOPs")
        if peak:
            row["pct_of_fp32_matmul"] = 100 * row["GFLOPs"] / (peak * 1e3)
    payload = {
        "benchmark": "kernels",
        **environment(device),
        "ceilings": ceilings,
        "background_load": load_record,
        "threads": torch.get_num_threads(),
        "openmp": _openmp.describe(),
    }
    paths = write_results(out_dir, "kernels", payload, rows)
    groups = list(dict.fromkeys(f"{r['size']} {r['dtype']}" for r in rows))
    series: dict[str, list[float]] = {}
    for backend in dict.fromkeys(r["backend"] for r in rows):
        series[backend] = [
            next(
                (
                    r["rows_per_s"]
                    for r in rows
                    if r["backend"] == backend and f"{r['size']} {r['dtype']}" == g
                ),
                0.0,
            )
            for g in groups
        ]
    png = plot_bars(
        Path(out_dir) / "kernels.png", f"rq_encode on {payload['device']}", groups, series, "rows / s"
    )
    if png:
        paths["png"] = png
    return {"payload": payload, "rows": rows, "paths": paths}
