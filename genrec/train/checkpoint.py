"""Checkpoints: safetensors for every tensor, JSON for everything else, never pickle.

A resumable checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding

- ``model.safetensors``      the weights;
- ``optimizer.safetensors``  AdamW's per-parameter state, keyed ``<parameter name>/<state key>``;
- ``rng-rank<R>.safetensors`` each process's torch CPU (and CUDA) random-number state;
- ``state.json``             step, data order (epoch, batch), early-stopping state, elapsed
  time, the optimiser's hyper-parameters, and what the run was trained from (config hash,
  dataset fingerprint, tokenizer hash).

The folder is written under a temporary name and renamed into place, then ``checkpoints/latest.json``
is replaced atomically to point at it, then older folders are deleted: a run killed at any
instant leaves the previous checkpoint intact and pointed to.

Every safetensors file genrec writes carries the sha256 of its tensors (names, dtypes, shapes and
bytes) in its header metadata (``{"genrec": "{\"sha256\": ...}"}``), checked whenever it is read: a flipped byte in a
checkpoint or in a run's weights is an error naming the file, not a quietly worse model. Model
weights holding NaN or infinity are refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genrec.faults import fault_point
from genrec.files import atomic_path, atomic_write_text, json_text

FORMAT_VERSION = 1
# The header metadata is one key holding sorted JSON: safetensors writes several keys in a random
# order, which would make the same weights differ byte for byte between processes.
METADATA_KEY = "genrec"
_STEP_DIR = re.compile(r"step-\d{8}")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not belong to this run's config."""


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: each name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    info = {**(metadata or {}), "sha256": tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info, sort_keys=True)})


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (read without loading the tensors)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100 << 20:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(f.read(size))
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("__metadata__ is not an object")
        return meta
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is damaged") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, their checksum verified when the file carries one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link; genrec reads only the files it wrote")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is damaged") from None
    try:
        expected = json.loads(read_metadata(path).get(METADATA_KEY) or "{}").get("sha256")
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{path}: damaged header metadata ({e})") from None
    if expected is not None:
        actual = tensors_sha256(tensors)
        if actual != expected:
            raise CheckpointError(
                f"{path} is damaged: its tensors hash to sha256 {actual[:16]}..., the file records "
                f"{str(expected)[:16]}... (written by genrec when it was saved); restore it or train again"
            )
    return tensors


def save_model(path: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    atomic_save_tensors(path, model.state_dict(), metadata)


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Load weights into ``model``, with an error that says how the checkpoint differs from it."""
    tensors = read_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k}: checkpoint {list(tensors[k].shape)} vs model {list(own[k].shape)}"
        for k in sorted(set(own) & set(tensors))
        if tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        parts.extend(shapes[:5])
        raise CheckpointError(
            f"{path} was saved from a different model configuration than this one ({'; '.join(parts)})"
        )
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{path}: tensor {name!r} holds NaN or infinite values (weights of a diverged training); "
                "these weights cannot recommend anything; train again with a lower train.lr"
            )
    model.load_state_dict(tensors)


# ---- optimizer ----
def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[torch.nn.Parameter, str]):
    """AdamW state as named tensors plus its param groups as JSON-able dicts (params by name)."""
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for group in optimizer.param_groups:
        entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
        entry["params"] = [names[p] for p in group["params"]]
        groups.append(entry)
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if not torch.is_tensor(value):
                    value = torch.tensor(value)
                tensors[f"{names[p]}/{key}"] = value
    return tensors, groups


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict], names: dict
) -> None:
    """Load state saved by :func:`optimizer_tensors` (torch's own loader places each tensor)."""
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(
            f"optimizer has {len(optimizer.param_groups)} param groups, checkpoint {len(groups)}"
        )
    index: dict[str, int] = {}
    on_cpu: set[str] = set()
    for group, saved in zip(optimizer.param_groups, groups, strict=True):
        if [names[p] for p in group["params"]] != saved["params"]:
            raise CheckpointError("the checkpoint's optimizer holds different parameters than this model")
        for p in group["params"]:
            index[names[p]] = len(index)
            if p.device.type == "cpu":
                on_cpu.add(names[p])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, state_key = key.rpartition("/")
        if name not in index:
            raise CheckpointError(f"optimizer state names parameter {name!r}, which this model lacks")
        # read_tensors' tensors are a copy-on-write map of the file: an optimizer that kept them
        # would fault a page in on each first write (a large item table's rows, for hundreds of
        # steps after a resume); its own copy is written like fresh state (scale-cpu/NOTES.md).
        state.setdefault(index[name], {})[state_key] = value.clone() if name in on_cpu else value
    param_groups = [
        {
            **{k: (tuple(v) if isinstance(group.get(k), tuple) else v) for k, v in saved.items()},
            "params": [index[n] for n in saved["params"]],
        }
        for group, saved in zip(optimizer.param_groups, groups, strict=True)
    ]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


# ---- random number generators ----
def rng_tensors() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


# ---- resumable checkpoint folders ----
def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def stage_checkpoint(root: Path, step: int) -> Path:
    """The temporary folder a checkpoint of ``step`` is written into (made empty)."""
    tmp = Path(root) / f".{step_dir_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_rng(staged: Path, rank: int) -> None:
    atomic_save_tensors(staged / f"rng-rank{rank}.safetensors", rng_tensors())


def commit_checkpoint(
    root: Path,
    staged: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    names: dict,
    state: dict,
    keep: int = 1,
) -> Path:
    """Write the model, optimizer and state into ``staged``, move it into place, point latest.json at it."""
    root = Path(root)
    save_model(staged / "model.safetensors", model)
    tensors, groups = optimizer_tensors(optimizer, names)
    atomic_save_tensors(staged / "optimizer.safetensors", tensors)
    state = {**state, "format_version": FORMAT_VERSION, "step": step, "optimizer_groups": groups}
    atomic_write_text(staged / "state.json", json_text(state, indent=1) + "\n")
    fault_point("checkpoint-staged")
    final = root / step_dir_name(step)
    # A folder of this step already here is an orphan (renamed in, then the run stopped before
    # latest.json named it): latest.json only names earlier steps, as a resumed run's steps only grow.
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staged, final)
    fault_point("checkpoint-renamed")
    atomic_write_text(root / "latest.json", json.dumps({"dir": final.name, "step": step}) + "\n")
    fault_point("checkpoint-pointed")
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        if old.name != final.name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder latest.json points at, or None when there is no checkpoint yet."""
    pointer = Path(root) / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{pointer}: damaged ({e}); delete it to start over") from None
    if not isinstance(name, str) or not _STEP_DIR.fullmatch(name):
        raise CheckpointError(
            f"{pointer}: field 'dir' is {name!r}, not a checkpoint folder of this run (step-NNNNNNNN); "
            "a checkpoint is only read from inside its own run folder. Delete latest.json to start over"
        )
    folder = Path(root) / name
    if folder.is_symlink():
        raise CheckpointError(f"{folder} is a symbolic link; a checkpoint is only read from its own run folder")
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"{pointer} points at {folder}, which is missing or incomplete")
    return folder


def read_state(folder: Path) -> dict:
    path = Path(folder) / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format_version')!r}, this genrec reads {FORMAT_VERSION}"
        )
    return state
