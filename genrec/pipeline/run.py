"""``genrec train`` end to end: prepare -> embed -> tokenize -> train -> test, each stage reused
when its inputs and settings are unchanged, and an honest table at the end.

The run folder holds everything needed to use the model later (``genrec recommend``):

```
RUN/config.json        the resolved config           RUN/run.json       stages, inputs, results
RUN/tokenizer/         semantic_ids.npy, tokenizer.json (the IDs the model was trained on)
RUN/items.parquet      item_idx, item_id, title       RUN/model.safetensors  the best weights
RUN/checkpoints/       resumable checkpoints          RUN/best.safetensors
RUN/metrics.jsonl      training/validation log (+ RUN/tensorboard/ when installed)
RUN/metrics.json       the test metrics, under genrec.eval's keys
RUN/test_eval.json     the evaluator's full result (+ per-user parquet for paired tests)
RUN/summary.json       headline numbers and wall-clock per stage (gpu_summary.json on a GPU)
```
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from genrec import cpu_threads
from genrec.catalogue import save_run_encoders
from genrec.config import Config
from genrec.data import load_prepared
from genrec.devices import peak_memory, reset_peak_memory
from genrec.embed.artifacts import load_embeddings
from genrec.faults import fault_point
from genrec.files import array_sha256
from genrec.models import identity_codes, model_class
from genrec.pipeline.cache import StageCache, StageOutput, default_cache_root
from genrec.pipeline.fusion_stage import prepare_similarity
from genrec.pipeline.run_folder import RunFolderLock, check_run_folder
from genrec.pipeline.stages import (
    embed_stage,
    prepare_stage,
    semantic_ids_hash,
    tokenize_stage,
)
from genrec.pipeline.summary import STAGES, PipelineResult, finish_run, print_summary
from genrec.pipeline.test_stage import run_test
from genrec.profile_similarity import SIMILARITY_FILE, load_similarity
from genrec.run_format import read_run_json, update_run_json, write_run_inputs
from genrec.serve.run import recommender_for
from genrec.settings import stable_hash
from genrec.tokenize.artifacts import load_semantic_ids, read_tokenizer_info
from genrec.train import distributed
from genrec.train.checkpoint import load_model_weights
from genrec.train.inputs import TrainInputs
from genrec.train.recipe import autocast_dtype, build_training_model, training_signature
from genrec.train.trainer import fit


def _data_stages(
    config: Config, cache: StageCache, until: str, item_id_model: bool, say
) -> dict[str, StageOutput]:
    out: dict[str, StageOutput] = {}
    say("[bold]prepare[/]")
    out["prepare"] = prepare_stage(config, cache)
    _report(out["prepare"], say)
    if until == "prepare" or item_id_model:
        return out
    dataset = load_prepared(out["prepare"].path)
    say("[bold]embed[/]")
    out["embed"] = embed_stage(config, dataset, cache)
    _report(out["embed"], say)
    if until == "embed":
        return out
    say("[bold]tokenize[/]")
    out["tokenize"] = tokenize_stage(config, dataset, out["embed"], cache)
    _report(out["tokenize"], say)
    return out


def _report(stage: StageOutput, say) -> None:
    how = (
        "given"
        if stage.info.get("given")
        else ("cached" if stage.cached else f"done in {stage.seconds:.1f}s")
    )
    say(f"  {stage.stage}: {how} -> {stage.path} (key {stage.key})")


def run_pipeline(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    until: str = "test",
    console=None,
    progress: bool = True,
    force_run_dir: bool = False,
) -> PipelineResult:
    """Run the stages of ``config`` up to ``until`` into ``run_dir``; see the module docstring.

    A run folder is checked before any work (genrec.pipeline.run_folder: new, empty or a genrec
    run unless ``force_run_dir``; no symbolic links; writable) and locked while it is written.
    """

    if until not in STAGES:
        raise ValueError(f"until must be one of {', '.join(STAGES)}, got {until!r}")
    console = console or Console()
    run_dir = Path(run_dir)
    device = distributed.resolve_device(config.run.device)
    if until not in ("train", "test") or int(os.environ.get("RANK", "0")) != 0:
        return _run_pipeline(config, run_dir, device, resume, until, console, progress)
    check_run_folder(run_dir, force=force_run_dir)
    with RunFolderLock(run_dir):
        return _run_pipeline(config, run_dir, device, resume, until, console, progress)


@dataclass
class _Run:
    """One ``genrec train`` invocation: its settings, this process's place in it, and what it has
    measured so far (``result``, ``wall``: seconds per stage)."""

    config: Config
    run_dir: Path
    device: torch.device
    info: distributed.DistInfo
    resume: bool
    console: object
    progress: bool
    cache: StageCache
    result: PipelineResult
    wall: dict[str, float] = field(default_factory=dict)

    def say(self, *args, **kwargs) -> None:
        if self.info.is_main:
            self.console.print(*args, **kwargs)

    @property
    def item_id_model(self) -> bool:
        """Items are their own IDs (no embed or tokenize stage, no beam search)."""
        return model_class(self.config.model).serving != "beam_search"


def _run_pipeline(
    config: Config, run_dir: Path, device, resume: bool, until: str, console, progress: bool
) -> PipelineResult:
    info = distributed.setup(device)
    if config.run.threads:
        cpu_threads.use_fixed(config.run.threads)  # else genrec.cpu_threads adapts it to free cores
    cache = StageCache(config.run.cache_dir or default_cache_root())
    run = _Run(config, run_dir, device, info, resume, console, progress, cache, PipelineResult(run_dir))
    outputs = _data_stages_on_every_rank(run, until)
    if until in ("prepare", "embed", "tokenize"):
        run.say(f"stopped after {until} (--until); stage cache: {cache.root}")
        return run.result
    dataset, inputs, tok_dir, embed_dir = _training_inputs(run, outputs)
    if info.is_main:
        stage_settings = {name: out.settings for name, out in outputs.items()}
        _write_run_inputs(run, dataset, inputs, tok_dir, embed_dir, stage_settings)
    distributed.barrier(info)
    model = _train_stage(run, inputs)
    if until == "test":
        _test_stage(run, dataset, model, inputs.codes, outputs)
    distributed.cleanup(info)
    return run.result


def _data_stages_on_every_rank(run: _Run, until: str) -> dict[str, StageOutput]:
    """The stages before training: the main process runs them, the others then find them cached."""
    say = run.say
    outputs = _data_stages(run.config, run.cache, until, run.item_id_model, say) if run.info.is_main else None
    distributed.barrier(run.info)
    if not run.info.is_main:
        outputs = _data_stages(run.config, run.cache, until, run.item_id_model, say)
    for name, out in outputs.items():
        run.wall[name] = out.seconds
        run.result.stages[name] = out.summary()
    return outputs


def _training_inputs(run: _Run, outputs: dict[str, StageOutput]):
    """(dataset, TrainInputs, tokenizer folder, embed folder) from the stages' outputs."""
    dataset = load_prepared(outputs["prepare"].path)
    if run.item_id_model:
        codes, level_sizes, tok_dir = identity_codes(dataset.num_items), [dataset.num_items], None
        embed_dir = None
    else:
        tok_dir = outputs["tokenize"].path
        embed_dir = outputs["embed"].path
        codes = load_semantic_ids(tok_dir)
        level_sizes = [int(v) for v in read_tokenizer_info(tok_dir)["level_sizes"]]
    fingerprints = {"dataset": dataset.fingerprint, "semantic_ids": semantic_ids_hash(codes)}
    item_content = None
    if run.config.model.content_vectors:  # the model's content vectors read the embed stage's output
        item_content, _ = load_embeddings(outputs["embed"].path, num_items=dataset.num_items)
        fingerprints["item_content"] = array_sha256(item_content)
    inputs = TrainInputs.from_dataset(dataset, codes, level_sizes, fingerprints, item_content)
    return dataset, inputs, tok_dir, embed_dir


