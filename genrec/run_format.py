"""The run folder's format: what ``genrec train`` writes into ``RUN/`` and what every reader of a
finished run (``genrec recommend``, ``serve``, ``eval --run``, ``add-items``, batch inference)
reads back, with its version and its errors. (Guarding the folder while it is written, the marker
and the lock, is genrec.pipeline.run_folder.)

```
RUN/run.json           format_version, config, level_sizes, inputs (fingerprints), dataset,
                       stage_settings, new_items, then train / fusion / test / stages / summary
RUN/config.json        the resolved config
RUN/tokenizer/         semantic_ids.npy, tokenizer.json (the IDs the model was trained on)
RUN/items.parquet      item_idx, item_id, title
RUN/encoders/          what genrec add-items needs (genrec.catalogue)
RUN/model.safetensors  the best weights            RUN/cooccurrence.safetensors (fused runs)
```
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from safetensors import SafetensorError, safe_open

from genrec.config import Config
from genrec.data.npy import load_npy
from genrec.faults import fault_point
from genrec.files import array_sha256, atomic_path, atomic_write_text, json_text

RUN_FORMAT_VERSION = 1
RUN_JSON = "run.json"
#: A run that ranks with co-occurrence keeps the statistics it was tested with here (genrec.fusion).
COOCCURRENCE_FILE = "cooccurrence.safetensors"
TOKENIZER_FILES = ("semantic_ids.npy", "tokenizer.json", "metrics.json")


class RunError(RuntimeError):
    """A run folder cannot be used: the message names the file and what is wrong."""


# ---- run.json ----
def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json_text(data, indent=2, default=str) + "\n")


def read_run_json(run_dir: Path) -> dict:
    """run.json of a run folder, or {} where there is none yet; a damaged one is a RunError."""
    path = Path(run_dir) / RUN_JSON
    return _parse_run_json(path) if path.is_file() else {}


def _parse_run_json(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e}); the run folder is damaged: train it again") from None
    if not isinstance(info, dict):
        raise RunError(f"{path}: not a JSON object; the run folder is damaged: train it again")
    return info


def update_run_json(run_dir: Path, values: dict) -> None:
    """run.json with ``values`` set (written atomically)."""
    write_json(Path(run_dir) / RUN_JSON, {**read_run_json(run_dir), **values})


# ---- writing: what a run depends on, copied in before it trains ----
def write_run_inputs(
    run_dir: Path,
    config: Config,
    dataset,
    codes: np.ndarray,
    level_sizes: list[int],
    tok_dir: Path | None,
    fingerprints: dict,
    *,
    stage_settings: dict,
    save_encoders: Callable[[], dict] | None = None,
) -> None:
    """Copy the semantic IDs and the item table into the run and record its inputs in run.json,
    after checking the folder holds no other run's work. ``tok_dir`` None: the identity IDs of a
    model whose items are their own IDs. ``save_encoders()``, called once the run's tokenizer is in
    place, saves what adding items later needs and returns run.json's "new_items" record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    old = read_run_json(run_dir).get("inputs", {})
    for key, now in fingerprints.items():
        if key in old and old[key] != now:
            what = "semantic IDs (another tokenizer)" if key == "semantic_ids" else "dataset"
            raise RunError(
                f"{run_dir} was trained on a different {what}: {key} {old[key][:16]}..., this config gives "
                f"{now[:16]}...; train into a new --run-dir (or delete {run_dir})"
            )
    tok_out = run_dir / "tokenizer"
    tok_out.mkdir(exist_ok=True)
    if tok_dir is not None:
        for name in TOKENIZER_FILES:
            if (tok_dir / name).is_file():
                with atomic_path(tok_out / name) as tmp:
                    shutil.copyfile(tok_dir / name, tmp)
                fault_point(f"run-dir-{name}")
    else:
        np.save(tok_out / "semantic_ids.npy", codes)
        write_json(tok_out / "tokenizer.json", {"method": "identity", "level_sizes": [len(codes)]})
    new_items = save_encoders() if save_encoders is not None else {"supported": False, "reason": "not saved"}
    columns = [c for c in ("item_idx", "item_id", "title") if c in dataset.item_table().column_names]
    with atomic_path(run_dir / "items.parquet", suffix=".parquet") as tmp:
        pq.write_table(dataset.item_table(columns=columns), tmp)
    fault_point("run-dir-items")
    write_json(run_dir / "config.json", config.to_dict())
    fault_point("run-dir-config")
    update_run_json(
        run_dir,
        {
            "format_version": RUN_FORMAT_VERSION,
            "config": config.to_dict(),
            "level_sizes": [int(v) for v in level_sizes],
            "inputs": fingerprints,
            "dataset": {"name": dataset.name, "path": str(dataset.path), "num_items": dataset.num_items},
            "stage_settings": stage_settings,
            "new_items": new_items,
        },
    )


