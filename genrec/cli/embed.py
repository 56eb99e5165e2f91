"""``genrec embed``: one embedding per item of a prepared dataset, by a registered encoder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from genrec.embed.config import DEFAULT_TEMPLATE


def _fail(message: str) -> None:
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(1)


def _embed_config(ctx: typer.Context, flags: dict, config_file, profile, settings: list[str]):
    """EmbedConfig from, in order: the defaults or --config's [embed] table (with --profile), the
    --set assignments, then the options typed on the command line (their defaults never override)."""
    from genrec.config import load_config

    if profile and config_file is None:
        raise ValueError("--profile needs --config")
    overrides = [s if s.strip().startswith("embed.") else f"embed.{s.strip()}" for s in settings]
    config = load_config(config_file, profile, overrides).embed
    for name, value in flags.items():
        source = ctx.get_parameter_source(name)  # by name: typer may bring its own click
        if getattr(source, "name", "DEFAULT") != "DEFAULT":  # the options' defaults are EmbedConfig's
            setattr(config, name, value)
    return config.validate()


def embed(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder (`genrec data prepare`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write embeddings.npy and embed.json into."),
    encoder: str = typer.Option(
        "text", help="Item encoder: text, multimodal or diffusion (more may be registered)."
    ),
    model: str = typer.Option(
        None, help="Local sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2)."
    ),
    template: str = typer.Option(
        DEFAULT_TEMPLATE,
        help="Item text from item-table columns: {column}; a [...] section is dropped when a column in it is empty.",
    ),
    list_separator: str = typer.Option(", ", help="Joins the values of list columns such as categories."),
    batch_size: int = typer.Option(64, help="Texts per forward pass."),
    max_length: int = typer.Option(
        None, help="Truncate texts to this many tokens (default: the model's limit)."
    ),
    normalize: bool = typer.Option(True, help="Scale embeddings to unit length."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
    precision: str = typer.Option(
        "float32", help="float32, or bfloat16 (about 2x faster on CPUs with AMX/AVX512-BF16)."
    ),
    threads: int = typer.Option(0, help="CPU threads for the model (0: torch's default, one per core)."),
    cache: bool = typer.Option(
        True, help="Reuse embeddings computed before for the same model, texts and options."
    ),
    cache_dir: Path = typer.Option(
        None, help="Cache folder (default: $GENREC_CACHE_DIR/embeddings or ~/.cache/genrec/embeddings)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    config_file: Path = typer.Option(
        None,
        "--config",
        help="Take the \\[embed] table of a run config (e.g. configs/tiger_beauty.toml): the same "
        "embeddings `genrec train` computes. Options given on the command line win over it.",
    ),
    profile: str = typer.Option(None, help="A profile of --config, e.g. cpu."),
    setting: list[str] = typer.Option(
        [],
        "--set",
        help="Any embed setting, e.g. --set multimodal.epochs=50 (repeatable; applied after --config).",
    ),
) -> None:
    """Embed every item of a prepared dataset; row i of embeddings.npy is item index i."""
    from genrec.data import DataError
    from genrec.embed import EmbeddingError, embed_items
    from genrec.settings import ConfigError

    flags = dict(
        encoder=encoder,
        model=model,
        template=template,
        list_separator=list_separator,
        batch_size=batch_size,
        max_length=max_length,
        normalize=normalize,
        device=device,
        precision=precision,
        threads=threads,
        cache=cache,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        progress=progress,
    )
    try:
        config = _embed_config(ctx, flags, config_file, profile, setting)
    except (ConfigError, ValueError) as e:
        _fail(str(e))
    try:
        artifact = embed_items(data, config, out)
    except (DataError, EmbeddingError, FileNotFoundError, RuntimeError, ValueError) as e:
        _fail(str(e))
    _report(artifact)


def _report(artifact) -> None:
    meta = artifact.meta
    how = {
        None: f"computed in {meta.get('seconds', 0):.1f} s",
        "output": "already up to date",
        "cache": "from the cache",
    }
    Console(soft_wrap=True).print(
        f"wrote [bold]{artifact.path}[/]: {meta['num_items']:,} items x {meta['dimension']} "
        f"({meta['encoder']}, {meta.get('model', '?')}), {how[artifact.reused]}"
    )


def register(app: typer.Typer) -> None:
    app.command()(embed)
