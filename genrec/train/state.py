"""What a training run keeps and returns: the loop's state a checkpoint saves (``state.json``), the
result of a run, and the error of a run whose loss stopped being finite."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from genrec.models import GenerativeModel
from genrec.train import checkpoint as ckpt


@dataclass
class TrainResult:
    model: GenerativeModel
    steps: int
    epochs_completed: float
    best: dict
    stopped_because: str
    train_seconds: float
    validations: list[dict] = field(default_factory=list)


class TrainingDiverged(ckpt.CheckpointError):
    """The loss became NaN or infinite: training stopped, the last good checkpoint is kept."""


def kept_step(folder: Path | None) -> int:
    return int(folder.name.split("-")[1]) if folder is not None else 0


@dataclass
class TrainState:
    """What a checkpoint saves of the loop (``state.json``) and a resumed run continues from."""

    signature: dict
    signature_hash: str
    world_size: int
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: dict = field(default_factory=lambda: {"ndcg@10": -1.0, "recall@10": 0.0, "step": 0})
    bad_validations: int = 0
    train_seconds: float = 0.0
    validations: list[dict] = field(default_factory=list)
    finished: str = ""
    # The loss summed since the last log line and its target tokens: a resumed run's next line
    # averages the same steps as the uninterrupted run's.
    loss_window: list = field(default_factory=lambda: [0.0, 0])

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def restore(self, saved: dict) -> None:
        """Take a checkpoint's values, except what describes this run (its signature, its size)."""
        for f in dataclasses.fields(self):
            if f.name in saved and f.name not in ("signature", "world_size"):
                setattr(self, f.name, saved[f.name])
