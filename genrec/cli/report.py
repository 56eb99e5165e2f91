"""``genrec report``: compare runs side by side in a Markdown report with PNG plots."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        runs: list[Path] = typer.Argument(
            ...,
            help="Runs to compare: genrec train run folders, multi-seed folders (--seeds) or genrec eval result JSON files.",
        ),
        out: Path = typer.Option(..., "--out", help="Folder for report.md, report.json and the PNG plots."),
        name: list[str] = typer.Option(
            [], "--name", help="Label of each run, in order (repeat once per run)."
        ),
        data: Path = typer.Option(
            None,
            "--data",
            help="The prepared dataset the runs were scored on (default: the path they recorded).",
        ),
        metric: list[str] = typer.Option(
            ["recall@10", "ndcg@10"],
            "--metric",
            help="Per-user metrics to test for significance (repeatable).",
        ),
        permutations: int = typer.Option(10_000, help="Random sign patterns of the permutation test."),
        seed: int = typer.Option(0, help="Seed of the permutation test."),
        alpha: float = typer.Option(0.05, help="Significance level (after the Holm correction)."),
        plots: bool = typer.Option(True, help="Write the PNG plots (needs matplotlib)."),
    ) -> None:
        """Accuracy over seeds, paired significance tests, beyond-accuracy metrics, accuracy by item
        popularity and history length, and cost, for runs scored on the same split."""
        from genrec.report import ReportInputError, ReportOptions, RunMismatchError, build_report
        from genrec.report.markdown import metric_name, spread

        def fail(message: str) -> None:
            Console(stderr=True).print(
                Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True
            )
            raise typer.Exit(1)

        if permutations < 1:
            fail(f"--permutations must be >= 1, got {permutations}")
        if not 0 < alpha < 1:
            fail(f"--alpha must be in (0, 1), got {alpha}")
        options = ReportOptions(
            tested_metrics=tuple(metric), permutations=permutations, seed=seed, alpha=alpha, plots=plots
        )
        try:
            with console.status("building the report"):
                report = build_report(runs, out, labels=name or None, data=data, options=options)
        except (ReportInputError, RunMismatchError) as e:
            fail(str(e))
        numbers = report.data
        for note in numbers["notes"]:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        table = Table(title=f"{numbers['dataset']} {numbers['split']} ({numbers['num_users']:,} users)")
        keys = list(next(iter(numbers["accuracy"].values())).keys())
        table.add_column("method")
        for key in keys:
            table.add_column(metric_name(key), justify="right")
        for method, row in numbers["accuracy"].items():
            table.add_row(method, *(spread(row.get(k)) for k in keys))
        console.print(table)
        for test in numbers["significance"]:
            console.print(
                f"{metric_name(test['metric'])}: {test['a']} - {test['b']} = {test['mean_diff']:+.4f}, "
                f"p = {test['p_t']:.2g} (t), {test['p_perm']:.2g} (permutation), Holm {test['p_t_holm']:.2g}",
                highlight=False,
            )
        for kind, path in report.files.items():
            console.print(f"{kind}: {path}")
