"""What ``genrec train`` may write into: one training per run folder (an OS lock), no prepared
dataset or foreign folder, no symbolic links, and writability checked before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.config import load_config
from genrec.pipeline import run_pipeline
from genrec.pipeline.run_folder import MARKER, RunFolderLock, check_run_folder
from genrec.run_format import RunError
from tests.pipeline.conftest import tiny_overrides

# Holds the run folder's lock the way genrec train does (flock on RUN/.genrec-run, PID inside).
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir / MARKER)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def train_args(tmp_path, tiny_prepared, run_dir, *extra):
    sets = [a for o in tiny_overrides(tiny_prepared, tmp_path / "cache") for a in ("--set", o)]
    return ["train", "--run-dir", str(run_dir), "--no-progress", *sets, "--set", "train.epochs=1", *extra]


def test_a_second_training_on_a_locked_run_folder_is_refused(tmp_path, tiny_prepared):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        res = CliRunner().invoke(app, train_args(tmp_path, tiny_prepared, run_dir))
    finally:
        holder.kill()
        holder.wait()
    assert res.exit_code == 1, res.output
    assert str(run_dir) in res.output.replace("\n", "") and f"PID {holder.pid}" in res.output
    assert sorted(p.name for p in run_dir.iterdir()) == [MARKER]  # nothing written


def test_the_lock_dies_with_its_process(tmp_path):
    holder = hold_lock(tmp_path / "run")
    with pytest.raises(RunError, match=f"PID {holder.pid}"):
        RunFolderLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunFolderLock(tmp_path / "run") as lock:  # no stale lock after a kill
        assert (tmp_path / "run" / MARKER).read_text().strip() == str(os.getpid())
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR);"
                "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
                str(lock.path),
            ],
            capture_output=True,
        )
        assert other.returncode != 0  # held while training


def test_a_prepared_dataset_folder_is_refused_and_left_alone(tmp_path, tiny_prepared):
    before = {p.name: p.read_bytes() for p in tiny_prepared.iterdir() if p.is_file()}
    config = load_config(None, overrides=tiny_overrides(tiny_prepared, tmp_path / "cache"))
    with pytest.raises(RunError, match=r"prepared dataset .*manifest\.json"):
        run_pipeline(config, tiny_prepared, progress=False)
    res = CliRunner().invoke(app, train_args(tmp_path, tiny_prepared, tiny_prepared, "--force-run-dir"))
    assert res.exit_code == 1 and "prepared dataset" in res.output
    assert {p.name: p.read_bytes() for p in tiny_prepared.iterdir() if p.is_file()} == before


def test_a_foreign_folder_is_refused_unless_forced(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("keep me")
    with pytest.raises(RunError, match=r"not empty and is not a genrec run.*thesis\.tex.*--force-run-dir"):
        check_run_folder(folder)
    check_run_folder(folder, force=True)
    check_run_folder(tmp_path / "new")  # new and empty folders are fine
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")
    with pytest.raises(RunError, match="is a file"):
        check_run_folder(folder / "thesis.tex")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("metrics_link", "symbolic link"),
        ("checkpoints_file", "is a file where genrec train keeps a folder"),
        ("run_json_dir", "is a folder where genrec train writes a file"),
    ],
)
def test_run_folder_damage_is_found_before_any_work(tmp_path, tiny_prepared, damage, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / MARKER).write_text("")
    outside = tmp_path / "outside.txt"
    outside.write_text("not genrec's\n")
    if damage == "metrics_link":
        (run_dir / "metrics.jsonl").symlink_to(outside)
    elif damage == "checkpoints_file":
        (run_dir / "checkpoints").write_text("")
    else:
        (run_dir / "run.json").mkdir()
    config = load_config(None, overrides=tiny_overrides(tiny_prepared, tmp_path / "cache"))
    with pytest.raises(RunError, match=message):
        run_pipeline(config, run_dir, progress=False)
    assert outside.read_text() == "not genrec's\n"
    assert not (tmp_path / "cache").exists()  # refused before the first stage
