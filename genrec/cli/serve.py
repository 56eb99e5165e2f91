"""``genrec serve``: an HTTP service answering recommendation requests from a finished run
(genrec.serve). FastAPI and uvicorn are imported when the command runs, not before."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        run: Path = typer.Option(..., "--run", help="A run folder written by genrec train (only read)."),
        host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="The port (0: any free one)."),
        device: str = typer.Option("auto", help="cpu, cuda or auto."),
        beam: int = typer.Option(None, "--beam", min=1, help="Beam size (default: the run's eval.beam_size)."),
        dataset: Path = typer.Option(
            None, "--dataset", help="The run's prepared dataset (for known users), if it moved from where run.json says."
        ),
        users: bool = typer.Option(
            True, "--users/--no-users", help="Load the run's dataset to answer for known users."
        ),
        batching: bool = typer.Option(
            True, "--batching/--no-batching", help="Batch concurrent requests into one beam search."
        ),
        max_batch: int = typer.Option(64, "--max-batch", min=1, help="Requests per batch at most."),
        max_wait_ms: float = typer.Option(
            2.0, "--max-wait-ms", min=0.0, help="How long a batch waits for more requests after its first."
        ),
        max_body_bytes: int = typer.Option(
            1 << 20, "--max-body-bytes", min=1, help="Larger request bodies are refused (413)."
        ),
        max_list: int = typer.Option(
            1000, "--max-list", min=1, help="Items in a history, exclude or allow list at most."
        ),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
    ) -> None:
        """Serve recommendations over HTTP: POST /recommend (a history), POST /recommend/user (a known
        user), GET /health; the OpenAPI spec at /openapi.json, its docs at /docs."""
        from genrec.batch_recommend import BatchRecommendError
        from genrec.run_format import RunError
        from genrec.train.checkpoint import CheckpointError

        console = Console(stderr=True)
        if re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is None:
            raise typer.BadParameter(f"{device!r}: use cpu, cuda, cuda:N or auto", param_hint="--device")
        try:
            import uvicorn

            from genrec.serve.app import create_app
        except ImportError as e:
            console.print(f"genrec serve needs FastAPI and uvicorn ({e}): pip install fastapi uvicorn")
            raise typer.Exit(1) from None
        from genrec.serve.service import RecommendService

        try:
            service = RecommendService.open(
                run, device=device, beam_size=beam, dataset_dir=dataset, users=users, max_list=max_list
            )
        except (RunError, CheckpointError, BatchRecommendError, ValueError) as e:
            console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
            raise typer.Exit(1) from None
        app = create_app(
            service,
            batching=batching,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_body_bytes=max_body_bytes,
        )
        health = service.health()
        console.print(
            f"serving {run} ({health['num_items']} items, {health['device']}, batching "
            + (f"up to {max_batch} requests / {max_wait_ms:g} ms" if batching else "off")
            + f") on http://{host}:{port}",
            soft_wrap=True,
        )
        uvicorn.run(app, host=host, port=port, log_level=log_level)
