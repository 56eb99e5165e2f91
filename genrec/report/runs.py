"""Reading what the report compares, and refusing runs that cannot be compared.

A RUN given to ``genrec report`` is one of:
- a ``genrec train`` run folder (``run.json``), whose test results are the evaluator's JSON
  (named by run.json's ``test_results``, else ``test_eval.json``) and its ``.per_user.parquet``,
  with the decode cost in ``cost.json`` when it was measured;
- a multi-seed folder (``seeds.json``, written by ``genrec train --seeds N``) listing its runs;
- an evaluator result file (``genrec eval --output FILE.json``), e.g. a baseline.

Each method is a list of :class:`Evaluation` (one per seed). Runs compare only when they were
scored on the same split of the same data: same dataset name, split, catalogue and evaluated rows,
and either the same dataset fingerprint (sha256 of its manifest) or, for copies of a dataset
prepared separately, identical held-out (user, target) pairs row by row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from genrec.train.checkpoint import CheckpointError, read_tensors

SEEDS_FILE = "seeds.json"
RUN_FILE = "run.json"
COST_FILE = "cost.json"
DEFAULT_TEST_RESULTS = "test_eval.json"


class ReportInputError(ValueError):
    """A RUN argument cannot be read; the message names the file and what is wrong."""


class RunMismatchError(ValueError):
    """Runs were scored on different datasets, splits or users, so comparing them would mislead."""


@dataclass
class Evaluation:
    """One scored run (one seed): the evaluator's metrics, info and per-user arrays, plus run extras."""

    path: Path  # the evaluator's results JSON
    metrics: dict
    info: dict
    per_user: dict[str, np.ndarray] | None
    seed: int | None = None
    run: dict = field(default_factory=dict)  # run.json of a training run ({} for a plain result file)
    cost: dict = field(default_factory=dict)  # cost.json of a training run

    @property
    def identity(self) -> dict:
        i = self.info
        return {
            "dataset": i.get("dataset"),
            "split": i.get("split"),
            "num_items": i.get("num_items"),
            "num_users": i.get("num_users"),
            "dataset_fingerprint": i.get("dataset_fingerprint"),
        }


