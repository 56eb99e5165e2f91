"""``genrec train``: the whole pipeline from raw data to a tested generative recommender."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        config: Path = typer.Option(None, "--config", help="TOML config (e.g. configs/tiger_beauty.toml)."),
        profile: str = typer.Option(
            None, "--profile", help="A profile of the config (its profile.NAME tables), e.g. cpu."
        ),
        overrides: list[str] = typer.Option(
            [], "--set", help="section.key=value, applied last (repeatable), e.g. --set train.lr=3e-4."
        ),
        run_dir: Path = typer.Option(None, "--run-dir", help="Run folder (default runs/<run.name>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --run-dir."),
        until: str = typer.Option(
            "test", "--until", help="Stop after this stage: prepare, embed, tokenize, train or test."
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        seeds: int = typer.Option(
            1,
            "--seeds",
            min=1,
            help="Train this many seeds (run.seed, run.seed + 1, ...) into RUN_DIR/seed-<s>/ and write their "
            "mean and spread to RUN_DIR/seeds.json (genrec report RUN_DIR compares them).",
        ),
        force_run_dir: bool = typer.Option(
            False,
            "--force-run-dir",
            help="Train into --run-dir even though it holds files that are not a genrec run.",
        ),
    ) -> None:
        """Prepare -> embed -> tokenize -> train -> test; each stage reused when its inputs and settings are unchanged.

        Under ``torchrun --nproc_per_node N -m genrec.cli train ...`` training runs on N processes
        (DistributedDataParallel; NCCL on GPUs, gloo on CPUs) with the same global batch.
        """
        from genrec.config import load_config
        from genrec.data.errors import DataError
        from genrec.pipeline import STAGES, run_pipeline
        from genrec.pipeline.run_folder import check_seeds_folder
        from genrec.run_format import RunError
        from genrec.settings import ConfigError
        from genrec.train.checkpoint import CheckpointError

        console = Console()
        if until not in STAGES:
            raise typer.BadParameter(f"must be one of {', '.join(STAGES)}", param_hint="--until")
        try:
            cfg = load_config(config, profile, overrides)
        except ConfigError as e:
            _error(console, "config error: ", e)
            raise typer.Exit(2) from None
        folder = run_dir or Path("runs") / (cfg.run.name or "run")
        if seeds > 1 and until != "test":
            raise typer.BadParameter(
                "several seeds are aggregated from their test metrics: leave --until out"
            )
        kwargs = dict(
            resume=resume, until=until, console=console, progress=progress, force_run_dir=force_run_dir
        )
        try:
            if seeds > 1:
                from genrec.report.seeds import print_seeds_summary, run_seeds

                check_seeds_folder(folder, force=force_run_dir)

                def one_seed(seed_config, seed_folder):
                    return run_pipeline(seed_config, seed_folder, **kwargs).metrics

                print_seeds_summary(run_seeds(one_seed, cfg, folder, seeds, say=console.print), console)
            else:
                run_pipeline(cfg, folder, **kwargs)
        except (ConfigError, CheckpointError, RunError, DataError) as e:
            _error(console, "error: ", e)
            raise typer.Exit(1) from None


def _error(console: Console, label: str, error: Exception) -> None:
    """An error without a traceback; the message is plain text (a key like [train] stays visible)."""
    from rich.text import Text

    console.print(Text.assemble((label, "bold red"), str(error)), soft_wrap=True)
