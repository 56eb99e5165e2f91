"""Damaged weights and diverged training are found, not trained on: checksummed safetensors,
non-finite weights refused, a NaN loss stops training at its step, a missing random-state file
refuses the resume, and no JSON file holds a bare NaN."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from genrec.files import atomic_write_text, json_text
from genrec.train import checkpoint as ckpt
from genrec.train.trainer import TrainingDiverged, fit
from tests.train.helpers import tiny_config
from tests.train.tiny_run import inputs_for_world, validator

SHORT = ("train.epochs=2", "train.checkpoint_every=4", "train.eval_every=4")


def train(run_dir, *overrides, resume=False):
    config = tiny_config(*SHORT, *overrides)
    inputs = inputs_for_world()
    return fit(
        config,
        inputs,
        run_dir,
        device=torch.device("cpu"),
        resume=resume,
        validate_fn=validator(inputs, 10),
        progress=False,
    )


@pytest.fixture
def trained(tmp_path):
    train(tmp_path)
    return tmp_path, ckpt.latest_checkpoint(tmp_path / "checkpoints")


def flip_bytes(path, count=16):
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[-1 - 7 * i] ^= 0xFF  # in the tensor data, after the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng-rank0.safetensors"])
def test_flipped_bytes_in_a_checkpoint_refuse_the_resume(trained, name):
    run_dir, latest = trained
    flip_bytes(latest / name)
    with pytest.raises(ckpt.CheckpointError, match=rf"{name} is damaged: its tensors hash"):
        train(run_dir, resume=True)


def test_flipped_bytes_in_run_weights_are_found(trained):
    run_dir, _ = trained
    flip_bytes(run_dir / "model.safetensors")
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors is damaged"):
        ckpt.read_tensors(run_dir / "model.safetensors")


def test_nan_weights_are_refused_even_without_a_checksum(trained):
    run_dir, latest = trained
    tensors = ckpt.read_tensors(latest / "model.safetensors")
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(latest / "model.safetensors"))  # no genrec checksum: a foreign writer
    with pytest.raises(ckpt.CheckpointError, match=rf"tensor {name!r} holds NaN"):
        train(run_dir, resume=True)


def test_a_missing_random_state_file_refuses_the_resume(trained):
    run_dir, latest = trained
    (latest / "rng-rank0.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"rng-rank0.safetensors is missing.*random-number state"):
        train(run_dir, resume=True)


@pytest.mark.parametrize("pointer", ["../../other-run/checkpoints/step-00000004", "step-4", "/etc"])
def test_latest_json_cannot_point_outside_its_run(trained, pointer):
    run_dir, _ = trained
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps({"dir": pointer, "step": 4}))
    with pytest.raises(ckpt.CheckpointError, match="field 'dir'"):
        train(run_dir, resume=True)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from genrec.models.tiger import Tiger as TIGER

    real = TIGER.loss_terms
    calls = {"n": 0}

    def poisoned(self, batch, label_smoothing=0.0):
        total, parts = real(self, batch, label_smoothing)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] >= 7 else total), parts

    monkeypatch.setattr(TIGER, "loss_terms", poisoned)
    with pytest.raises(TrainingDiverged, match=r"not finite .* at step 7 .*step-00000004"):
        train(tmp_path, "train.log_every=100")
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    assert latest.name == "step-00000004"
    weights = ckpt.read_tensors(latest / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
    assert not (tmp_path / "model.safetensors").exists()


def test_json_files_never_hold_a_bare_nan(tmp_path):
    text = json_text({"recall@10": float("nan"), "x": [float("inf"), 1.5], "ok": 2})
    assert json.loads(text) == {"recall@10": None, "x": [None, 1.5], "ok": 2}
    state = {"best": {"ndcg@10": float("nan")}}
    root = tmp_path / "checkpoints"
    staged = ckpt.stage_checkpoint(root, 1)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt.commit_checkpoint(root, staged, 1, model, opt, {p: n for n, p in model.named_parameters()}, state)
    saved = (root / "step-00000001" / "state.json").read_text()
    assert "NaN" not in saved and json.loads(saved)["best"]["ndcg@10"] is None


def test_atomically_written_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}\n")
        (tmp_path / "plain.json").write_text("{}\n")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644
