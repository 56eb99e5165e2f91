"""``genrec bench scale``: time and peak memory of every pipeline stage against catalogue size.

For each size a seeded synthetic dataset (genrec.bench.scale_data) is written as raw tables, then
each stage runs as its own ``genrec`` command in a child process, the way a user runs it:

- ``generate``: the synthetic raw tables (not a pipeline stage; shown for scale);
- ``prepare``: ``genrec data prepare --format table``;
- ``embed``: ``genrec embed --config C --profile P`` (the config's encoder: the demo's multimodal
  attributes + collaborative), without the embedding cache;
- ``tokenize``, ``train``, ``test``: ``genrec train --config C --profile P --until STAGE`` in one run
  folder, with ``data.prepared`` and ``data.embeddings`` naming the earlier outputs (each later
  command finds the earlier stages in the run's cache), one training epoch within
  ``TRAIN_BUDGET_S`` (the training stage's cost at each size, bounded whatever the profile's cap).

With ``decode_sizes`` (``--decode-sizes``), the decoding stages of genrec.bench.scale_decode run too,
each in its own child process, on N synthetic semantic IDs and embeddings (no pipeline data):
``semantic_ids``, ``trie`` (the decoding index build), ``beam`` (one batch of constrained beam
search, beam 20, 256 users, random logits) and ``encode`` (a fitted tokenizer's encode of N
embeddings). Their rows carry the operation's own time beside the child's.

Each child's wall time and peak resident memory (``os.wait4``'s rusage, which covers its
descendants, and a /proc poll that also sees a child killed at its timeout) are recorded with the
1-minute load average before and after. A stage past its timeout is killed (its process group)
and recorded as "timed out"; stages that need it are "skipped". Results are rewritten (atomically)
after every stage, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from genrec.bench.measured_process import last_lines, run_measured
from genrec.bench.results import environment, write_results
from genrec.bench.scale_data import SyntheticSpec
from genrec.bench.scale_decode import DECODE_STAGES, stage_command
from genrec.bench.scale_plot import STAGES, plot_scale
from genrec.config import EvalConfig
from genrec.devices import cpu_model

ALL_STAGES = STAGES + DECODE_STAGES
NEEDS = {
    "prepare": "generate",
    "embed": "prepare",
    "tokenize": "embed",
    "train": "tokenize",
    "test": "train",
    "trie": "semantic_ids",
    "beam": "trie",
}
#: The decoding stages' own time (the operation, not the child's start, imports and data), plotted.
OPERATION_SECONDS = {
    "semantic_ids": "ids_seconds",
    "trie": "from_codes_seconds",
    "beam": "batch_seconds",
    "encode": "encode_seconds",
}
DEFAULT_TIMEOUT_S = 900.0


# ---------------------------------------------------------------- one child, measured
def eval_sample_supported() -> bool:
    """Whether the pipeline's test stage can score a seeded sample of users (an ``eval.users``
    setting); without it the test stage scores every user."""
    return "users" in {f.name for f in dataclasses.fields(EvalConfig)}


#: Training seconds of the train stage at every size by default: 8 minutes, so that the 1M-item
#: stage fits issue 18's 15 minutes with its setup; the committed sweeps ran under it. ``0``
#: (``--train-budget 0``): no cap, the stage trains its whole epoch (within the stage's timeout).
TRAIN_BUDGET_S = 480


def stage_commands(
    work: Path,
    config: Path,
    profile: str | None,
    test_users: int,
    seed: int,
    spec,
    train_budget_s: float = TRAIN_BUDGET_S,
) -> dict[str, list[str]]:
    """The command of each stage for one size; outputs under ``work``."""
    genrec = [sys.executable, "-m", "genrec.cli"]
    profile_args = ["--profile", profile] if profile else []
    raw, prepared, embed = work / "raw", work / "prepared", work / "embed"
    pipeline = [
        *genrec, "train", "--config", str(config), *profile_args, "--run-dir", str(work / "run"),
        "--no-progress",
        "--set", f"data.prepared={prepared}",
        "--set", f"data.embeddings={embed}",
        "--set", f"run.cache_dir={work / 'cache'}",
        "--set", "train.epochs=1",
        "--set", f"train.time_budget_s={train_budget_s:g}",
    ]  # fmt: skip
    test = [*pipeline, "--until", "test"]
    if test_users and eval_sample_supported():
        test += ["--set", f"eval.users={test_users}"]
    return {
        "generate": [
            sys.executable, "-m", "genrec.bench.scale_data", "--out", str(raw),
            "--items", str(spec.items), "--users", str(spec.users),
            "--interactions", str(spec.interactions), "--seed", str(seed),
        ],
        "prepare": [
            *genrec, "data", "prepare", "--format", "table", "--source", str(raw / "interactions.parquet"),
            "--items", str(raw / "items.parquet"), "--out", str(prepared), "--name", work.name, "--force",
        ],
        "embed": [
            *genrec, "embed", "--data", str(prepared), "--out", str(embed), "--config", str(config),
            *profile_args, "--no-cache", "--no-progress",
        ],
        "tokenize": [*pipeline, "--until", "tokenize"],
        "train": [*pipeline, "--until", "train"],
        "test": test,
    }  # fmt: skip


# ---------------------------------------------------------------- the sweep
def parse_sizes(text: str) -> tuple[int, ...]:
    """``"12k,100k,1m"`` -> (12000, 100000, 1000000); plain integers are taken as they are."""
    sizes = []
    for part in text.replace("_", "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
        number = part[:-1] if scale != 1 else part
        try:
            value = float(number) * scale
        except ValueError:
            raise ValueError(f"sizes: {part!r} is not a number of items like 12k, 1m or 300") from None
        if value < 2 or value != int(value):
            raise ValueError(f"sizes: {part!r} must be a whole number of items, at least 2")
        sizes.append(int(value))
    if not sizes:
        raise ValueError("sizes: give at least one, e.g. 12k,100k,1m")
    return tuple(sizes)


def run_scale_benchmark(
    out_dir: Path,
    sizes: Sequence[int],
    *,
    config: Path,
    profile: str | None = "cpu",
    stage_timeout_s: float = DEFAULT_TIMEOUT_S,
    stage_timeouts: dict[str, float] | None = None,
    stages: Sequence[str] = STAGES,
    test_users: int = 50_000,
    seed: int = 0,
    work_dir: Path | None = None,
    keep_work: bool = False,
    merge: bool = False,
    decode_sizes: Sequence[int] = (),
    decode_stages: Sequence[str] = DECODE_STAGES,
    train_budget_s: float = TRAIN_BUDGET_S,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the sweep (the pipeline at ``sizes``, the decoding stages at ``decode_sizes``); write
    scale.json/.csv/.png under ``out_dir`` (after every stage). ``merge`` keeps the rows already
    there except those this sweep measures again (a pipeline size, or a decoding size)."""
    _check_stages(stages, decode_stages, stage_timeouts)
    config = Path(config).resolve()
    if sizes and not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept: list[dict] = []
    earlier: list[dict] = []
    if merge and (out_dir / "scale.json").is_file():
        kept, earlier = _kept_rows(out_dir / "scale.json", sizes, decode_sizes)
    own_work = work_dir is None
    work_root = Path(tempfile.mkdtemp(prefix="genrec-scale-")) if own_work else Path(work_dir)
    work_root.mkdir(parents=True, exist_ok=True)
    timeouts = {s: float((stage_timeouts or {}).get(s, stage_timeout_s)) for s in ALL_STAGES}
    if train_budget_s < 0:
        raise ValueError(f"train_budget_s must be >= 0 (0: no cap), got {train_budget_s}")
    payload = _payload(
        config, profile, sizes, stages, timeouts, test_users, seed, decode_sizes, decode_stages, earlier,
        train_budget_s,
    )  # fmt: skip
    wanted = set(decode_stages)  # with what they need: beam needs trie, trie needs semantic_ids
    for stage in reversed(DECODE_STAGES):
        if stage in wanted and stage in NEEDS:
            wanted.add(NEEDS[stage])
    rows: list[dict] = []
    started = time.perf_counter()

    def measure(stage: str, row: dict, command: list[str], work: Path, status: dict[str, str]) -> None:
        """Run (or skip) one stage; append its row and rewrite the results."""
        _run_stage(stage, row, command, work, status, timeouts[stage], log)
        rows.append(row)
        _write(out_dir, {**payload, "seconds": time.perf_counter() - started}, kept + rows)

    try:
        for items in sizes:
            work = work_root / f"items-{items}"
            _sweep_pipeline_size(
                items, work, measure, config, profile, stages, test_users, seed, timeouts, train_budget_s
            )
        for items in decode_sizes:
            _sweep_decode_size(items, work_root / f"decode-{items}", measure, wanted, seed, timeouts)
    finally:
        if own_work and not keep_work:
            shutil.rmtree(work_root, ignore_errors=True)
    payload["seconds"] = time.perf_counter() - started
    payload["work_dir"] = str(work_root) if keep_work or not own_work else None
    paths = _write(out_dir, payload, kept + rows)
    return {"payload": payload, "rows": kept + rows, "paths": paths}


