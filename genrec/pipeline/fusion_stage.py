"""The fusion step of ``genrec train``, between training and the test: the co-occurrence statistics
and profile embeddings a run ranks with (saved into the run folder) and the fusion weights, chosen
on the validation split when ``model.tune_fusion`` is on (genrec.fusion)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from genrec.config import Config
from genrec.embed.artifacts import load_embeddings
from genrec.embed.state import has_encoder_state, read_encoder_state
from genrec.eval.baselines import CoOccurrence
from genrec.files import array_sha256, atomic_write_text
from genrec.fusion import Fusion, FusionWeights, config_weights, save_cooccurrence, uses_cooccurrence
from genrec.fusion_tuning import WARM_FLOOR, cold_share_cap, tune_cold, tune_fusion
from genrec.pipeline.stages import embed_stage
from genrec.profile_similarity import SIMILARITY_FILE, ProfileSimilarity, save_similarity
from genrec.run_format import COOCCURRENCE_FILE
from genrec.serve.run import recommender_for
from genrec.settings import stable_hash

TUNING_FILE = "fusion_tuning.json"


def prepare_similarity(
    config: Config, dataset, embed_output, cache, run_dir: Path
) -> ProfileSimilarity | None:
    """The profile embeddings ``model.profile_embeddings`` names, saved into the run folder (None
    when it names none): the embed stage's output ("content"), or a text embed stage's ("text",
    cached like any stage)."""

    source = config.model.profile_embeddings
    if not source:
        return None
    if source == "text" and not (config.embed.encoder == "text" and not config.data.embeddings):
        text_config = dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, embeddings=""),
            embed=dataclasses.replace(config.embed, encoder="text"),
        )
        embed_output = embed_stage(text_config, dataset, cache)
    rows, _ = load_embeddings(embed_output.path, num_items=dataset.num_items)
    similarity = ProfileSimilarity(
        rows, source, text_spec=_text_spec(embed_output.path) if source == "text" else None
    )
    save_similarity(run_dir / SIMILARITY_FILE, similarity)
    return similarity


def _text_spec(embed_dir: Path) -> dict | None:
    """The text encoder's saved settings in a text embed stage's output (None where it saved none)."""

    if not has_encoder_state(embed_dir):
        return None
    state, _ = read_encoder_state(embed_dir)
    return state.get("spec") if state.get("encoder") == "text" else None


def similarity_fingerprint(similarity: ProfileSimilarity | None) -> str | None:

    return None if similarity is None else array_sha256(similarity.rows.numpy())


def prepare_fusion(
    config: Config,
    dataset,
    model,
    codes,
    device,
    amp,
    run_dir: Path,
    weights_hash: str,
    previous: dict,
    similarity: ProfileSimilarity | None = None,
) -> tuple[Fusion | None, dict]:
    """The test's fusion and what to record in run.json under "fusion" (reused while the weights,
    the fusion settings, the profile embeddings and the dataset are unchanged). None for models
    without an item head."""
    mc = config.model
    if mc.kind == "sasrec" or mc.item_loss <= 0:
        return None, {}
    cooc = None
    if uses_cooccurrence(mc):
        path = run_dir / COOCCURRENCE_FILE
        cooc = CoOccurrence.from_dataset(dataset)
        save_cooccurrence(path, cooc)
    if not mc.tune_fusion:
        weights = config_weights(mc)
        fusion = Fusion(weights, cooc, mc.fusion_candidates, mc.cold_candidates, similarity)
        return fusion, {"weights": weights.to_dict(), "tuned": False}
    key = stable_hash(
        {
            "weights": weights_hash,
            "dataset": dataset.fingerprint,
            "fusion": [mc.fusion_candidates, mc.tune_users, config.eval.beam_size, config.run.seed]
            + (
                [mc.cold_candidates, "cold-sim", mc.cold_objective, "floor-without-similarity"]
                + (["share-cap", "nearest"] if mc.cold_share_cap else [])
                if mc.cold_candidates
                else []
            )
            + ([mc.profile_embeddings, similarity_fingerprint(similarity)] if similarity is not None else []),
        }
    )
    if previous.get("key") == key and "weights" in previous:
        weights = FusionWeights(**previous["weights"])
        return Fusion(weights, cooc, mc.fusion_candidates, mc.cold_candidates, similarity), previous
    weights, table, users, cold_table = _tune(config, dataset, model, codes, cooc, device, amp, similarity)
    tuning = {"metric": "ndcg@10", "split": "valid", "users": users, "table": table}
    if cold_table is not None:
        tuning["cold"] = {"warm_floor": WARM_FLOOR, **cold_table}
    atomic_write_text(run_dir / TUNING_FILE, json.dumps(tuning, indent=1) + "\n")
    record = {"key": key, "weights": weights.to_dict(), "tuned": True, "tune_users": users}
    return Fusion(weights, cooc, mc.fusion_candidates, mc.cold_candidates, similarity), record


def _tune(config: Config, dataset, model, codes, cooc, device, amp, similarity=None):
    mc = config.model
    data = dataset.split("valid")
    rows = np.arange(len(data))
    if mc.tune_users and mc.tune_users < len(rows):
        rng = np.random.default_rng(config.run.seed)
        rows = np.sort(rng.choice(rows, mc.tune_users, replace=False))
    histories = data.history_list(rows)
    h = config.train.max_history
    histories = [x[len(x) - min(len(x), h) :] for x in histories]
    rec = recommender_for(
        model,
        codes,
        mc,
        beam_size=config.eval.beam_size,
        fusion=Fusion(FusionWeights(), cooc, mc.fusion_candidates, mc.cold_candidates, similarity),
        batch_users=config.eval.batch_users,
        device=device,
        amp_dtype=amp,
    )
    rec.collect_candidates = []
    model.eval()
    rec.topk(histories, 10, data.users[rows])
    candidates, targets = rec.collect_candidates, data.targets[rows]
    # First the warm weights on the list without cold items, then the cold items' own terms.
    warm = [c.without_cold() for c in candidates]
    weights, table = tune_fusion(warm, targets, cooc=cooc is not None)
    cold = model.cold_items() if hasattr(model, "cold_items") else None
    cold_table = None
    if mc.cold_candidates and cold is not None and bool(cold.any()):
        cold_target = cold.cpu().numpy()[targets]
        # The warm floor is measured against the ranking without content knowledge: the best
        # validation weights without the similarity term (the same as ``weights`` where there is none).
        plain = [r for r in table if r.get("sim_weight", 0.0) == 0.0]
        best = max(range(len(plain)), key=lambda i: (plain[i]["ndcg@10"], -i))
        keys = ("head_weight", "cooc_weight", "eps")
        reference = FusionWeights(**{key: plain[best][key] for key in keys})
        max_epsilon = cold_share_cap(cold_target) if mc.cold_share_cap else 1.0
        weights, cold_table = tune_cold(
            candidates,
            targets,
            cold_target,
            weights,
            reference=reference,
            objective=mc.cold_objective,
            max_epsilon=max_epsilon,
        )
        cold_table = {
            "reference": reference.to_dict(),
            "objective": mc.cold_objective,
            "max_epsilon": max_epsilon,
            "table": cold_table,
        }
    return weights, table, len(rows), cold_table
