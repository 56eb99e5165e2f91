"""``genrec bench``: kernel and end-to-end benchmarks that write JSON, CSV and a plot."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from genrec.embed.runtime import torch_threads

_BACKGROUND_HELP = (
    "CPU-bound processes to keep running beside the benchmark (a busy machine); recorded in the JSON."
)

bench_app = typer.Typer(help="Benchmarks: each writes JSON, CSV and a PNG plot.", no_args_is_help=True)


def print_paths(console: Console, paths: dict) -> None:
    """One "kind: path" line per file a benchmark wrote (None: not written)."""
    for kind, path in paths.items():
        if path is not None:
            console.print(f"{kind}: {path}")


@bench_app.command("kernels")
def kernels(
    out: Path = typer.Option(Path("bench/results/local"), "--out", help="Folder for kernels.json/.csv/.png."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    quick: bool = typer.Option(False, help="Small sizes and short timing, for a smoke run."),
    dtype: list[str] = typer.Option(["float32"], help="Input dtypes to time (repeatable)."),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch and the kernels (0: torch's default)."),
    background_load: int = typer.Option(0, min=0, help=_BACKGROUND_HELP),
) -> None:
    """Time each operator per backend and report its speed-up over the PyTorch reference."""
    import torch

    from genrec.bench.kernels import run_kernel_benchmarks

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch_threads(threads):
        result = run_kernel_benchmarks(
            out, device, quick=quick, dtypes=tuple(dtype), background=background_load
        )
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
    print_paths(console, result["paths"])


def _decode_sweep(items: str, beams: str, models: str, baselines: str, quick: bool) -> dict:
    """The sweep's catalogue sizes, beams, models and baselines from the options, checked."""
    kwargs = dict(
        items=_ints(items, "--items"),
        beams=_ints(beams, "--beams"),
        models=tuple(m for m in models.split(",") if m),
        baselines=tuple(b for b in baselines.split(",") if b),
    )
    for m in kwargs["models"]:
        if m not in ("tiger", "precomputed"):
            raise typer.BadParameter(f"--models takes tiger and/or precomputed, got {m!r}")
    for b in kwargs["baselines"]:
        if b not in ("python_trie", "hf_generate"):
            raise typer.BadParameter(f"--baselines takes python_trie and/or hf_generate, got {b!r}")
    if quick:
        kwargs.update(items=(10_000,), beams=(10, 20))
    return kwargs


def _print_decode(console, result: dict) -> None:
    """The decode rows as a table (users/s, latency, select share, speed-up), then the files."""
    table = Table(title=f"decode on {result['payload']['device']}")
    for col in (
        "method",
        "backend",
        "model",
        "items",
        "beam",
        "users/s",
        "ms/batch",
        "select %",
        "x python trie",
    ):
        table.add_column(col)
    for r in result["rows"]:
        if r.get("kind") != "decode" or "users_per_s" not in r:
            continue
        speedup = r.get("speedup_vs_python_trie")
        table.add_row(
            r["method"],
            r["backend"],
            r["model"],
            f"{r['num_items']:,}",
            str(r["beam"]),
            f"{r['users_per_s']:,.1f}",
            f"{r['latency_ms']:.1f}",
            f"{100 * r['select_share']:.1f}",
            f"{speedup:.1f}" if speedup else "",
        )
    console.print(table)
    print_paths(console, result["paths"])


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(float(v)) for v in text.replace("_", "").split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{name} must be positive numbers, got {text!r}")
    return values