def _check_stages(
    stages: Sequence[str], decode_stages: Sequence[str], stage_timeouts: dict[str, float] | None
) -> None:
    """ValueError on a stage, decoding stage or timeout's stage that does not exist."""
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    for s in decode_stages:
        if s not in DECODE_STAGES:
            raise ValueError(f"unknown decoding stage {s!r}; choose from {', '.join(DECODE_STAGES)}")
    for s in stage_timeouts or {}:
        if s not in ALL_STAGES:
            raise ValueError(f"a timeout for unknown stage {s!r}; choose from {', '.join(ALL_STAGES)}")


def _kept_rows(
    path: Path, sizes: Sequence[int], decode_sizes: Sequence[int]
) -> tuple[list[dict], list[dict]]:
    """For ``merge``: the rows of scale.json at ``path`` that this sweep does not measure again, and
    the settings of the earlier sweeps (theirs and this file's own)."""
    previous = json.loads(path.read_text())

    def measured_again(r: dict) -> bool:
        return r["items"] in (decode_sizes if r["stage"] in DECODE_STAGES else sizes)

    kept = [r for r in previous.get("rows", []) if not measured_again(r)]
    # The settings of the sweeps whose rows are kept (each row also records its own timeout).
    settings = {k: v for k, v in previous.items() if k not in ("rows", "earlier_runs")}
    earlier = [*previous.get("earlier_runs", []), settings]
    return kept, earlier


