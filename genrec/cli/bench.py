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
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


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
        for kind, path in result["paths"].items():
            console.print(f"{kind}: {path}")


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
        [], help="after (genrec's OpenMP policy) and/or before (libgomp's default); default: both."
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
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


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
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


@bench_app.command("encoders")
def encoders(
    config: Path = typer.Option(
        Path("configs/ablation_encoders_beauty.toml"),
        "--config",
        help="Run config (TOML) every variant starts from.",
    ),
    profile: str = typer.Option(None, help="A profile of the config, e.g. cpu."),
    set_: list[str] = typer.Option(
        [], "--set", help="section.key=value override for every variant (repeatable)."
    ),
    variant: list[str] = typer.Option(
        [], "--variant", help="text, multimodal and/or diffusion (repeatable; default: all three)."
    ),
    out: Path = typer.Option(
        Path("bench/results/local-encoders"), "--out", help="Folder for encoders.json/.csv/.md."
    ),
    runs_dir: Path = typer.Option(
        Path("runs/encoders"), "--runs-dir", help="Where each variant's run folder (weights, logs) goes."
    ),
    label: str = typer.Option("", help="Names the results, e.g. 'CPU profile' (default: the profile)."),
) -> None:
    """Item-encoder ablation: text vs multimodal vs multimodal + diffusion, each trained and tested."""
    from genrec.bench.encoders import VARIANTS, run_encoder_ablation
    from genrec.data import DataError
    from genrec.embed import EmbeddingError
    from genrec.settings import ConfigError

    console = Console()
    try:
        result = run_encoder_ablation(
            config,
            out,
            runs_dir,
            profile=profile,
            overrides=set_,
            variants=variant or tuple(VARIANTS),
            label=label,
            console=console,
        )
    except (ConfigError, DataError, EmbeddingError, FileNotFoundError) as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table(title=f"encoder ablation ({result['payload']['label']})")
    keys = ("recall@10", "ndcg@10", "cold_target/recall@10", "cold_target/ndcg@10", "warm_target/recall@10")
    for col in ("variant", *keys):
        table.add_column(col)
    for row in result["rows"]:
        table.add_row(row["variant"], *("-" if row.get(k) is None else f"{row[k]:.4f}" for k in keys))
    console.print(table)
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


@bench_app.command("cold")
def cold(
    run: Path = typer.Option(..., "--run", help="A finished cold-start run (model.cold_candidates > 0)."),
    out: Path = typer.Option(Path("bench/results/local-cold"), "--out", help="Folder for cold.json/.csv/.png/.md."),
    epsilon: list[float] = typer.Option([], "--epsilon", help="Caps to score (repeatable; default 0 .1 .2 .3 .5)."),
    device: str = typer.Option("cpu", help="Device to decode on."),
) -> None:
    """Cold and warm-target accuracy of a cold-start run's test lists against the cap epsilon."""
    from genrec.bench.cold import EPSILONS, run_cold_ablation
    from genrec.run_format import RunError

    console = Console()
    bad = [e for e in epsilon if not 0 <= e <= 1]
    if bad:
        Console(stderr=True).print(f"[bold red]error:[/] --epsilon {bad[0]} must be in [0, 1]", highlight=False)
        raise typer.Exit(1)
    try:
        result = run_cold_ablation(run, out, tuple(epsilon) or EPSILONS, device=device)
    except (RunError, FileNotFoundError, KeyError) as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table(title=f"cold items against epsilon ({run})")
    keys = ("recall@10", "cold_target/recall@10", "warm_target/recall@10")
    for col in ("epsilon", *keys):
        table.add_column(col)
    for row in result["rows"]:
        table.add_row(f"{row['epsilon']:g}" + (" *" if row["chosen"] else ""), *(f"{row[k]:.4f}" for k in keys))
    console.print(table)
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


