"""The vectorised attribute encoder builds the same tf-idf matrix, vocabulary, counts and new-item
features as the per-item Python loops it replaced (kept below as the reference)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.attributes import attribute_matrix, fit_attributes, item_tokens


# ---- the reference: the loops of genrec/embed/attributes.py before vectorisation ----
def _ref_normalise(value):
    text = " ".join(str(value).split()).lower()
    return text or None


def ref_item_tokens(table, columns):
    out = {}
    for column in columns:
        rows = []
        for value in table.column(column).to_pylist():
            values = value if isinstance(value, list) else [value]
            seen = []
            for v in values:
                if v is None:
                    continue
                text = _ref_normalise(v)
                if text is not None and text not in seen:
                    seen.append(text)
            rows.append(seen)
        out[column] = rows
    return out


def ref_attribute_matrix(tokens, num_items, min_count):
    dense_rows, vocabulary, stats, idfs = {}, [], {}, []
    for column, per_item in tokens.items():
        df = Counter(v for values in per_item for v in values)
        kept = sorted(v for v, c in df.items() if c >= min_count and c < num_items)
        idf = {v: float(np.log(num_items / df[v])) for v in kept}
        index = {v: len(vocabulary) + j for j, v in enumerate(kept)}
        vocabulary += [f"{column}={v}" for v in kept]
        idfs += [idf[v] for v in kept]
        with_any = 0
        for i, values in enumerate(per_item):
            entries = [(index[v], idf[v]) for v in values if v in index]
            if not entries:
                continue
            with_any += 1
            norm = float(np.sqrt(sum(w * w for _, w in entries)))
            for j, w in entries:
                dense_rows[(i, j)] = w / norm
        stats[column] = {"values": len(df), "kept_values": len(kept), "items_with": with_any}
    matrix = np.zeros((num_items, len(vocabulary)))
    for (i, j), w in dense_rows.items():
        matrix[i, j] = w
    return matrix, vocabulary, stats, np.array(idfs)


def ref_transform(model, table):
    tokens = ref_item_tokens(table, model.columns)
    index = {}
    for j, entry in enumerate(model.vocabulary):
        column, _, value = entry.partition("=")
        index[(column, value)] = j
    rows = np.zeros((table.num_rows, len(model.vocabulary)))
    for column, per_item in tokens.items():
        for i, values in enumerate(per_item):
            entries = [index[(column, v)] for v in values if (column, v) in index]
            if entries:
                weights = model.idf[entries]
                rows[i, entries] = weights / np.sqrt(np.sum(weights * weights))
    return rows.any(axis=1), (rows @ model.projection).astype(np.float32)


# ---- random tables with the awkward cases: case, spacing, nulls, empty lists, repeats ----
BRANDS = [
    "Glow",
    "glow ",
    " GLOW",
    "Dermia",
    "dermia",
    "Ünique",
    "a=b",
    "",
    "  ",
    "x\u00a0y",
    "x y",
    "Zed",
    "zed",
]
CATEGORIES = ["Beauty", "beauty", "Lips", "Face", "Eyes", "Nails", "Hair  Care", "hair care", "Skin", ""]


def random_table(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    brand = [None if rng.random() < 0.1 else BRANDS[rng.integers(len(BRANDS))] for _ in range(n)]
    categories = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            categories.append(None)
        elif r < 0.1:
            categories.append([])
        else:
            size = int(rng.integers(1, 5))
            categories.append(
                [
                    None if rng.random() < 0.05 else CATEGORIES[rng.integers(len(CATEGORIES))]
                    for _ in range(size)
                ]
            )
    size = [int(v) if rng.random() < 0.9 else None for v in rng.integers(0, 6, n)]
    table = pa.table(
        {
            "item_id": [str(i) for i in range(n)],
            "brand": pa.array(brand, pa.string()),
            "categories": pa.array(categories, pa.list_(pa.string())),
            "size": pa.array(size, pa.int64()),
        }
    )
    half = n // 2  # several chunks, as a concatenated or streamed table has
    return pa.concat_tables([table.slice(0, half), table.slice(half)])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_count", [1, 2, 5])
def test_attribute_matrix_equals_the_python_loops(seed, min_count):
    n = [7, 40, 300][seed % 3]
    table = random_table(seed, n)
    columns = ["brand", "categories", "size"]
    matrix, vocabulary, stats, idf = attribute_matrix(item_tokens(table, columns), n, min_count)
    ref_matrix, ref_vocabulary, ref_stats, ref_idf = ref_attribute_matrix(
        ref_item_tokens(table, columns), n, min_count
    )
    assert vocabulary == ref_vocabulary
    assert stats == ref_stats
    np.testing.assert_allclose(idf, ref_idf, rtol=1e-13, atol=0)
    np.testing.assert_allclose(matrix.toarray(), ref_matrix, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_fitted_model_transforms_like_the_python_loops(seed):
    table = random_table(seed, 200)
    feats, model = fit_attributes(table, columns=["brand", "categories"], dim=6, min_count=2, seed=seed)
    other = random_table(seed + 100, 50)  # new items: some values the fit never saw
    for rows in (table, other):
        present, values = ref_transform(model, rows)
        got = model.transform(rows)
        assert got.present.tolist() == present.tolist()
        np.testing.assert_allclose(got.values, values, rtol=1e-5, atol=1e-6)
    assert feats.present.tolist() == ref_transform(model, table)[0].tolist()


def test_nested_values_are_refused_with_the_column_named():
    table = pa.table({"item_id": ["a", "b"], "tags": pa.array([[["x"]], [["y"]]])})
    with pytest.raises(EmbeddingError, match="'tags' must hold strings"):
        item_tokens(table, ["tags"], "items.parquet")
    structs = pa.table({"item_id": ["a"], "meta": pa.array([{"k": "v"}])})
    with pytest.raises(EmbeddingError, match="'meta' must hold strings"):
        item_tokens(structs, ["meta"])


def test_dictionary_encoded_columns_read_like_plain_strings():
    plain = random_table(3, 60)
    encoded = plain.set_column(1, "brand", plain.column("brand").dictionary_encode())
    a = attribute_matrix(item_tokens(plain, ["brand"]), 60, 2)
    b = attribute_matrix(item_tokens(encoded, ["brand"]), 60, 2)
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[0].toarray(), b[0].toarray())