@dataclass
class Method:
    """One compared method: a label and its evaluations (several when trained with several seeds)."""

    label: str
    path: Path
    evaluations: list[Evaluation]

    @property
    def seeds(self) -> list[int | None]:
        return [e.seed for e in self.evaluations]


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ReportInputError(f"{path} is missing ({what})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_per_user(results: Path, payload: dict) -> dict[str, np.ndarray] | None:
    name = payload.get("per_user_file")
    if not name:
        return None
    path = results.with_name(Path(name).name)  # always beside the JSON: never follow a path elsewhere
    if not path.is_file():
        raise ReportInputError(f"{results} names per-user arrays {path.name}, which are missing")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise ReportInputError(f"{path}: not a readable parquet file ({e})") from None
    arrays = {name: table.column(name).to_numpy() for name in table.column_names}
    for required in ("row", "user_idx", "target", "rank"):
        if required not in arrays:
            raise ReportInputError(f"{path}: column {required!r} is missing")
    order = np.argsort(arrays["row"], kind="stable")  # rows in split order, whatever order was saved
    return {k: np.asarray(v)[order] for k, v in arrays.items()}


def read_evaluation(
    results: Path, *, seed: int | None = None, run: dict | None = None, cost: dict | None = None
):
    """An evaluator results JSON (``EvalResult.save``) and its per-user arrays."""
    payload = _read_json(results, "evaluator results")
    if not isinstance(payload.get("metrics"), dict) or "split" not in payload:
        raise ReportInputError(f"{results} is not an evaluator result: it needs 'metrics' and 'split'")
    metrics = {k: (float("nan") if v is None else v) for k, v in payload["metrics"].items()}
    info = {k: v for k, v in payload.items() if k != "metrics"}
    return Evaluation(results, metrics, info, _read_per_user(results, payload), seed, run or {}, cost or {})


def read_training_run(folder: Path) -> Evaluation:
    """A ``genrec train`` run folder: run.json, its test results, and cost.json when present."""
    run = _read_json(folder / RUN_FILE, "a genrec train run")
    name = run.get("test_results") or DEFAULT_TEST_RESULTS
    results = folder / Path(str(name)).name
    if not results.is_file():
        raise ReportInputError(
            f"{folder} has no test results ({results.name} is missing): the run did not finish its test"
        )
    cost = _read_json(folder / COST_FILE, "cost") if (folder / COST_FILE).is_file() else {}
    _check_weights(folder)
    seed = (run.get("config") or {}).get("run", {}).get("seed")
    return read_evaluation(results, seed=seed, run=run, cost=cost)


def _check_weights(folder: Path) -> None:
    """A run's weights must match the checksum written with them (results of damaged weights are
    still reported, but a damaged file is a sign the folder was tampered with or corrupted)."""
    weights = folder / "model.safetensors"
    if not weights.exists():
        return

    try:
        read_tensors(weights)
    except CheckpointError as e:
        raise ReportInputError(str(e)) from None


def read_method(path: str | Path, label: str | None = None) -> Method:
    """One RUN argument (see the module docstring) as a :class:`Method`."""
    path = Path(path)
    if not path.exists():
        raise ReportInputError(f"{path} does not exist")
    if path.is_file():
        if path.name in (SEEDS_FILE, RUN_FILE):
            path = path.parent
        else:
            ev = read_evaluation(path)
            return Method(label or _default_label(ev, path.stem), path, [ev])
    if (path / SEEDS_FILE).is_file():
        seeds = _read_json(path / SEEDS_FILE, "a multi-seed run")
        runs = seeds.get("runs")
        if not isinstance(runs, list) or not runs:
            raise ReportInputError(f"{path / SEEDS_FILE}: 'runs' must list the seed run folders")
        evaluations = [read_training_run(path / Path(str(r)).name) for r in runs]
        return Method(label or seeds.get("name") or path.name, path, evaluations)
    if (path / RUN_FILE).is_file():
        ev = read_training_run(path)
        return Method(label or _default_label(ev, path.name), path, [ev])
    raise ReportInputError(
        f"{path} is not a run: expected {SEEDS_FILE} (genrec train --seeds), {RUN_FILE} (genrec train) "
        "or an evaluator results JSON file (genrec eval --output)"
    )


def _default_label(ev: Evaluation, fallback: str) -> str:
    name = ((ev.run.get("config") or {}).get("run") or {}).get("name")
    return str(name or ev.info.get("recommender") or fallback)


def unique_labels(methods: list[Method]) -> None:
    """Make labels distinct in place ("x", "x (2)", ...)."""
    seen: dict[str, int] = {}
    for m in methods:
        n = seen.get(m.label, 0) + 1
        seen[m.label] = n
        if n > 1:
            m.label = f"{m.label} ({n})"


def check_comparable(methods: list[Method]) -> list[str]:
    """Raise :class:`RunMismatchError` unless every evaluation scored the same split of the same data.

    Returns notes worth printing (e.g. a dataset prepared twice with identical content).
    """
    evaluations = [(m, e) for m in methods for e in m.evaluations]
    if not evaluations:
        raise ReportInputError("nothing to report: no runs given")
    ref_m, ref = evaluations[0]
    notes = []

    def where(m: Method, e: Evaluation) -> str:
        return f"{m.label} ({e.path})"

    for m, e in evaluations[1:]:
        a, b = ref.identity, e.identity
        for key, what in (("split", "split"), ("dataset", "dataset"), ("num_items", "catalogue size")):
            if a[key] != b[key]:
                raise RunMismatchError(
                    f"cannot compare runs scored on different data: {where(ref_m, ref)} has {what} "
                    f"{a[key]!r} but {where(m, e)} has {what} {b[key]!r}"
                )
        if a["num_users"] != b["num_users"]:
            raise RunMismatchError(
                f"cannot compare runs scored on different users: {where(ref_m, ref)} scored "
                f"{a['num_users']} users of {a['split']!r}, {where(m, e)} scored {b['num_users']}"
            )
        same_print = (
            a["dataset_fingerprint"] is not None and a["dataset_fingerprint"] == b["dataset_fingerprint"]
        )
        if ref.per_user is not None and e.per_user is not None:
            pa, pb = ref.per_user, e.per_user
            if not np.array_equal(pa["row"], pb["row"]):
                raise RunMismatchError(
                    f"cannot compare runs scored on different users: {where(ref_m, ref)} and {where(m, e)} "
                    f"evaluated different rows of the {a['split']!r} split (a --users sample?)"
                )
            same_rows = np.array_equal(pa["user_idx"], pb["user_idx"]) and np.array_equal(
                pa["target"], pb["target"]
            )
            if not same_rows:
                raise RunMismatchError(
                    f"cannot compare runs from different datasets or splits: {where(ref_m, ref)} and "
                    f"{where(m, e)} hold different (user, held-out item) pairs on the {a['split']!r} split "
                    f"(dataset fingerprints {_short(a['dataset_fingerprint'])} vs {_short(b['dataset_fingerprint'])})"
                )
            if not same_print:
                notes.append(
                    f"{where(m, e)} was scored on a separately prepared copy of {a['dataset']!r} (manifest "
                    f"{_short(b['dataset_fingerprint'])}, not {_short(a['dataset_fingerprint'])}); its held-out "
                    "pairs match row for row"
                )
        elif not same_print:
            raise RunMismatchError(
                f"cannot verify that {where(ref_m, ref)} and {where(m, e)} used the same data: their dataset "
                f"fingerprints differ ({_short(a['dataset_fingerprint'])} vs {_short(b['dataset_fingerprint'])}) "
                "and per-user arrays are missing to compare the held-out items"
            )
    return notes


def _short(fingerprint) -> str:
    return "none" if not fingerprint else str(fingerprint)[:12]