@bench_app.command("scale")
def scale(
    out: Path = typer.Option(Path("bench/results/local-scale"), "--out", help="Folder for scale.json/.csv/.png."),
    sizes: str = typer.Option(
        "12k,100k,1m",
        help="Catalogue sizes in items (12k, 100k, 1m: the issue's users and interactions; others scaled); "
        "none: only --decode-sizes.",
    ),
    config: Path = typer.Option(Path("configs/tiger_beauty.toml"), "--config", help="Run config of the stages."),
    profile: str = typer.Option("cpu", help="Profile of --config ('' for none)."),
    stage_timeout: float = typer.Option(900.0, min=1, help="Seconds a stage may run before it is killed."),
    timeout: list[str] = typer.Option(
        [], "--timeout", help="A stage's own limit, STAGE=SECONDS (repeatable), e.g. --timeout train=1200."
    ),
    stages: str = typer.Option(
        "prepare,embed,tokenize,train,test", help="Stages to run (the synthetic data is always generated)."
    ),
    test_users: int = typer.Option(
        50_000, min=0, help="A seeded sample of users for the test, where the pipeline supports one (0: all)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the synthetic data."),
    work: Path = typer.Option(None, help="Folder for the datasets and runs (default: a temporary one)."),
    keep_work: bool = typer.Option(False, help="Keep the temporary work folder."),
    merge: bool = typer.Option(
        False, help="Keep the rows already in --out/scale.json except those measured again (same size and group)."
    ),
    decode_sizes: str = typer.Option(
        "",
        help="Also the decoding stages at these sizes, e.g. 1m,10m: synthetic semantic IDs, trie build, one "
        "beam batch (256 users, beam 20, random logits), a fitted tokenizer's encode of that many embeddings.",
    ),
    decode_stages: str = typer.Option(
        "semantic_ids,trie,beam,encode", help="Decoding stages to run (with the ones they need)."
    ),
) -> None:
    """Time and peak memory of every pipeline stage on seeded synthetic catalogues of growing size."""
    from genrec.bench.scale import ALL_STAGES, DECODE_STAGES, STAGES, parse_sizes, run_scale_benchmark

    def sizes_of(text: str, option: str, none_ok: bool) -> tuple[int, ...]:
        if none_ok and text.strip().lower() in ("", "none"):
            return ()
        try:
            return parse_sizes(text)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint=option) from None

    decode_values = sizes_of(decode_sizes, "--decode-sizes", True)
    size_values = sizes_of(sizes, "--sizes", bool(decode_values))  # none: only the decoding stages
    stage_names = tuple(s.strip() for s in stages.split(",") if s.strip())
    for s in stage_names:
        if s not in STAGES:
            raise typer.BadParameter(f"{s!r} is not one of {', '.join(STAGES)}", param_hint="--stages")
    decode_names = tuple(s.strip() for s in decode_stages.split(",") if s.strip())
    for s in decode_names:
        if s not in DECODE_STAGES:
            raise typer.BadParameter(f"{s!r} is not one of {', '.join(DECODE_STAGES)}", param_hint="--decode-stages")
    limits: dict[str, float] = {}
    for item in timeout:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or name not in ALL_STAGES or seconds <= 0:
            raise typer.BadParameter(
                f"expected STAGE=SECONDS with STAGE one of {', '.join(ALL_STAGES)}, got {item!r}",
                param_hint="--timeout",
            )
        limits[name] = seconds
    if size_values and not config.is_file():
        raise typer.BadParameter(f"{config} does not exist", param_hint="--config")
    console = Console()
    result = run_scale_benchmark(
        out,
        size_values,
        config=config,
        profile=profile or None,
        stage_timeout_s=stage_timeout,
        stage_timeouts=limits,
        stages=stage_names,
        test_users=test_users,
        seed=seed,
        work_dir=work,
        keep_work=keep_work,
        merge=merge,
        decode_sizes=decode_values,
        decode_stages=decode_names,
        log=console.print,
    )
    table = Table(title=f"scale on {result['payload']['device']}")
    for col in ("items", "users", "interactions", "stage", "status", "seconds", "own s", "peak GB", "load"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(
            f"{r['items']:,}",
            f"{r['users']:,}" if "interactions" in r else "",  # the decoding rows have no users
            f"{r['interactions']:,}" if "interactions" in r else "",
            r["stage"],
            r["status"],
            f"{r['seconds']:.1f}" if "seconds" in r else "",
            f"{r['operation_seconds']:.3g}" if r.get("operation_seconds") is not None else "",
            f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "",
            f"{r['load_1min_before']:.2f}" if "load_1min_before" in r else "",
        )
    console.print(table)
    for kind, path in result["paths"].items():
        console.print(f"{kind}: {path}")


@bench_app.command("serve")
def serve(
    run: Path = typer.Option(..., "--run", help="A finished run folder to serve (only read)."),
    out: Path = typer.Option(
        Path("bench/results/serve-cpu"), "--out", help="Folder for serve_load.json/.csv/.png."
    ),
    clients: int = typer.Option(64, help="Concurrent clients, one connection each."),
    requests: int = typer.Option(2000, help="Requests per mode at most."),
    duration: float = typer.Option(
        60.0, help="Seconds per mode at most (then the requests in flight finish)."
    ),
    k: int = typer.Option(10, "--k", help="Items per answer."),
    max_batch: int = typer.Option(64, help="The batched server's largest batch."),
    max_wait_ms: list[str] = typer.Option(
        ["2"],
        "--max-wait-ms",
        help="The batched server's wait (repeatable or comma-separated: one run each).",
    ),
    device: str = typer.Option("cpu", help="Device the servers decode on."),
    modes: str = typer.Option("batched,unbatched", help="batched and/or unbatched, comma-separated."),
    warmup: int = typer.Option(8, help="Requests sent one at a time before timing."),
    seed: int = typer.Option(0, help="Seed of the users whose histories are sent."),
) -> None:
    """Load test of ``genrec serve`` on loopback: throughput and latency with and without micro-batching."""
    from genrec.bench.serve_load import run_load

    try:
        waits = tuple(float(w) for text in max_wait_ms for w in text.split(",") if w.strip())
    except ValueError:
        raise typer.BadParameter(
            f"give milliseconds, repeated or comma-separated, got {', '.join(max_wait_ms)!r}",
            param_hint="--max-wait-ms",
        ) from None
    console = Console()
    try:
        result = run_load(
            run,
            out,
            clients=clients,
            requests=requests,
            duration=duration,
            k=k,
            max_batch=max_batch,
            max_wait_ms=waits,
            device=device,
            warmup=warmup,
            modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
            seed=seed,
        )
    except (ValueError, RuntimeError) as e:  # bad settings or run folder; a server that did not start
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table(title=f"genrec serve under load ({result['environment']['device']})")
    for col in ("mode", "wait ms", "answered", "req/s", "p50 ms", "p99 ms", "errors", "mean batch"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(
            r["mode"],
            "" if r["max_wait_ms"] is None else f"{r['max_wait_ms']:g}",
            str(r["answered"]),
            f"{r['requests_per_s'] or 0:.1f}",
            f"{r['latency_ms_p50'] or 0:.0f}",
            f"{r['latency_ms_p99'] or 0:.0f}",
            str(r["errors"]),
            "" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}",
        )
    console.print(table)
    for kind, path in result["paths"].items():
        if path is not None:
            console.print(f"{kind}: {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