def _train_stage(run: _Run, inputs: TrainInputs):
    """The trained model: the run folder's when it already holds this training, else trained now."""
    config, run_dir, device = run.config, run.run_dir, run.device
    run.say("[bold]train[/]")
    signature_hash = stable_hash(training_signature(config, inputs))
    trained = read_run_json(run_dir).get("train", {})
    if trained.get("signature_hash") == signature_hash and (run_dir / "model.safetensors").is_file():
        run.say(f"  train: cached (run folder {run_dir} already holds this training)")
        model = build_training_model(config, inputs).to(device)
        load_model_weights(run_dir / "model.safetensors", model)
        run.wall["train"] = 0.0
        run.result.train = {**trained, "cached": True}
    else:
        started = time.perf_counter()
        reset_peak_memory(device)
        trained_result = fit(
            config,
            inputs,
            run_dir,
            device=device,
            dist_info=run.info,
            resume=run.resume,
            validate_fn=_validator(config, inputs, inputs.codes, device, run.item_id_model),
            console=run.console if run.info.is_main else None,
            progress=run.progress,
        )
        model = trained_result.model
        run.wall["train"] = time.perf_counter() - started
        run.result.train = {
            "signature_hash": signature_hash,
            "steps": trained_result.steps,
            "epochs": round(trained_result.epochs_completed, 2),
            "best": trained_result.best,
            "stopped_because": trained_result.stopped_because,
            "train_seconds": round(trained_result.train_seconds, 1),
            "peak_memory": peak_memory(device),  # read by the cost measurement after the test
            "cached": False,
        }
        if run.info.is_main:
            update_run_json(run_dir, {"train": run.result.train})
            fault_point("train-recorded")
    run.result.stages["train"] = {**run.result.train, "seconds": round(run.wall["train"], 2)}
    return model


