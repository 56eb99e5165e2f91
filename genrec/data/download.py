"""Fetching public dataset files: resumable, verified, and renamed into place only when complete.

A file downloads to ``<name>.part`` beside its destination. An interrupted download resumes from
the bytes already there (HTTP Range); a finished one is checked against its expected size and,
where known, its sha256; only then is it renamed to its final name. A corrupt download (wrong
checksum) is deleted; a truncated one keeps its ``.part`` so the next run resumes it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from genrec.data.errors import DataError, DownloadError
from genrec.data.paths import data_dir
from genrec.data.registry import DATASETS, KnownDataset, RemoteFile, get_dataset
from genrec.files import atomic_write_text, default_mode, file_sha256

CHUNK = 1 << 20
USER_AGENT = "genrec-data-download"
DOWNLOAD_MANIFEST = "download.json"

# Progress callback: (file name, bytes so far, total bytes or None).
Progress = Callable[[str, int, int | None], None]


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> dict:
    """Download ``url`` to ``dest``; returns ``{url, path, bytes, sha256, expected_sha256, verified}``.

    An existing ``dest`` that matches ``sha256`` (or any existing one when no checksum is known) is
    kept. Interrupted transfers are resumed up to ``retries`` times in this call, and resume from
    the ``.part`` file in a later call.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        actual = file_sha256(dest)
        if sha256 is None or actual == sha256:
            return _record(url, dest, actual, sha256)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_into(url, part, timeout, progress, dest.name)
            break
        except DownloadError as e:
            if not e.args[0].startswith("truncated") or attempt >= retries:
                raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if attempt >= retries:
                raise DownloadError(
                    f"{url}: {e}; rerun to resume from {part.stat().st_size if part.exists() else 0} bytes"
                ) from None
        attempt += 1
        time.sleep(min(2.0**attempt * 0.1, 5.0))
    actual = file_sha256(part)
    if sha256 is not None and actual != sha256:
        part.unlink()
        raise DownloadError(
            f"{url}: sha256 mismatch for {dest.name}: expected {sha256}, got {actual}; the download was "
            "corrupt and has been deleted (nothing was written to its final name)"
        )
    os.replace(part, dest)
    return _record(url, dest, actual, sha256)


def _record(url: str, dest: Path, actual: str, expected: str | None) -> dict:
    return {
        "url": url,
        "path": str(dest),
        "bytes": dest.stat().st_size,
        "sha256": actual,
        "expected_sha256": expected,
        "verified": expected is not None and actual == expected,
    }


