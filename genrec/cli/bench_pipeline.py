"""``genrec bench`` commands that run the pipeline's stages: encoders, cold, scale, serve (the
kernel, decode, thread and training-step benchmarks are genrec.cli.bench)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from genrec.cli.bench import bench_app, print_paths


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
    print_paths(console, result["paths"])


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
    print_paths(console, result["paths"])


def _stage_limits(timeout: list[str]) -> dict[str, float]:
    """--timeout STAGE=SECONDS options as {stage: seconds}."""
    from genrec.bench.scale import ALL_STAGES

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
    return limits


def _print_scale(console, result: dict) -> None:
    """Every measured row (size, stage, status, seconds, peak memory), then the files."""
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
    print_paths(console, result["paths"])


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
    train_budget: float | None = typer.Option(
        None, min=0, help="Training seconds of the train stage (default 480; 0: no cap, the whole epoch within its timeout)."
    ),
) -> None:
    """Time and peak memory of every pipeline stage on seeded synthetic catalogues of growing size."""
    from genrec.bench.scale import DECODE_STAGES, STAGES, TRAIN_BUDGET_S, parse_sizes, run_scale_benchmark

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
    limits = _stage_limits(timeout)
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
        train_budget_s=TRAIN_BUDGET_S if train_budget is None else train_budget,
        log=console.print,
    )
    _print_scale(console, result)


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
    print_paths(console, result["paths"])
