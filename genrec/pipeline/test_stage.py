"""The test stage of ``genrec train``: the fusion's weights chosen on validation, then the test
split scored through genrec.eval (and each part of a fused list replayed and scored), the decode
cost measured, everything written into the run folder; reused when the weights and test settings
are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from genrec.eval import evaluate
from genrec.eval.evaluator import sample_rows
from genrec.faults import fault_point
from genrec.files import file_sha256
from genrec.heap import keep_freed_memory
from genrec.pipeline.fusion_stage import prepare_fusion, similarity_fingerprint
from genrec.report.cost import count_parameters, write_run_cost
from genrec.run_format import read_run_json, update_run_json, write_json
from genrec.serve.beam import RecordedRanking
from genrec.serve.run import load_fusion, recommender_for
from genrec.settings import stable_hash
from genrec.train import distributed
from genrec.train.recipe import autocast_dtype


def run_test(
    config,
    dataset,
    model,
    codes,
    device,
    run_dir: Path,
    progress: bool,
    similarity=None,
    shard: distributed.DistInfo | None = None,
):
    """Test metrics through genrec.eval (reused when the weights and test settings are unchanged).
    With a torchrun ``shard`` each rank scores its share of the batches and gets the whole result;
    rank 0 alone tunes the fusion and writes."""
    # The batches below free and allocate the same large tensors over and over (genrec.heap).
    keep_freed_memory()
    main = shard is None or shard.is_main
    weights_hash = file_sha256(run_dir / "model.safetensors")
    amp = autocast_dtype(config, device)
    fusion, fusion_record = _test_fusion(
        config, dataset, model, codes, device, amp, run_dir, weights_hash, similarity, shard
    )
    key = stable_hash(
        {
            "weights": weights_hash,
            "eval": config.eval.__dict__,
            "dataset": dataset.fingerprint,
            "fusion": [fusion_record.get("weights"), config.model.fusion_candidates]
            + ([config.model.cold_candidates] if config.model.cold_candidates else [])
            + ([similarity_fingerprint(similarity)] if similarity is not None else []),
        }
    )
    metrics_path = run_dir / "metrics.json"
    previous = read_run_json(run_dir).get("test", {})
    # The test counts as done only when run.json records it, which happens after its last file.
    finals = (metrics_path, run_dir / "test_eval.json", run_dir / "cost.json")
    if previous.get("key") == key and all(p.is_file() for p in finals):
        return json.loads(metrics_path.read_text()), True
    rec = recommender_for(
        model,
        codes,
        config.model,
        beam_size=config.eval.beam_size,
        retrieval=config.eval.retrieval,
        fusion=fusion,
        record_components=fusion is not None,
        batch_users=config.eval.batch_users,
        device=device,
        amp_dtype=amp,
    )
    model.eval()
    test_options = dict(
        ks=tuple(config.eval.ks),
        batch_size=config.eval.batch_users,
        max_history=config.train.max_history,
        rows=sample_rows(len(dataset.split("test")), config.eval.users, config.run.seed),
    )
    sharded = shard if shard is not None and shard.world_size > 1 else None
    evaluated = evaluate(rec, dataset, "test", progress=progress, shard=sharded, **test_options)
    metrics = {**evaluated.metrics, **component_metrics(rec, dataset, run_dir, test_options, sharded)}
    if "invalid_rate" not in metrics:
        metrics["invalid_rate"] = 0.0  # inner-product retrieval only returns catalogue items
    if main:
        _save_test(config, dataset, model, rec, device, run_dir, evaluated, metrics, key)
    if shard is not None:
        distributed.barrier(shard)  # the files are written before any rank moves on
    return metrics, False


def component_metrics(rec, dataset, run_dir: Path, test_options: dict, shard=None) -> dict[str, float]:
    """The test metrics of each part of a fused ranking (genrec.fusion.COMPONENTS: the beam search
    alone, the beam with the item head), replayed from what the test recorded, under keys
    ``<component>/<metric>``; each component's per-user file beside test_eval.json."""
    recorded = getattr(rec, "recorded", None)
    if not recorded:
        return {}
    out = {}
    for name, lists in recorded.items():
        if name == "fused":
            continue
        replay = RecordedRanking(name, lists)
        part = evaluate(replay, dataset, "test", progress=False, shard=shard, **test_options)
        if shard is None or shard.is_main:
            part.save(run_dir / f"test_eval.{name.replace('+', '_')}.json")
        wanted = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr", "coverage@10")
        groups = (
            "cold_target/recall@10",
            "cold_target/ndcg@10",
            "warm_target/recall@10",
            "warm_target/ndcg@10",
        )
        for metric in wanted + groups:
            if metric in part.metrics:
                out[f"{name}/{metric}"] = part.metrics[metric]
    return out


def measure_cost(config, dataset, model, rec, device, run_dir: Path) -> None:
    """cost.json: decode latency and throughput, peak memory and device, for genrec report."""
    trained = read_run_json(run_dir).get("train", {})
    write_run_cost(
        run_dir,
        recommender=rec,
        dataset=dataset,
        device=device,
        train_seconds=trained.get("train_seconds"),
        train_peak_memory=trained.get("peak_memory"),
        parameters=count_parameters(model),
        batch_size=config.eval.batch_users,
    )




def _test_fusion(config, dataset, model, codes, device, amp, run_dir: Path, weights_hash: str, similarity, shard):
    """(fusion, its run.json record): the weights are chosen on validation before the test
    (genrec.fusion), by rank 0; the other ranks then read them from the run folder, as
    genrec.serve.run.load_run does."""
    main = shard is None or shard.is_main
    fusion = fusion_record = None
    if main:
        recorded = read_run_json(run_dir).get("fusion", {})
        fusion, fusion_record = prepare_fusion(
            config, dataset, model, codes, device, amp, run_dir, weights_hash, recorded, similarity
        )
        if fusion_record:
            update_run_json(run_dir, {"fusion": fusion_record})
    if shard is not None:
        distributed.barrier(shard)
    if not main:
        fusion_record = read_run_json(run_dir).get("fusion", {})
        fusion = load_fusion(run_dir, config.model, fusion_record, len(codes))
    return fusion, fusion_record


def _save_test(config, dataset, model, rec, device, run_dir: Path, evaluated, metrics: dict, key: str) -> None:
    """The test's files, in the order a killed run can resume from: the evaluation, the metrics, the
    cost, and last run.json's record of the test (until it exists the test counts as not done)."""
    evaluated.info.update(
        {"run": str(run_dir), "beam_size": config.eval.beam_size, "exclude_seen": config.model.exclude_seen}
    )
    evaluated.save(run_dir / "test_eval.json")
    fault_point("test-eval-saved")
    write_json(run_dir / "metrics.json", metrics)
    fault_point("test-metrics-saved")
    measure_cost(config, dataset, model, rec, device, run_dir)
    fault_point("test-cost-saved")
    update_run_json(run_dir, {"test": {"key": key}})
    fault_point("test-recorded")
