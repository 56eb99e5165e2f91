"""Several seeds of one configuration: where their runs live and what they add up to.

``genrec train --seeds N`` trains seeds s, s+1, ..., s+N-1 (s = ``run.seed``) into
``RUN_DIR/seed-<seed>/`` and then writes ``RUN_DIR/seeds.json``:

```
{"format_version": 1, "name": ..., "seeds": [0, 1, 2], "runs": ["seed-0", "seed-1", "seed-2"],
 "aggregate": {"recall@10": {"n", "mean", "std", "ci95", "min", "max"}, ...},
 "per_seed": {"seed-0": {"recall@10": ...}, ...}, "created": ...}
```

``std`` is the sample standard deviation over seeds and ``ci95`` the half-width of the 95%
t interval of the mean. ``genrec report RUN_DIR`` reads the seed runs themselves.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from genrec.files import atomic_write_text
from genrec.report.stats import mean_and_spread

SEEDS_FORMAT_VERSION = 1


def seed_list(base_seed: int, count: int) -> list[int]:
    if count < 1:
        raise ValueError(f"--seeds must be >= 1, got {count}")
    return [int(base_seed) + i for i in range(count)]


def seed_run_name(seed: int) -> str:
    return f"seed-{seed}"


def aggregate_metrics(per_seed: Sequence[dict]) -> dict[str, dict]:
    """For every numeric metric any seed reports: mean, std, 95% interval half-width, min, max, n."""
    keys: list[str] = []
    for metrics in per_seed:
        keys += [k for k, v in metrics.items() if isinstance(v, int | float) and k not in keys]
    return {k: mean_and_spread([m.get(k) for m in per_seed]) for k in keys}


def run_seeds(
    train_one: Callable[[Any, Path], dict], config, run_dir: str | Path, count: int, *, say=print
) -> Path:
    """Train ``count`` seeds of ``config`` (a genrec.config.Config) and write ``seeds.json``.

    ``train_one(config, folder)`` trains and tests one seed into ``folder`` and returns its test
    metrics; seed s goes to ``run_dir/seed-<s>`` with ``config.run.seed = s``. Returns seeds.json's path.
    """
    run_dir = Path(run_dir)
    seeds = seed_list(config.run.seed, count)
    runs, per_seed = [], []
    for i, seed in enumerate(seeds):
        one = copy.deepcopy(config)
        one.run.seed = seed
        folder = run_dir / seed_run_name(seed)
        say(f"seed {seed} ({i + 1} of {len(seeds)}) -> {folder}")
        per_seed.append(dict(train_one(one, folder)))
        runs.append(folder.name)
    return write_seeds_file(
        run_dir, name=config.run.name or run_dir.name, seeds=seeds, runs=runs, per_seed=per_seed
    )


def write_seeds_file(
    folder: str | Path, *, name: str, seeds: Sequence[int], runs: Sequence[str], per_seed: Sequence[dict]
) -> Path:
    """Write ``folder/seeds.json`` atomically (see the module docstring); returns its path."""
    if not (len(seeds) == len(runs) == len(per_seed)):
        raise ValueError(f"seeds ({len(seeds)}), runs ({len(runs)}) and metrics ({len(per_seed)}) must align")
    folder = Path(folder)
    payload = {
        "format_version": SEEDS_FORMAT_VERSION,
        "name": name,
        "seeds": [int(s) for s in seeds],
        "runs": [str(r) for r in runs],
        "aggregate": aggregate_metrics(per_seed),
        "per_seed": {r: _finite(m) for r, m in zip(runs, per_seed, strict=True)},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    path = folder / "seeds.json"
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def print_seeds_summary(seeds_file: str | Path, console) -> None:
    """The headline metrics of a multi-seed run: mean ± std (min-max) over its seeds."""
    data = json.loads(Path(seeds_file).read_text())
    table = Table(title=f"{data['name']}: {len(data['seeds'])} seeds ({seeds_file})")
    for column in ("metric", "mean", "std", "95% CI ±", "min", "max"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "coverage@10", "gini@10"):
        s = data["aggregate"].get(key)
        if not s or s.get("mean") is None:
            continue
        cells = [s["mean"], s["std"], s["ci95"], s["min"], s["max"]]
        table.add_row(key, *("-" if v is None else f"{v:.4f}" for v in cells))
    console.print(table)
