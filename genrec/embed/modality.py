"""One modality's per-item features, with an explicit mask of the items that have it.

Every modality encoder (text, image, attributes, collaborative) hands the fusion a
:class:`ModalityFeatures`: row i is item i, and ``present[i]`` says whether item i has this
modality at all. Rows of absent items are zeros by convention but are never read as data: the
fusion masks them out, so "no image" never looks like "a black image".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genrec.embed.artifacts import EmbeddingError


@dataclass(frozen=True)
class ModalityFeatures:
    name: str
    values: np.ndarray  # float32 [num_items, D]
    present: np.ndarray  # bool [num_items]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        values, present = np.asarray(self.values), np.asarray(self.present)
        if values.ndim != 2 or values.shape[1] == 0:
            raise EmbeddingError(
                f"modality {self.name!r}: features must be [num_items, D>0], got {list(values.shape)}"
            )
        if present.shape != (values.shape[0],) or present.dtype != bool:
            raise EmbeddingError(
                f"modality {self.name!r}: present must be bool [{values.shape[0]}], got {present.dtype} {list(present.shape)}"
            )
        if not np.isfinite(values[present]).all():
            raise EmbeddingError(f"modality {self.name!r}: NaN or infinite features")
        values = np.where(present[:, None], values, 0.0).astype(np.float32)
        object.__setattr__(self, "values", np.ascontiguousarray(values))

    @property
    def num_items(self) -> int:
        return self.values.shape[0]

    @property
    def dimension(self) -> int:
        return self.values.shape[1]

    @property
    def coverage(self) -> float:
        """Share of items that have this modality."""
        return float(self.present.mean()) if self.num_items else 0.0

    def check_items(self, num_items: int) -> ModalityFeatures:
        """self, or EmbeddingError when it does not have one row per item of the dataset."""
        if self.num_items != num_items:
            raise EmbeddingError(
                f"modality {self.name!r} has {self.num_items} rows for {num_items} items in the item table; "
                "row i must be item i"
            )
        return self

    def summary(self) -> dict:
        return {"dimension": self.dimension, "items_with": int(self.present.sum()), **self.info}
