"""``genrec eval``: score a recommender on a split of a prepared dataset and save the metrics."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from genrec.settings import ConfigError, apply_assignments, build

console = Console(soft_wrap=True)


def _config_class(model: str):
    """The dataclass whose fields ``--param`` sets for ``model``, or None when it takes none."""
    if model == "cooccurrence":
        from genrec.eval.baselines import CoOccurrenceConfig

        return CoOccurrenceConfig
    if model == "content-knn":
        from genrec.eval.content_knn import ContentKNNConfig

        return ContentKNNConfig
    return None


def _read_params(model: str, pairs: list[str]) -> tuple[dict, str | None]:
    """``--param key=value`` for ``model``, read as ``--set`` is (genrec.settings: the value as TOML,
    a bare word a string) into the model's config dataclass: (the parameters, what is wrong or None)."""
    if not pairs:
        return {}, None
    config_class = _config_class(model)
    if config_class is None:
        keys = ", ".join(sorted(p.partition("=")[0] for p in pairs))
        return {}, f"--param: {model} takes no parameters, got {keys}"
    where = f"--param ({model})"
    try:
        table = apply_assignments({}, pairs, prefix="param", option="--param")["param"]
        config = build(config_class, table, "", where)
    except ConfigError as e:
        return {}, str(e)
    except (TypeError, ValueError) as e:
        return {}, f"{where}: {e}"
    return {key: getattr(config, key) for key in table}, None


def _check_embeddings(model: str, embeddings: Path | None) -> str | None:
    if model == "content-knn" and embeddings is None:
        return "--model content-knn needs --embeddings PATH (a `genrec embed --out` folder or its embeddings.npy)"
    if model != "content-knn" and embeddings is not None:
        return f"--embeddings applies to --model content-knn, not {model}"
    return None


def _check_output(output: Path | None) -> str | None:
    if output is None:
        return None
    if output.is_dir():
        return f"--output {output} is a folder; give a file name for the metrics JSON, e.g. {output / 'eval.json'}"
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        return f"--output {output}: {parent} is a file, not a folder"
    return None


def _fail(message: str) -> None:
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(1)