# ---- reading a finished run ----
@dataclass(frozen=True)
class FinishedRun:
    """A finished run's run.json, its config and the semantic IDs it was trained on (checked)."""

    run_dir: Path
    info: dict
    config: Config
    codes: np.ndarray  # int64 [num_items, levels]
    level_sizes: list[int]


def read_finished_run(run_dir: str | Path) -> FinishedRun:
    """run.json (present, valid, of this format version), the config it records, and the run's own
    semantic IDs, checked against the fingerprint and level sizes run.json records."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise RunError(f"{run_dir} is not a finished genrec run: {RUN_JSON} is missing")
    info = _parse_run_json(path)
    if info.get("format_version") != RUN_FORMAT_VERSION:
        raise RunError(f"{path}: run format {info.get('format_version')!r}, this genrec reads {RUN_FORMAT_VERSION}")
    config = Config.from_dict(info["config"], where=str(path))
    codes, level_sizes = read_run_tokenizer(run_dir)
    recorded = (info.get("inputs") or {}).get("semantic_ids")
    if recorded is not None and array_sha256(np.ascontiguousarray(codes, dtype=np.int64)) != recorded:
        raise RunError(
            f"{run_dir / 'tokenizer' / 'semantic_ids.npy'} is not the file this run was trained on "
            f"(run.json records semantic IDs {str(recorded)[:16]}...); restore it or train again"
        )
    if level_sizes != info.get("level_sizes"):
        raise RunError(
            f"{run_dir / 'tokenizer'} has level sizes {level_sizes} but the model was trained on "
            f"{info.get('level_sizes')}: the run folder mixes artifacts of different tokenizers; train again"
        )
    return FinishedRun(run_dir, info, config, codes, level_sizes)


def read_run_tokenizer(run_dir: Path) -> tuple[np.ndarray, list[int]]:
    """The semantic IDs and level sizes a run was trained on (its own copy under tokenizer/)."""
    folder = Path(run_dir) / "tokenizer"
    ids_path, meta_path = folder / "semantic_ids.npy", folder / "tokenizer.json"
    for p in (ids_path, meta_path):
        if not p.is_file():
            raise RunError(f"{p} is missing: the run folder is incomplete")
    codes = load_npy(ids_path, RunError)
    level_sizes = [int(v) for v in json.loads(meta_path.read_text())["level_sizes"]]
    if codes.ndim != 2 or codes.shape[1] != len(level_sizes):
        raise RunError(f"{ids_path} has shape {list(codes.shape)}, tokenizer.json names {len(level_sizes)} levels")
    return codes.astype(np.int64), level_sizes


def read_run_items(run_dir: Path, num_items: int) -> tuple[list[str], list[str | None]]:
    """(item ids, titles) of the run's catalogue, in item-index order."""
    path = Path(run_dir) / "items.parquet"
    if not path.is_file():
        raise RunError(f"{path} is missing: the run folder is incomplete")
    table = pq.read_table(path)
    if table.num_rows != num_items:
        raise RunError(f"{path} lists {table.num_rows} items but the semantic IDs cover {num_items}")
    ids = [str(x) for x in table.column("item_id").to_pylist()]
    titles = table.column("title").to_pylist() if "title" in table.column_names else [None] * num_items
    return ids, titles


def saved_content_dim(weights: Path, model_config) -> int:
    """The width of the content table a run's weights hold (0 without content vectors)."""
    if not getattr(model_config, "content_vectors", False):
        return 0
    try:
        with safe_open(str(weights), framework="pt") as f:
            if "item_content" not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise RunError(f"{weights} holds no item_content table, but the run's model has content vectors")
            return int(f.get_slice("item_content").get_shape()[1])
    except (OSError, SafetensorError) as e:
        raise RunError(f"{weights}: cannot be read ({e})") from None
