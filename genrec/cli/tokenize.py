"""``genrec tokenize``: semantic IDs for every item, from its embedding (RQ-VAE or RQ-KMeans)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


def _fail(message: str) -> None:
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def tokenize(
        data: Path = typer.Option(..., "--data", help="Prepared dataset folder (`genrec data prepare`)."),
        embeddings: Path = typer.Option(
            ..., "--embeddings", help="Embeddings folder (`genrec embed`) or .npy file."
        ),
        out: Path = typer.Option(..., "--out", help="Folder to write the tokenizer artifacts into."),
        method: str = typer.Option(
            "rqvae", help="rqvae (trained autoencoder) or rqkmeans (residual k-means)."
        ),
        levels: int = typer.Option(3, help="Code levels before the disambiguation token."),
        codebook_size: int = typer.Option(256, help="Codes per level."),
        epochs: int = typer.Option(None, help="RQ-VAE training epochs (default: the tuned recipe's)."),
        seed: int = typer.Option(
            0, help="Seeds weights, batches, k-means and restarts: same seed, same IDs."
        ),
        device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
        kmeans_backend: str = typer.Option("auto", help="auto (faiss when installed), faiss or torch."),
        threads: int = typer.Option(1, help="CPU threads (0: torch's default); see tokenize.threads."),
        setting: list[str] = typer.Option(
            [], "--set", help="Any tokenize setting, e.g. --set rqvae.learning_rate=0.002 (repeatable)."
        ),
        progress: bool = typer.Option(True, help="Show a progress bar."),
    ) -> None:
        """Fit a tokenizer on the item embeddings and write semantic_ids.npy, codebooks, weights, metrics."""
        from genrec.data import DataError
        from genrec.embed import EmbeddingError
        from genrec.tokenize import TokenizeConfig, tokenize_dataset

        try:
            config = TokenizeConfig(
                method=method,
                levels=levels,
                codebook_size=codebook_size,
                seed=seed,
                device=device,
                kmeans_backend=kmeans_backend,
                threads=threads,
                progress=progress,
            )
            if epochs is not None:
                config.rqvae.epochs = epochs
            config = config.with_overrides(setting).validate()
            result = tokenize_dataset(data, embeddings, out, config)
        except (DataError, EmbeddingError, FileNotFoundError, RuntimeError, ValueError) as e:
            _fail(str(e))
        _report(result, out)


def _report(result, out: Path) -> None:
    m = result.metrics
    console = Console(soft_wrap=True)
    table = Table(title=f"{m['method']} semantic IDs, {m['collisions']['items']:,} items")
    for col in ("level", "codes used", "usage", "perplexity"):
        table.add_column(col, justify="right")
    for level in m["levels"]:
        table.add_row(
            str(level["level"]),
            str(level["codes_used"]),
            f"{level['usage']:.1%}",
            f"{level['perplexity']:.1f}",
        )
    console.print(table)
    c = m["collisions"]
    console.print(
        f"collisions before disambiguation: {c['colliding_items']:,} items ({c['collision_rate']:.2%}) in "
        f"{c['collision_groups']:,} groups, largest {c['largest_collision_group']}; "
        f"disambiguation level size {m['disambiguation_level_size']}"
    )
    o = m.get("overflow")
    if o and o["moved_items"]:
        console.print(
            f"cells over the disambiguation token's {o['cell_capacity']} items (largest {o['largest_cell_before']}): "
            f"{o['moved_items']:,} items moved to their nearest free ID"
        )
    console.print(
        f"reconstruction: mse {m['reconstruction']['mse']:.4f}, "
        f"unexplained variance {m['reconstruction']['relative_error']:.1%}; {m['seconds']:.1f} s on {m['device']}"
    )
    console.print(
        f"wrote [bold]{out}[/]: semantic_ids.npy {list(result.semantic_ids.shape)}, level_sizes {result.level_sizes}"
    )