def _fetch_into(url: str, part: Path, timeout: float, progress: Progress | None, label: str) -> None:
    """Append the rest of ``url`` to ``part``; raises DownloadError('truncated ...') if it ends early."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after what we have: the part is complete
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""), url)
            if start != have:
                raise DownloadError(f"{url}: asked to resume at byte {have}, the server sent from {start}")
            mode = "ab"
        elif status == 200:
            have, mode = 0, "wb"  # the server ignored the Range header: start over
            total = int(length) if length is not None else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}")
        got = have
        with open(part, mode) as f:
            while True:
                try:
                    block = response.read(CHUNK)
                except http.client.IncompleteRead as e:
                    f.write(e.partial)
                    got += len(e.partial)
                    break
                if not block:
                    break
                f.write(block)
                got += len(block)
                if progress is not None:
                    progress(label, got, total)
    if total is not None and got < total:
        raise DownloadError(f"truncated: {url} ended after {got} of {total} bytes; rerun to resume")
    if total is not None and got > total:
        part.unlink()
        raise DownloadError(f"{url}: received {got} bytes, more than the announced {total}; deleted")


def _content_range(value: str, url: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    try:
        unit, _, spec = value.partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.split("-")[0])
        if unit != "bytes":
            raise ValueError
        return start, (None if total in ("", "*") else int(total))
    except ValueError:
        raise DownloadError(f"{url}: malformed Content-Range header {value!r}") from None


def extract_zip(archive: Path, folder: Path, remote: RemoteFile) -> list[dict]:
    """Unpack ``archive`` into ``folder`` (``strip_prefix`` removed). Every member is extracted into
    a temporary folder first and checked (its name stays inside ``folder``; a known sha256
    matches); only when all are good are they moved into place. A bad archive is deleted (a rerun
    downloads it again) and leaves nothing extracted. Returns one record per extracted file."""
    records = []
    folder = folder.resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extract-", dir=folder))
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [info for info in zf.infolist() if not info.is_dir()]
            for info in members:
                name = info.filename.removeprefix(remote.strip_prefix)
                target = (folder / name).resolve()
                if not name or not target.is_relative_to(folder) or target == folder:
                    raise DownloadError(f"{archive}: member {info.filename!r} would land outside {folder}")
                staged = staging / target.relative_to(folder)
                staged.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with open(staged, "wb") as out, zf.open(info) as src:
                    while block := src.read(CHUNK):
                        h.update(block)
                        out.write(block)
                expected = remote.member_sha256.get(name)
                if expected is not None and h.hexdigest() != expected:
                    raise DownloadError(
                        f"{archive}: member {name} has sha256 {h.hexdigest()}, expected {expected}"
                    )
                records.append(
                    {
                        "path": name,
                        "sha256": h.hexdigest(),
                        "bytes": info.file_size,
                        "verified": expected is not None,
                    }
                )
        for record in records:  # every member checked out: move them into place
            target = folder / record["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = staging / record["path"]
            os.chmod(staged, default_mode())
            os.replace(staged, target)
    except (DownloadError, zipfile.BadZipFile, EOFError, OSError) as e:
        archive.unlink(missing_ok=True)
        if isinstance(e, DownloadError):
            raise DownloadError(f"{e.args[0]}; the archive was deleted and nothing was extracted") from None
        raise DownloadError(
            f"{archive}: not a readable zip archive ({e}); it was deleted and nothing was extracted, "
            "rerun to download it again"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return records


def verify_registered_sources(source: str | Path, root: str | Path | None = None) -> None:
    """When ``source`` is a registered dataset's folder under the data folder, check its raw files
    against the registry's pinned sha256 (genrec.data.registry); a differing file is a DataError
    naming it. Files without a pinned checksum, and folders of no registered dataset, pass."""

    source = Path(source)
    if not source.is_dir():
        return
    base = Path(root) if root is not None else data_dir()
    here = source.resolve()
    for ds in DATASETS.values():
        if (base / ds.folder).resolve() != here:
            continue
        pinned = [(r.filename, r.sha256) for r in ds.files if r.sha256]
        pinned += [(name, sha) for r in ds.files for name, sha in r.member_sha256.items()]
        for name, expected in pinned:
            path = source / name
            if not path.is_file():
                continue
            actual = file_sha256(path)
            if actual != expected:
                raise DataError(
                    f"{path}: sha256 {actual} differs from the {expected} pinned for {ds.name!r} "
                    f"(genrec.data.registry); the file is damaged or was changed. Download it again "
                    f"(delete it, then `genrec data download {ds.name}`), or prepare a changed copy from another folder"
                )


def download_dataset(
    dataset: str | KnownDataset,
    root: str | Path | None = None,
    *,
    retries: int = 3,
    progress: Progress | None = None,
) -> dict:
    """Download every file of a registered dataset into ``root / dataset.folder`` (root defaults to
    :func:`genrec.data.data_dir`) and write ``download.json`` there; returns that manifest."""
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    folder = (Path(root) if root is not None else data_dir(create=True)) / ds.folder
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for remote in ds.files:
        record = download_file(
            remote.url, folder / remote.filename, sha256=remote.sha256, retries=retries, progress=progress
        )
        record["path"] = remote.filename
        if remote.extract:
            record["extracted"] = extract_zip(folder / remote.filename, folder, remote)
        files.append(record)
    manifest = {
        "name": ds.name,
        "format": ds.format,
        "description": ds.description,
        "files": files,
        "citation": ds.citation,
        "terms": ds.terms,
        "notes": ds.notes,
        "downloaded": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(folder / DOWNLOAD_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
