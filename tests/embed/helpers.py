"""Small prepared datasets for the embed and tokenize tests, written through genrec.data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrec.data import build_item_table, write_prepared_arrays

PRODUCTS = [
    ("Matte Lipstick Ruby Red", "Glow", ["Beauty", "Makeup", "Lips"]),
    ("Hydrating Face Cream 50ml", "Dermia", ["Beauty", "Skin Care", "Face"]),
    ("Nail Polish Coral Crush", "OPI", ["Beauty", "Makeup", "Nails"]),
    ("Volumizing Shampoo", None, ["Beauty", "Hair Care"]),
    (None, "Glow", ["Beauty", "Makeup"]),
    ("Sunscreen SPF 50 &amp; Aloe", "Sunny", []),
    ("Eyeliner Pencil Black", "Glow", ["Beauty", "Makeup", "Eyes"]),
    ("Argan Oil Hair Mask", "Maroc", ["Beauty", "Hair Care", "Treatments"]),
]


def make_prepared(root: Path, num_items: int = 24, *, seed: int = 0, name: str = "tiny") -> Path:
    """A prepared dataset of ``num_items`` items (texts cycled from PRODUCTS, numbered) and 10 users."""
    rng = np.random.default_rng(seed)
    item_ids = [f"I{seed}-{i:04d}" for i in range(num_items)]
    rows = []
    for i, item_id in enumerate(item_ids):
        title, brand, categories = PRODUCTS[i % len(PRODUCTS)]
        rows.append(
            {
                "item_id": item_id,
                "title": None if title is None else f"{title} #{i}",
                "brand": brand,
                "categories": categories,
            }
        )
    table, text_columns = build_item_table(item_ids, rows)
    users = 10
    lengths = rng.integers(3, 8, size=users)
    user_idx = np.repeat(np.arange(users), lengths)
    item_idx = rng.integers(0, num_items, size=len(user_idx))
    return write_prepared_arrays(
        root / name,
        user_idx=user_idx,
        item_idx=item_idx,
        timestamps=np.arange(len(user_idx)),
        user_ids=[f"U{u}" for u in range(users)],
        item_table=table,
        name=name,
        source_format="test",
        item_text_columns=text_columns,
    )
