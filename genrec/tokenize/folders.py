"""``tokenize_dataset``: what ``genrec tokenize`` runs, checks on the inputs included."""

from __future__ import annotations

from pathlib import Path

from genrec.data import load_prepared
from genrec.embed.artifacts import item_ids_sha256, load_embeddings
from genrec.files import array_sha256
from genrec.tokenize.artifacts import write_tokenizer
from genrec.tokenize.config import TokenizeConfig
from genrec.tokenize.tokenizer import TokenizerResult, tokenize


def tokenize_dataset(
    data: str | Path,
    embeddings: str | Path,
    out_dir: str | Path,
    config: TokenizeConfig | None = None,
) -> TokenizerResult:
    """Tokenize the items of the prepared dataset ``data`` from the embeddings ``embeddings`` (an
    EMB folder or an .npy file) and write the artifacts into ``out_dir``.

    The embeddings must have one finite row per item of the dataset's item table; when embed.json
    recorded the items they were made for, those must be this dataset's items.
    """

    dataset = load_prepared(data)
    item_ids = dataset.item_table(columns=["item_id"]).column("item_id").to_pylist()
    array, meta = load_embeddings(
        embeddings, num_items=dataset.num_items, item_ids_hash=item_ids_sha256(item_ids)
    )
    result = tokenize(array, config, dataset.train_item_counts())
    inputs = {
        "embeddings_sha256": array_sha256(array),
        "embeddings": {
            "path": str(embeddings),
            "dimension": int(array.shape[1]),
            **{
                k: meta[k] for k in ("encoder", "model", "model_sha256", "template", "cache_key") if k in meta
            },
        },
        "dataset": {
            "path": str(dataset.path),
            "name": dataset.name,
            "manifest_sha256": dataset.fingerprint,
            "num_items": dataset.num_items,
        },
    }
    write_tokenizer(out_dir, result, inputs)
    return result
