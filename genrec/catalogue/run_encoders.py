"""A run folder's encoders: what embeds and tokenizes items added after training.

``save_run_encoders(RUN, EMB, TOK)`` copies into a run folder what new items need later:

```
RUN/encoders/encoders.json          format_version, supported, reason (when not), encoder, dimension,
                                    embeddings_sha256, tokenizer {method, files {name: sha256}}
RUN/encoders/encoder_state.json     the embed encoder's settings and checksums (genrec.embed.state)
RUN/encoders/encoder_state.safetensors  its fitted tensors (fusion network, attribute model, denoiser)
RUN/encoders/embed.json             the embed stage's record (provenance)
RUN/tokenizer/codebooks.safetensors the tokenizer's codebooks and normalizer (+ rqvae.safetensors)
```

A run whose encoder cannot embed new items (a custom encoder, embeddings given as a file, an embed
output made before encoders saved their state, an item-ID model) still gets ``encoders.json``,
with ``supported: false`` and the reason, which ``genrec add-items`` reports.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from genrec.embed.artifacts import atomic_save_json, read_meta
from genrec.embed.registry import get_encoder
from genrec.embed.state import FORMAT_VERSION as STATE_VERSION
from genrec.embed.state import (
    STATE_FILE,
    TENSORS_FILE,
    EncoderStateError,
    has_encoder_state,
    read_encoder_state,
    save_state,
)
from genrec.files import atomic_path, file_sha256, replace_dir

FORMAT_VERSION = 1
ENCODERS_DIR = "encoders"
ENCODERS_FILE = "encoders.json"
TOKENIZER_FILES = ("codebooks.safetensors", "rqvae.safetensors")


class NewItemsError(ValueError):
    """New items cannot be added: the message names the file, row and column, or what the run lacks."""


@dataclass(frozen=True)
class RunEncoders:
    """What :func:`save_run_encoders` recorded: whether new items can be added, and if not, why."""

    supported: bool
    reason: str | None
    encoder: str | None


def save_run_encoders(
    run_dir: str | Path, embed_dir: str | Path | None, tok_dir: str | Path | None
) -> RunEncoders:
    """Copy the embed encoder's state (``embed_dir``) and the tokenizer's codebooks (``tok_dir``)
    into ``run_dir`` (module docstring), each file written under a temporary name and renamed.

    ``run_dir/tokenizer/`` must already hold the run's copy of the semantic IDs and tokenizer.json.
    ``embed_dir`` / ``tok_dir`` None: an item-ID model (no embed or tokenize stage). Never fails
    because new items cannot be supported: the returned (and recorded) reason says why.
    """
    run_dir = Path(run_dir)
    run_tok = run_dir / "tokenizer"
    if not (run_tok / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{run_tok / 'tokenizer.json'} is missing: copy the run's tokenizer first")
    try:
        state, tokenizer = _collect(run_tok, embed_dir, tok_dir)
    except _Unsupported as e:
        _write_encoders_dir(run_dir, None, {"supported": False, "reason": str(e), "encoder": e.encoder})
        return RunEncoders(False, str(e), e.encoder)
    info, tensors_path, embed_json = state
    for name, source in tokenizer[
        "sources"
    ].items():  # the tokenizer's files, then encoders/ (its marker last)
        with atomic_path(run_tok / name) as tmp:
            shutil.copyfile(source, tmp)
    record = {
        "supported": True,
        "reason": None,
        "encoder": info["encoder"],
        "dimension": info["dimension"],
        "embeddings_sha256": info["embeddings_sha256"],
        "tokenizer": {"method": tokenizer["method"], "files": tokenizer["files"]},
    }
    _write_encoders_dir(run_dir, (info, tensors_path, embed_json), record)
    return RunEncoders(True, None, info["encoder"])


class _Unsupported(Exception):
    def __init__(self, reason: str, encoder: str | None = None) -> None:
        super().__init__(reason)
        self.encoder = encoder


def _collect(run_tok: Path, embed_dir, tok_dir):
    """((state info, tensors file or None, embed.json or None), tokenizer files) or _Unsupported."""
    if tok_dir is None or embed_dir is None:
        raise _Unsupported(
            "the model's items are their own IDs (an item-ID model): there is no content to embed"
        )
    embed_dir, tok_dir = Path(embed_dir), Path(tok_dir)
    if not embed_dir.is_dir():
        raise _Unsupported(
            f"the embeddings were given as a file ({embed_dir}), without the encoder that made them"
        )
    meta = read_meta(embed_dir)
    encoder = meta.get("encoder")
    if has_encoder_state(embed_dir):
        try:
            info, _ = read_encoder_state(embed_dir, meta.get("embeddings_sha256"))
        except EncoderStateError as e:
            raise _Unsupported(str(e), encoder) from None
        state = (info, embed_dir / TENSORS_FILE, embed_dir / "embed.json")
    else:
        state = (_state_from_meta(embed_dir, meta, encoder), None, embed_dir / "embed.json")
    return state, _tokenizer_files(run_tok, tok_dir, state[0])


def _state_from_meta(embed_dir: Path, meta: dict, encoder: str | None) -> dict:
    """A tensor-free state rebuilt from embed.json (the text encoder's outputs from before states)."""

    try:
        cls = get_encoder(encoder) if encoder else None
    except ValueError:
        cls = None
    if cls is None or not hasattr(cls, "embed_new_items"):
        raise _Unsupported(
            f"its embed encoder {encoder!r} ({embed_dir}) cannot embed items added after training "
            "(encoders that can: text, multimodal, diffusion)",
            encoder,
        )
    spec = cls.state_from_meta(meta) if hasattr(cls, "state_from_meta") else None
    if spec is None or "dimension" not in meta or "embeddings_sha256" not in meta:
        raise _Unsupported(
            f"the embed output {embed_dir} holds no encoder state ({STATE_FILE}): it was made before "
            "genrec saved encoder states; delete that embed output (or its stage-cache folder) and train "
            "again to add items later",
            encoder,
        )
    return {
        "format_version": STATE_VERSION,
        "encoder": encoder,
        "spec": spec,
        "dimension": int(meta["dimension"]),
        "embeddings_sha256": meta["embeddings_sha256"],
    }


def _tokenizer_files(run_tok: Path, tok_dir: Path, state: dict) -> dict:
    try:
        ours = json.loads((run_tok / "tokenizer.json").read_text())
        theirs = json.loads((tok_dir / "tokenizer.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise _Unsupported(f"the tokenizer's tokenizer.json cannot be read ({e})", state["encoder"]) from None
    if ours.get("semantic_ids_sha256") != theirs.get("semantic_ids_sha256"):
        raise _Unsupported(
            f"{tok_dir} is not the tokenizer of this run's semantic IDs (semantic_ids_sha256 differs)",
            state["encoder"],
        )
    if int(theirs.get("input_dim", -1)) != int(state["dimension"]):
        raise _Unsupported(
            f"{tok_dir} reads {theirs.get('input_dim')}-dimensional embeddings, the encoder gives "
            f"{state['dimension']}",
            state["encoder"],
        )
    names = ["codebooks.safetensors"] + (["rqvae.safetensors"] if theirs.get("method") == "rqvae" else [])
    missing = [n for n in names if not (tok_dir / n).is_file()]
    if missing:
        raise _Unsupported(f"{tok_dir} lacks {', '.join(missing)}", state["encoder"])
    return {
        "method": theirs.get("method"),
        "sources": {n: tok_dir / n for n in names},
        "files": {n: file_sha256(tok_dir / n) for n in names},
    }


def _write_encoders_dir(run_dir: Path, state, record: dict) -> None:
    """RUN/encoders/ staged beside its place and swapped in: readers see the old folder or the new one."""
    final = run_dir / ENCODERS_DIR
    for leftover in run_dir.glob(f".{ENCODERS_DIR}.*-*"):  # of a process killed here (the run is locked)
        shutil.rmtree(leftover, ignore_errors=True)
    staged = run_dir / f".{ENCODERS_DIR}.tmp-{os.getpid()}"
    staged.mkdir()
    try:
        if state is not None:
            info, tensors_path, embed_json = state
            if tensors_path is not None:
                shutil.copyfile(tensors_path, staged / TENSORS_FILE)
                shutil.copyfile(tensors_path.parent / STATE_FILE, staged / STATE_FILE)
            else:  # rebuilt from embed.json: no tensors
                save_state(
                    staged,
                    info["spec"],
                    {},
                    dimension=info["dimension"],
                    embeddings_sha256=info["embeddings_sha256"],
                )
            if embed_json is not None and embed_json.is_file():
                shutil.copyfile(embed_json, staged / "embed.json")
        atomic_save_json(
            staged / ENCODERS_FILE,
            {
                "format_version": FORMAT_VERSION,
                **record,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        replace_dir(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def load_run_encoders(run_dir: str | Path) -> tuple[dict, dict, dict]:
    """(encoders.json, the encoder state's JSON, its tensors) of a run folder, every checksum
    verified; NewItemsError says why a run cannot take new items."""
    run_dir = Path(run_dir)
    folder = run_dir / ENCODERS_DIR
    path = folder / ENCODERS_FILE
    if not path.is_file():
        raise NewItemsError(
            f"{run_dir} cannot take new items: it has no {ENCODERS_DIR}/{ENCODERS_FILE} (it was trained before "
            "genrec kept a run's encoders); train it again with this genrec"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NewItemsError(f"{path}: not valid JSON ({e})") from None
    if record.get("format_version") != FORMAT_VERSION:
        raise NewItemsError(
            f"{path}: format_version {record.get('format_version')!r}, this genrec reads {FORMAT_VERSION}"
        )
    if not record.get("supported"):
        raise NewItemsError(f"{run_dir} cannot take new items: {record.get('reason')}")
    try:
        info, tensors = read_encoder_state(folder, record["embeddings_sha256"])
    except EncoderStateError as e:
        raise NewItemsError(str(e)) from None
    for name, digest in record["tokenizer"]["files"].items():
        file = run_dir / "tokenizer" / name
        if not file.is_file() or file_sha256(file) != digest:
            raise NewItemsError(
                f"{file} is {'missing' if not file.is_file() else 'damaged (its sha256 differs from encoders.json)'}: "
                "the run cannot tokenize new items"
            )
    return record, info, tensors


__all__ = ["ENCODERS_DIR", "NewItemsError", "RunEncoders", "load_run_encoders", "save_run_encoders"]