def _payload(
    config: Path,
    profile: str | None,
    sizes: Sequence[int],
    stages: Sequence[str],
    timeouts: dict[str, float],
    test_users: int,
    seed: int,
    decode_sizes: Sequence[int],
    decode_stages: Sequence[str],
    earlier: list[dict],
    train_budget_s: float,
) -> dict:
    """scale.json's header: the machine and the sweep's settings."""
    return {
        "benchmark": "scale",
        **environment("cpu"),
        "device": f"{cpu_model()} ({os.cpu_count()} CPUs)",
        "cpu_count": os.cpu_count(),
        "nice": os.nice(0),
        # environment()'s "memory": the stages inherit this process's LD_PRELOAD (another malloc).
        "config": {
            "file": str(config),
            "profile": profile,
            "sizes": list(sizes),
            "stages": list(stages),
            "stage_timeouts_s": timeouts,
            "test_users": test_users,
            "train_budget_s": train_budget_s,
            "test_sampled": bool(test_users) and eval_sample_supported(),
            "seed": seed,
            "decode_sizes": list(decode_sizes),
            "decode_stages": list(decode_stages),
        },
        "earlier_runs": earlier,
    }


def _run_stage(
    stage: str,
    row: dict,
    command: list[str],
    work: Path,
    status: dict[str, str],
    timeout: float,
    log: Callable[[str], None],
) -> None:
    """Run one stage (or skip it when the stage it needs did not succeed); fill in its row and
    ``status[stage]``."""
    need = NEEDS.get(stage)
    if need and status.get(need) != "ok":
        status[stage] = "skipped"
        row.update(status="skipped", detail=f"needs {need} ({status.get(need, 'not run')})")
    else:
        items = row["items"]
        log(f"{items:,} items: {stage} ...")
        measured = run_measured(command, timeout, work / "logs" / f"{stage}.log")
        status[stage] = measured["status"]
        row.update(measured)
        if measured["status"] == "failed":
            row["detail"] = last_lines(work / "logs" / f"{stage}.log")
        elif stage in DECODE_STAGES:
            row.update(_decode_facts(work / "logs" / f"{stage}.json"))
        else:
            row.update(_stage_facts(stage, work / "run"))
        log(
            f"{items:,} items: {stage} {measured['status']} in {measured['seconds']:.1f} s, "
            f"peak {measured['peak_rss_gb']:.2f} GB (load {measured['load_1min_before']:.2f})"
        )
    row["command"] = _shown(command)


