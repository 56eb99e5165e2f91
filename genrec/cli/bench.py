"""``genrec bench``: kernel and end-to-end benchmarks that write JSON, CSV and a plot."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

bench_app = typer.Typer(help="Benchmarks: each writes JSON, CSV and a PNG plot.", no_args_is_help=True)


@bench_app.command("kernels")
def kernels(
    out: Path = typer.Option(Path("bench/results/local"), "--out", help="Folder for kernels.json/.csv/.png."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    quick: bool = typer.Option(False, help="Small sizes and short timing, for a smoke run."),
    dtype: list[str] = typer.Option(["float32"], help="Input dtypes to time (repeatable)."),
) -> None:
    """Time each operator per backend and report its speed-up over the PyTorch reference."""
    import torch

    from genrec.bench.kernels import run_kernel_benchmarks

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run_kernel_benchmarks(out, device, quick=quick, dtypes=tuple(dtype))
    table = Table(title=f"kernels on {result['payload']['device']}")
    for col in ("op", "backend", "size", "dtype", "median ms", "rows/s", "GFLOP/s", "x reference"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(
            r["op"],
            r["backend"],
            r["size"],
            r["dtype"],
            f"{r['median_ms']:.3f}",
            f"{r['rows_per_s']:.3g}",
            f"{r['GFLOPs']:.1f}",
            f"{r['speedup_vs_reference']:.2f}",
        )
    console = Console()
    console.print(table)
    console.print(
        "ceilings: "
        + ", ".join(f"{k}={v:.1f}" for k, v in result["payload"]["ceilings"].items() if isinstance(v, float))
    )
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
