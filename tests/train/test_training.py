"""The training loop on a tiny synthetic world: it learns, stops early, keeps the best, and refuses
checkpoints that belong to another config."""

from __future__ import annotations

import json

import pytest
import torch

from genrec.train.checkpoint import CheckpointError, latest_checkpoint, read_state
from genrec.train.trainer import fit
from tests.train.helpers import tiny_config
from tests.train.tiny_run import inputs_for_world, validator


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("tiger", []),
        ("tiger", ["model.history_tokens=items", "model.item_embeddings=true"]),
        ("decoder_only", []),
        ("item_decoder", ["model.item_embeddings=true"]),
    ],
)
def test_tiny_model_overfits_tiny_dataset(tmp_path, kind, extra):
    """Users walk a fixed item cycle; a working model must learn to predict the next item."""
    torch.set_num_threads(1)
    config = tiny_config(
        "train.epochs=1000", "train.max_steps=150", "train.eval_every=10", "train.lr=0.005", *extra, kind=kind
    )
    inputs = inputs_for_world()
    result = fit(
        config,
        inputs,
        tmp_path,
        device=torch.device("cpu"),
        validate_fn=validator(inputs, 10),
        progress=False,
    )
    first = result.validations[0]
    assert result.best["recall@10"] >= 0.95, result.validations
    assert result.best["ndcg@10"] >= 0.8, result.validations
    assert result.best["ndcg@10"] > first["ndcg@10"] + 0.2  # it learned, it did not start there
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < 0.5 * losses[0]
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "best.safetensors").is_file()


def test_early_stopping_and_best_checkpoint(tmp_path):
    """With a learning rate too small to improve, patience ends the run; the best step is kept."""
    torch.set_num_threads(1)
    config = tiny_config("train.epochs=50", "train.lr=1e-7", "train.warmup_steps=0", "train.patience=2")
    inputs = inputs_for_world(num_users=40)
    result = fit(
        config,
        inputs,
        tmp_path,
        device=torch.device("cpu"),
        validate_fn=validator(inputs, 10),
        progress=False,
    )
    assert result.stopped_because.startswith("early stopping")
    assert len(result.validations) < 50
    best = max(result.validations, key=lambda v: v["ndcg@10"])
    assert result.best["step"] == best["step"]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    torch.set_num_threads(1)
    inputs = inputs_for_world(num_users=40)
    config = tiny_config("train.epochs=1")
    fit(
        config,
        inputs,
        tmp_path,
        device=torch.device("cpu"),
        validate_fn=validator(inputs, 10),
        progress=False,
    )
    assert latest_checkpoint(tmp_path / "checkpoints") is not None
    with pytest.raises(CheckpointError, match="pass --resume"):
        fit(config, inputs, tmp_path, device=torch.device("cpu"), progress=False)
    other = tiny_config("train.epochs=1", "train.lr=0.01", "model.d_ff=48")
    with pytest.raises(CheckpointError, match=r"train\.lr: checkpoint 0\.003, now 0\.01") as err:
        fit(other, inputs, tmp_path, device=torch.device("cpu"), resume=True, progress=False)
    assert "model.d_ff" in str(err.value)
    inputs.fingerprints["tokenizer"] = "another-tokenizer"
    with pytest.raises(CheckpointError, match=r"inputs\.tokenizer"):
        fit(config, inputs, tmp_path, device=torch.device("cpu"), resume=True, progress=False)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    torch.set_num_threads(1)
    inputs = inputs_for_world(num_users=40)
    config = tiny_config("train.epochs=2")
    first = fit(
        config,
        inputs,
        tmp_path,
        device=torch.device("cpu"),
        validate_fn=validator(inputs, 10),
        progress=False,
    )
    weights = (tmp_path / "model.safetensors").read_bytes()
    again = fit(
        config,
        inputs,
        tmp_path,
        device=torch.device("cpu"),
        resume=True,
        validate_fn=validator(inputs, 10),
        progress=False,
    )
    assert again.steps == first.steps and again.best == first.best
    assert (tmp_path / "model.safetensors").read_bytes() == weights
    state = read_state(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["finished"].startswith("reached")


def test_training_on_a_cpu_keeps_freed_memory_for_the_next_step(tmp_path, monkeypatch):
    """Each step frees and allocates the same activations: the loop asks genrec.heap to keep them
    (a GPU run does not need it: CUDA's caching allocator already does)."""
    import genrec.train.trainer as trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(True) or True)
    torch.set_num_threads(1)
    config = tiny_config("train.epochs=1", "train.max_steps=2", "train.eval_every=0")
    fit(config, inputs_for_world(num_users=40), tmp_path, device=torch.device("cpu"), progress=False)
    assert calls == [True]
