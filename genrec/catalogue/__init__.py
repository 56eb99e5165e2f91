"""The catalogue after training: items added to a trained run without retraining.

``add_items(RUN, NEW_ITEMS, OUT)`` (``genrec add-items``) writes an updated run folder whose model
can recommend the new items; ``save_run_encoders(RUN, EMB, TOK)`` keeps in a run folder what that
needs (the embed encoder's state and the tokenizer's codebooks). See docs/contracts.md.
"""

from genrec.catalogue.add import AddedItems, add_items
from genrec.catalogue.run_encoders import NewItemsError, RunEncoders, load_run_encoders, save_run_encoders

__all__ = [
    "AddedItems",
    "NewItemsError",
    "RunEncoders",
    "add_items",
    "load_run_encoders",
    "save_run_encoders",
]
