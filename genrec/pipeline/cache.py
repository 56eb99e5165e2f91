"""The stage cache: each stage's output lives in ``<root>/<stage>/<key>/``, ``key`` a hash of the
stage's settings and of its inputs' contents, so an unchanged stage is found and reused anywhere
(another run folder, another machine the cache folder was copied to).

An entry is complete when its ``stage.json`` exists. It is built in a temporary folder beside its
place and renamed into place at the end, so a killed build leaves no entry that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genrec.faults import fault_point
from genrec.files import atomic_write_text, json_text

CACHE_ENV = "GENREC_CACHE_DIR"
MARKER = "stage.json"


def default_cache_root() -> Path:
    """``$GENREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/genrec/stages`` (``~/.cache/genrec/stages``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "genrec" / "stages"


@dataclass(frozen=True)
class StageOutput:
    """Where a stage's artifacts are, under which key, and whether they were reused."""

    stage: str
    key: str
    path: Path
    cached: bool
    seconds: float
    info: dict
    settings: dict = field(default_factory=dict)  # what the key hashes (besides the inputs)

    def summary(self) -> dict:
        return {
            "key": self.key,
            "path": str(self.path),
            "cached": self.cached,
            "seconds": round(self.seconds, 2),
            **self.info,
        }


class StageCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Path | None:
        path = self.entry(stage, key)
        return path if (path / MARKER).is_file() else None

    def build(
        self, stage: str, key: str, settings: dict, inputs: dict, produce: Callable[[Path], dict | None]
    ) -> StageOutput:
        """The entry for (stage, key): reused when complete, else made by ``produce(folder)``.

        ``produce`` writes the stage's artifacts into the folder it is given and may return a dict
        of facts to record (they land in stage.json and in the returned ``info``).
        """
        found = self.lookup(stage, key)
        if found is not None:
            meta = json.loads((found / MARKER).read_text())
            return StageOutput(stage, key, found, True, 0.0, meta.get("info", {}), settings)
        final = self.entry(stage, key)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        started = time.perf_counter()
        try:
            info = produce(tmp) or {}
            fault_point(f"{stage}-produced")
            seconds = time.perf_counter() - started
            meta = {
                "stage": stage,
                "key": key,
                "settings": settings,
                "inputs": inputs,
                "info": info,
                "seconds": round(seconds, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            atomic_write_text(tmp / MARKER, json_text(meta, indent=2, default=str) + "\n")
            if final.exists():  # an incomplete leftover, or a concurrent build that won the race
                if (final / MARKER).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return StageOutput(stage, key, final, True, seconds, info, settings)
                shutil.rmtree(final)
            fault_point(f"{stage}-marked")
            os.replace(tmp, final)
            fault_point(f"{stage}-cached")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return StageOutput(stage, key, final, False, seconds, info, settings)