def _test_stage(run: _Run, dataset, model, codes, outputs: dict[str, StageOutput]) -> None:
    """Test metrics, the summary files and the final table. Under torchrun every rank scores a share
    of the test users' batches (genrec.eval.sharding); rank 0 prepares the fusion beforehand and
    writes every file."""
    config, run_dir, info = run.config, run.run_dir, run.info
    run.say("[bold]test[/]")
    started = time.perf_counter()
    similarity = None
    if info.is_main:
        similarity = prepare_similarity(config, dataset, outputs.get("embed"), run.cache, run_dir)
    distributed.barrier(info)
    if not info.is_main and config.model.profile_embeddings:
        similarity = load_similarity(run_dir / SIMILARITY_FILE, dataset.num_items)
    run.result.metrics, cached = run_test(
        config, dataset, model, codes, run.device, run_dir, run.progress, similarity, info
    )
    run.wall["test"] = 0.0 if cached else time.perf_counter() - started
    run.result.stages["test"] = {"cached": cached, "seconds": round(run.wall["test"], 2)}
    run.say("  test: cached" if cached else f"  test: done in {run.wall['test']:.1f}s")
    if info.is_main:
        finish_run(config, run_dir, run.result, run.wall, run.device)
        print_summary(run.result, run.console)


def _write_run_inputs(run: _Run, dataset, inputs: TrainInputs, tok_dir, embed_dir, stage_settings: dict) -> None:
    """What the run depends on, into its folder (genrec.run_format): with each stage's settings as
    the stage hashed them, and the encoders' state ``genrec add-items`` needs later (genrec.catalogue)."""

    def save_encoders() -> dict:
        encoders = save_run_encoders(run.run_dir, embed_dir, tok_dir)
        return {"supported": encoders.supported, "reason": encoders.reason}

    write_run_inputs(
        run.run_dir,
        run.config,
        dataset,
        inputs.codes,
        inputs.level_sizes,
        tok_dir,
        inputs.fingerprints,
        stage_settings=stage_settings,
        save_encoders=save_encoders,
    )


def _validator(config: Config, inputs: TrainInputs, codes, device, item_id_model: bool):
    """validate_fn for fit(): summed NDCG@10/Recall@10 of validation rows, by the model's own decoding."""
    amp = autocast_dtype(config, device)
    holder: dict = {}

    def validate(model, users, starts, ends, targets):
        # A beam search recommender serves the whole run (its trie and CUDA graphs are reused);
        # inner-product retrieval is built afresh from the item vectors as they are now.
        if item_id_model or "rec" not in holder:
            holder["rec"] = recommender_for(
                model,
                codes,
                config.model,
                beam_size=config.train.val_beam,
                batch_users=config.train.eval_batch_users,
                device=device,
                amp_dtype=amp,
            )
        return holder["rec"].ranking_sums(inputs.flat_items, starts, ends, targets, users)

    return validate
