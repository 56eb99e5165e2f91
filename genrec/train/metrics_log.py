"""The run's metrics log: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard.

TensorBoard is optional: without the package a one-line notice says so and only the JSONL is
written. Only the main process of a distributed run writes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from genrec.files import atomic_write_text, json_text


class MetricsLog:
    def __init__(
        self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = True, notice=print
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    notice("TensorBoard is not installed: scalars go to metrics.jsonl only")
                else:
                    self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, kind: str, step: int, **values) -> None:
        """Append ``{"kind", "step", "time", **values}``; numbers also become TensorBoard scalars."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json_text(record) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def drop_after(self, step: int) -> None:
        """Forget records of steps after ``step`` (a resumed run replays them)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("kind") in ("train", "val") and record.get("step", 0) > step:
                continue
            if record.get("kind") == "train_end":  # the resumed run ends (and says so) again
                continue
            kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
