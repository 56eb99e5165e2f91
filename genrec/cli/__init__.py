"""The ``genrec`` command line: one module per command group, each thin over the library."""

from __future__ import annotations

import typer

from genrec.cli import bench, info
from genrec.cli import data as data_cli
from genrec.cli import embed as embed_cli
from genrec.cli import eval as eval_cli
from genrec.cli import recommend as recommend_cli
from genrec.cli import report as report_cli
from genrec.cli import serve as serve_cli
from genrec.cli import tokenize as tokenize_cli
from genrec.cli import train as train_cli

app = typer.Typer(
    name="genrec",
    help="Generative-retrieval recommendation: semantic IDs, a transformer, constrained beam search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
info.register(app)
bench.register(app)
data_cli.register(app)
eval_cli.register(app)
report_cli.register(app)
embed_cli.register(app)
tokenize_cli.register(app)
train_cli.register(app)
recommend_cli.register(app)
serve_cli.register(app)


def main() -> None:
    from genrec import cpu_threads

    cpu_threads.enable()  # no-op when the user fixed the count; run.threads / --threads still win
    app()
