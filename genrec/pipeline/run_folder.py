"""Guarding a run folder: what may be trained into, one training at a time, nothing outside it.

``genrec train`` writes ``RUN/.genrec-run`` first thing: it marks the folder as a genrec run (so a
folder killed before ``run.json`` existed is still recognised) and is the lock file. The lock is an
OS file lock (``fcntl.flock``) held while the training runs; the kernel drops it when the process
ends, however it ends, so a killed run never leaves a stale lock. A second training on the folder
is refused with the folder and the PID of the one holding it.

Before any work the folder is checked: it must be new, empty, or a genrec run (a prepared dataset
or any other folder is refused unless ``force`` is given), it may hold no symbolic link (genrec
never writes one; following one would write or read outside the folder), and the files and folders
training will write must be writable, so a permission problem surfaces before training, not at
its first checkpoint.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from genrec.run_format import RunError

MARKER = ".genrec-run"
RUN_JSON = "run.json"
# What genrec train writes into the folder: files appended to or replaced, and folders it fills.
WRITTEN_FILES = (
    "run.json",
    "config.json",
    "items.parquet",
    "metrics.jsonl",
    "metrics.json",
    "test_eval.json",
    "summary.json",
    "cost.json",
    "model.safetensors",
    "best.safetensors",
    "checkpoints/latest.json",
)
WRITTEN_DIRS = ("", "checkpoints", "tokenizer", "encoders")


def is_run_folder(folder: Path) -> bool:
    return (folder / MARKER).is_file() or (folder / RUN_JSON).is_file()


def check_run_folder(folder: Path, *, force: bool = False) -> None:
    """Raise RunError unless ``folder`` may be trained into (see the module docstring)."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise RunError(f"--run-dir {folder} is a broken symbolic link")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise RunError(f"--run-dir {folder} is a file, not a folder; choose a folder for the run")
    if (folder / "manifest.json").is_file() and not is_run_folder(folder):
        raise RunError(
            f"--run-dir {folder} is a prepared dataset (it holds manifest.json); training into it would "
            "overwrite its items.parquet. Choose another --run-dir (the dataset goes in data.prepared)"
        )
    if not force and not is_run_folder(folder) and any(folder.iterdir()):
        names = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise RunError(
            f"--run-dir {folder} is not empty and is not a genrec run (it holds {shown}); choose a new or "
            "empty folder, or pass --force-run-dir to train into it anyway"
        )
    refuse_links(folder)
    check_writable(folder)


def refuse_links(folder: Path) -> None:
    """A symbolic link anywhere in the run folder is an error naming it."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                raise RunError(
                    f"{path} is a symbolic link; a run folder holds only files genrec wrote there "
                    f"(following it would read or write {os.readlink(path)!r}). Remove the link"
                )


def check_writable(folder: Path) -> None:
    """The folders and files training writes exist as the right kind of entry and can be written."""
    for name in WRITTEN_DIRS:
        path = folder / name
        if not path.exists():
            continue
        if not path.is_dir():
            raise RunError(
                f"{path} is a file where genrec train keeps a folder; move it out of the run folder"
            )
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise RunError(
                f"{path}: cannot write into this folder ({e.strerror}); fix its permissions"
            ) from None
    for name in WRITTEN_FILES:
        path = folder / name
        if not path.exists():
            continue
        if not path.is_file():
            raise RunError(
                f"{path} is a folder where genrec train writes a file; move it out of the run folder"
            )
        if name == "metrics.jsonl":  # appended to in place (the others are replaced by a rename)
            try:
                with open(path, "a"):
                    pass
            except OSError as e:
                raise RunError(f"{path}: cannot be appended to ({e.strerror}); fix its permissions") from None


class RunFolderLock:
    """An exclusive ``flock`` on ``RUN/.genrec-run`` (which also marks the folder as a run)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MARKER
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        import fcntl  # POSIX only: imported where the lock is taken, so the module loads everywhere

        self.folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise RunError(f"{self.path}: cannot open the run folder's lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(
                    f"{self.folder} is in use by another genrec train (PID {holder}); wait for it to finish, "
                    "or train into another --run-dir"
                ) from None
            raise RunError(f"{self.path}: cannot lock the run folder ({e.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays as the run's marker
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_seeds_folder(folder: Path, *, force: bool = False) -> None:
    """A ``--seeds N`` folder holds seed runs (``seed-<s>/``) and ``seeds.json`` only, or is new/empty."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise RunError(f"--run-dir {folder} is a file, not a folder; choose a folder for the runs")
    foreign = sorted(
        p.name for p in folder.iterdir() if not (p.name == "seeds.json" or p.name.startswith(("seed-", ".")))
    )
    if (folder / "manifest.json").is_file():
        raise RunError(
            f"--run-dir {folder} is a prepared dataset (it holds manifest.json); choose another --run-dir"
        )
    if foreign and not force:
        raise RunError(
            f"--run-dir {folder} holds files that are not seed runs ({', '.join(foreign[:5])}); choose a "
            "new or empty folder, or pass --force-run-dir to train into it anyway"
        )