def print_metrics(metrics: dict, ks: list[int], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for name in ("recall", "ndcg", "coverage", "gini", "novelty", "avg_popularity"):
        values = [metrics.get(f"{name}@{k}") for k in ks]
        table.add_row(name, *("-" if v is None else f"{v:.4f}" for v in values))
    console.print(table)
    rest = {k: v for k, v in metrics.items() if "@" not in k}
    console.print("  ".join(f"{k}={v:.4f}" for k, v in rest.items() if isinstance(v, float)))


def eval_command(
    model: str = typer.Option(None, "--model", help="mostpop, cooccurrence or content-knn."),
    run: Path = typer.Option(
        None,
        "--run",
        "--run-dir",
        help="Instead of --model: a genrec train run folder, decoded as its test stage does (its "
        "eval.ks, batch size, max_history); --data defaults to the run's dataset. Under torchrun "
        "spell it --run-dir (torchrun's parser takes --run for its --run-path).",
    ),
    data: Path = typer.Option(None, "--data", help="Prepared dataset directory (genrec data prepare)."),
    split: str = typer.Option("test", help="valid or test (train: the last training item)."),
    output: Path = typer.Option(
        None, "--output", help="Write the metrics JSON here (+ .per_user.parquet)."
    ),
    k: list[int] = typer.Option(
        None, "--k", help="Cut-offs (repeatable; default 5 10 20, or the run's eval.ks)."
    ),
    batch_size: int = typer.Option(
        None, min=1, help="Users per recommend() call (default 1024, or the run's eval.batch_users)."
    ),
    device: str = typer.Option("auto", help="--run: cpu, cuda or auto (under torchrun: the rank's GPU)."),
    exclude_history: bool = typer.Option(False, help="Remove each user's history items from its list."),
    param: list[str] = typer.Option([], "--param", help="Model parameter key=value (repeatable)."),
    embeddings: Path = typer.Option(
        None,
        "--embeddings",
        help="content-knn: item embeddings, a `genrec embed --out` folder or its embeddings.npy.",
    ),
    tune: bool = typer.Option(
        False,
        help="cooccurrence, content-knn: pick the best variant on the validation split first (a grid "
        "search; content-knn tunes with the --exclude-history given).",
    ),
    users: int = typer.Option(
        None,
        min=1,
        help="Evaluate a seeded random sample of this many users (quick checks; report full runs).",
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the --users sample."),
    per_user: bool = typer.Option(True, help="Also save per-user arrays for paired significance tests."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    items_by_id: bool = typer.Option(
        False,
        "--items-by-id",
        help="--run with --data: score the run on another dataset, its items matched to the run's by id "
        "(e.g. after genrec add-items, or genrec data hold-back's evaluation users).",
    ),
) -> None:
    """Score a recommender on a split: Recall/NDCG@K, MRR, coverage, Gini, novelty, popularity.

    Under torchrun (``torchrun --nproc_per_node N -m genrec.cli eval ...``) each process scores
    a share of the users' batches and rank 0 prints and saves the metrics, equal to one process's."""
    fail = _fail
    if (model is None) == (run is None):
        fail("give either --model (a baseline) or --run (a trained run folder)")
    if run is not None:
        problem = _check_run_options(param, embeddings, tune, exclude_history) or _check_output(output)
        if problem:
            fail(problem)
        if items_by_id and data is None:
            fail("--items-by-id needs --data (the dataset to score the run on)")
        _eval_run(run, data, split, output, k, batch_size, device, users, seed, per_user, progress, fail, items_by_id)
        return
    _eval_baseline(
        model, data, split, output, k, batch_size, exclude_history, param, embeddings, tune, users, seed,
        per_user, progress, items_by_id,
    )  # fmt: skip


def _eval_baseline(
    model, data, split, output, k, batch_size, exclude_history, param, embeddings, tune, users, seed,
    per_user, progress, items_by_id,
) -> None:  # fmt: skip
    """genrec eval --model: a baseline on a split, with its parameters checked (or tuned on the
    validation split) before any scoring."""
    from genrec.data import DataError, load_prepared
    from genrec.embed.artifacts import EmbeddingError
    from genrec.eval import evaluate, make_baseline
    from genrec.eval.baselines import BASELINES
    from genrec.eval.content_knn import ContentKNN, ContentKNNConfig

    fail = _fail
    if items_by_id:
        fail("--items-by-id applies to --run")
    if data is None:
        fail("--model needs --data (a prepared dataset directory)")
    if model not in BASELINES:
        fail(f"unknown model {model!r}; choose one of {', '.join(BASELINES)}")
    k = list(k) if k else [5, 10, 20]
    batch_size = batch_size or 1024
    params, problem = _read_params(model, param)
    problem = problem or _check_embeddings(model, embeddings) or _check_output(output)
    if not problem and tune and (model not in ("cooccurrence", "content-knn") or params):
        problem = "--tune applies to --model cooccurrence or content-knn without --param"
    if problem:  # found before any work
        fail(problem)
    try:
        dataset = load_prepared(data)
    except DataError as e:
        fail(str(e))
    knn = None
    if model == "content-knn":  # read and check the embeddings before any scoring
        try:
            knn = ContentKNN.from_dataset(dataset, embeddings, ContentKNNConfig(**params))
        except (EmbeddingError, ValueError) as e:
            fail(str(e))
    selection = None
    if tune:
        params, knn, selection = _tune_baseline(model, dataset, knn, k, exclude_history)
    rows = _sample_rows(dataset, split, users, seed)
    shard = _join_torchrun("cpu")
    try:
        recommender = knn if knn is not None else make_baseline(model, dataset, **params)
        result = evaluate(
            recommender,
            dataset,
            split,
            ks=k,
            batch_size=batch_size,
            exclude_history=exclude_history,
            rows=rows,
            progress=progress,
            shard=shard,
        )
    except ValueError as e:
        fail(str(e))
    if selection is not None:
        result.info["selection"] = selection
    _finish(result, rows, seed, f"{model} on {dataset.name} {split}", output, per_user, shard)


def _tune_baseline(model: str, dataset, knn, k, exclude_history: bool):
    """(chosen parameters, the content-KNN with them or None, the selection record): the best
    variant on the validation split by NDCG@10."""
    from genrec.eval.baselines import tune_cooccurrence
    from genrec.eval.content_knn import tune_content_knn

    with console.status(f"tuning {model} on the validation split"):
        if knn is not None:
            best, table = tune_content_knn(knn, dataset, ks=k, exclude_history=exclude_history)
            knn = knn.with_config(best)
        else:
            best, table = tune_cooccurrence(dataset, ks=k)
    params = {key: value for key, value in best.__dict__.items()}
    selection = {"split": "valid", "metric": "ndcg@10", "chosen": params, "variants": table}
    if knn is not None:
        selection["exclude_history"] = exclude_history
    console.print(f"chosen on valid (ndcg@10): {params}")
    return params, knn, selection


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _check_run_options(param, embeddings, tune, exclude_history) -> str | None:
    """Options of the baselines that a run (which decodes as its test stage did) does not take."""
    given = [
        name
        for name, value in (
            ("--param", param),
            ("--embeddings", embeddings),
            ("--tune", tune),
            ("--exclude-history", exclude_history),
        )
        if value
    ]
    if given:
        return f"{', '.join(given)} apply to --model only; a --run decodes as its test stage did"
    return None


def _sample_rows(dataset, split: str, users: int | None, seed: int):
    """A seeded sample of ``users`` rows of the split (sorted), or None for all."""
    from genrec.eval.evaluator import sample_rows

    return sample_rows(len(dataset.split(split)), users, seed)


def _join_torchrun(device: str):
    """This process's place in the torchrun group (gloo on CPUs, NCCL on GPUs), or None alone."""
    import torch

    from genrec.train import distributed

    if not distributed.launched_by_torchrun():
        return None
    return distributed.setup(torch.device(device))


def _finish(result, rows, seed, title, output, per_user, shard) -> None:
    """Print and save the result (on rank 0 only), then leave the torchrun group."""
    from genrec.train import distributed

    if rows is not None:
        result.info["sample"] = {"users": len(rows), "seed": seed}
    if shard is None or shard.is_main:
        print_metrics(result.metrics, result.info["ks"], title)
        if output is not None:
            paths = result.save(output, per_user=per_user)
            for kind, path in paths.items():
                console.print(f"{kind}: {path}")
    if shard is not None:
        distributed.cleanup(shard)


def _eval_run(
    run, data, split, output, k, batch_size, device, users, seed, per_user, progress, fail, items_by_id=False
) -> None:
    """genrec eval --run: the run's recommender as its test stage builds it (genrec.batch_recommend)."""
    from genrec.batch_recommend import BatchRecommendError, open_tested_run
    from genrec.eval import evaluate
    from genrec.run_format import RunError
    from genrec.train.checkpoint import CheckpointError
    from genrec.train.distributed import resolve_device

    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is None:
        fail(f"--device {device!r}: use cpu, cuda, cuda:N or auto")
    try:
        dev = resolve_device(device)  # under torchrun, "auto" is this rank's GPU
        tested = open_tested_run(
            run, device=str(dev), batch_users=batch_size, dataset_dir=data, items_by_id=items_by_id
        )
    except (BatchRecommendError, RunError, CheckpointError, RuntimeError, ValueError) as e:
        fail(str(e))
    config, dataset = tested.config, tested.dataset
    rows = _sample_rows(dataset, split, users, seed)
    shard = _join_torchrun(str(dev))
    try:
        result = evaluate(
            tested.recommender,
            dataset,
            split,
            ks=list(k) if k else list(config.eval.ks),
            batch_size=tested.recommender.batch_users,
            max_history=config.train.max_history,
            rows=rows,
            progress=progress,
            shard=shard,
        )
    except ValueError as e:
        fail(str(e))
    result.info.update({"run": str(run), "beam_size": getattr(tested.recommender, "beam_size", None)})
    if items_by_id:
        result.info["items_by_id"] = {
            "dataset_items_unknown_to_run": int((tested.recommender.to_run < 0).sum()),
            "history_items_unknown_to_run": tested.recommender.unknown_history_items,
        }
    _finish(result, rows, seed, f"{run} on {dataset.name} {split}", output, per_user, shard)