@bench_app.command("decode")
def decode(
    out: Path = typer.Option(Path("bench/results/local"), "--out", help="Folder for decode.json/.csv/.png."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    beams: str = typer.Option("10,20,50,100", help="Beam sizes, comma-separated."),
    items: str = typer.Option(
        "10000,1000000,10000000", help="Catalogue sizes (synthetic IDs), comma-separated."
    ),
    models: str = typer.Option(
        "tiger,precomputed", help="tiger (TIGER-size model) and/or precomputed (search only)."
    ),
    backend: list[str] = typer.Option(
        [], help="Beam-step backends to time (repeatable; default: all usable)."
    ),
    baselines: str = typer.Option(
        "python_trie,hf_generate", help="Baselines to run in the same sweep ('' for none)."
    ),
    baseline_max_items: int = typer.Option(1_000_000, help="Skip the baselines above this catalogue size."),
    users: int = typer.Option(0, help="Users per batch (0: sized per beam and device)."),
    repeats: int = typer.Option(3, help="Timed repeats per row (median reported)."),
    dtype: str = typer.Option("", help="Model dtype (default: bfloat16 on CUDA, float32 on the CPU)."),
    quick: bool = typer.Option(False, help="10k items, beams 10 and 20, small batches: a smoke run."),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch and the kernels (0: torch's default)."),
    background_load: int = typer.Option(0, min=0, help=_BACKGROUND_HELP),
    gpu_check: bool = typer.Option(
        False,
        "--gpu-check",
        help="The GPU check's decode part (~2 min on an H100): writes decode_summary.json.",
    ),
) -> None:
    """Constrained beam search: users/s, latency and mask-and-select share, against the baselines."""
    import torch

    from genrec.bench.decode import run_decode_benchmarks
    from genrec.bench.gpu_check import run_gpu_check

    console = Console()
    with torch_threads(threads):
        if gpu_check:
            if not torch.cuda.is_available():
                raise typer.BadParameter("--gpu-check needs a CUDA GPU")
            result = run_gpu_check(out, log=console.print)
            summary = result["summary"]
            if "error" in summary:
                console.print(f"[red]decode: {summary['error']}[/]: {summary['errors']}")
                raise typer.Exit(1)
            console.print(
                f"decode: {summary['users_per_s']:,.0f} users/s at beam {summary['beam']} on {summary['num_items']:,} "
                f"items ({summary['backend']}, graphed={summary['graphed']}), mask-and-select "
                f"{100 * summary['select_share']:.2f}% of decode time"
            )
            console.print(f"summary: {Path(out) / 'decode_summary.json'}")
            return
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs = _decode_sweep(items, beams, models, baselines, quick)
        result = run_decode_benchmarks(
            out,
            device,
            **kwargs,
            backends=list(backend) or None,
            baseline_max_items=baseline_max_items,
            repeats=repeats,
            users=users or None,
            dtype=dtype or None,
            quick=quick,
            background=background_load,
            log=console.print,
        )
        _print_decode(console, result)


@bench_app.command("threads")
def threads_command(
    out: Path = typer.Option(
        Path("bench/results/local-threads"), "--out", help="Folder for threads.json/.csv/.png."
    ),
    loads: str = typer.Option(
        "0,1", help="Background loads to run under (CPU-bound processes), comma-separated."
    ),
    repeats: int = typer.Option(3, min=1, help="Fresh processes per setting and load (medians reported)."),
    workload: list[str] = typer.Option(
        [], help="decode, decode_tiger, train, rq_encode_d32, rq_encode_d768 (repeatable; default: all)."
    ),
    policy: list[str] = typer.Option(
        [], help="after (genrec's OpenMP policy), before (libgomp's default), spin-1000 (genrec's earlier spin); default: all."
    ),
    quick: bool = typer.Option(
        False, help="Small workloads and few repeats inside each process: a smoke run."
    ),
) -> None:
    """CPU decoding, training steps and rq_encode at default / 1 / 2 threads, quiet and under load."""
    from genrec.bench.threads import POLICIES, WORKLOADS, run_thread_benchmarks

    try:
        load_values = tuple(int(v) for v in loads.split(",") if v.strip())
    except ValueError:
        load_values = ()
    if not load_values or min(load_values) < 0:
        raise typer.BadParameter(f"--loads must be comma-separated non-negative integers, got {loads!r}")
    for w in workload:
        if w not in WORKLOADS:
            raise typer.BadParameter(f"--workload takes {', '.join(WORKLOADS)}, got {w!r}")
    for p in policy:
        if p not in POLICIES:
            raise typer.BadParameter(f"--policy takes {', '.join(POLICIES)}, got {p!r}")
    console = Console()
    result = run_thread_benchmarks(
        out,
        loads=load_values,
        repeats=repeats,
        workloads=tuple(workload) or WORKLOADS,
        policies=tuple(policy) or tuple(POLICIES),
        quick=quick,
        log=console.print,
    )
    table = Table(title="threads: time / best of 1 and 2 threads (any policy)")
    for col in ("workload", "load", "policy", "threads", "rate", "unit", "x best"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(
            r["workload"],
            str(r["background_load"]),
            r["policy"],
            str(r["threads"]),
            f"{r['rate']:,.1f}",
            r["unit"],
            f"{r['slowdown_vs_best_1_or_2_threads_any_policy']:.2f}",
        )
    console.print(table)
    print_paths(console, result["paths"])


@bench_app.command("train-step")
def train_step_command(
    out: Path = typer.Option(
        Path("bench/results/local-train-step"), "--out", help="Folder for train_step.json/.csv/.png."
    ),
    sizes: str = typer.Option("12k,1m", help="Catalogue sizes in items, e.g. 12k,1m."),
    config: Path = typer.Option(Path("configs/tiger_beauty.toml"), "--config", help="Config of the model (cpu profile)."),
    steps: int = typer.Option(12, min=1, help="Steps per timed block."),
    reps: int = typer.Option(3, min=1, help="Timed blocks per dropout (they alternate)."),
    warmup: int = typer.Option(3, min=0, help="Untimed steps first."),
    threads: int = typer.Option(0, min=0, help="torch threads (0: torch's default)."),
) -> None:
    """A training step of the demo's model at catalogue sizes: genrec's CPU dropout against torch's."""
    from genrec.bench.scale import parse_sizes
    from genrec.bench.train_step import run_train_step_benchmark

    try:
        size_values = parse_sizes(sizes)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--sizes") from None
    if not config.is_file():
        raise typer.BadParameter(f"{config}: no such file", param_hint="--config")
    if threads:
        import torch

        torch.set_num_threads(threads)
    result = run_train_step_benchmark(out, size_values, config=config, steps=steps, reps=reps, warmup=warmup)
    console = Console()
    table = Table(title="training step (CPU)")
    for col in ("items", "dropout", "step ms", "examples/s", "x torch dropout"):
        table.add_column(col)
    for r in result["rows"]:
        if r["kind"] == "train_step":
            table.add_row(
                f"{r['items']:,}",
                r["dropout"],
                f"{1e3 * r['median_step_s']:.0f}",
                f"{r['examples_per_s']:,.0f}",
                f"{r['speedup_vs_torch_dropout']:.2f}",
            )
    console.print(table)
    print_paths(console, result["paths"])


def register(app: typer.Typer) -> None:
    # The pipeline benchmarks' commands live in genrec.cli.bench_pipeline, which adds them to
    # bench_app when imported; imported here, not at the top, because it imports bench_app from here.
    import genrec.cli.bench_pipeline  # noqa: F401

    app.add_typer(bench_app, name="bench")