def _sweep_pipeline_size(
    items: int,
    work: Path,
    measure: Callable[[str, dict, list[str], Path, dict[str, str]], None],
    config: Path,
    profile: str | None,
    stages: Sequence[str],
    test_users: int,
    seed: int,
    timeouts: dict[str, float],
    train_budget_s: float,
) -> None:
    """The pipeline stages at one size, in a fresh ``work`` folder (generate always runs, the other
    stages not asked for are "not run")."""
    spec = SyntheticSpec.standard(items, seed=seed)
    if work.exists():
        shutil.rmtree(work)
    commands = stage_commands(work, config, profile, test_users, seed, spec, train_budget_s)
    status: dict[str, str] = {}
    for stage in STAGES:
        if stage not in stages and stage != "generate":
            status[stage] = "not run"
            continue
        row = {
            "items": spec.items,
            "users": spec.users,
            "interactions": spec.interactions,
            "stage": stage,
            "timeout_s": timeouts[stage],
        }
        measure(stage, row, commands[stage], work, status)


def _sweep_decode_size(
    items: int,
    work: Path,
    measure: Callable[[str, dict, list[str], Path, dict[str, str]], None],
    wanted: set[str],
    seed: int,
    timeouts: dict[str, float],
) -> None:
    """The ``wanted`` decoding stages at one size, in a fresh ``work`` folder."""
    if work.exists():
        shutil.rmtree(work)
    status: dict[str, str] = {}
    for stage in DECODE_STAGES:
        if stage not in wanted:
            continue
        command = stage_command(sys.executable, stage, work, items, seed, work / "logs" / f"{stage}.json")
        measure(stage, {"items": items, "stage": stage, "timeout_s": timeouts[stage]}, command, work, status)


def _decode_facts(path: Path) -> dict:
    """What a decoding stage's child wrote about itself (genrec.bench.scale_decode), with its own
    time as ``operation_seconds``."""
    try:
        facts = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    stage = path.stem
    if OPERATION_SECONDS.get(stage) in facts:
        facts["operation_seconds"] = facts[OPERATION_SECONDS[stage]]
    return facts


def _shown(cmd: list[str]) -> str:
    """The command as a user types it: ``genrec ...`` for the CLI, ``python -m ...`` otherwise."""
    if cmd[1:3] == ["-m", "genrec.cli"]:
        return " ".join(["genrec", *cmd[3:]])
    return " ".join(["python", *cmd[1:]])


def _stage_facts(stage: str, run_dir: Path) -> dict:
    """What the run folder says about a finished train or test stage: steps, epochs and why
    training stopped; users scored, their rate and Recall@10 (a check that the model learned)."""
    try:
        if stage == "train":
            train = json.loads((run_dir / "run.json").read_text()).get("train", {})
            logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            rates = [e["examples_per_s"] for e in logged if e.get("kind") == "train" and "examples_per_s" in e]
            return {
                "train_steps": train.get("steps"),
                "train_epochs": train.get("epochs"),
                "train_stopped_because": train.get("stopped_because"),
                "train_examples_per_s": round(rates[-1], 1) if rates else None,
            }
        if stage == "test":
            info = json.loads((run_dir / "test_eval.json").read_text())
            return {
                "test_users": info.get("num_users"),
                "test_users_per_s": round(float(info.get("users_per_second", 0.0)), 1),
                "test_recall@10": (info.get("metrics") or {}).get("recall@10"),
            }
    except (FileNotFoundError, ValueError):
        pass
    return {}


def _write(out_dir: Path, payload: dict, rows: list[dict]) -> dict[str, Path]:
    rows = sorted(rows, key=lambda r: (r["items"], ALL_STAGES.index(r["stage"])))
    paths = write_results(out_dir, "scale", payload, rows)
    png = plot_scale(out_dir / "scale.png", rows)
    if png:
        paths["png"] = png
    return paths
