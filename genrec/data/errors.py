"""Errors raised while reading raw data or a prepared dataset directory.

Every message names where the problem is (file, line, field) so it can be fixed at the source.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: the message says which file, line and field, and what to do about it."""


class DataFormatError(DataError):
    """A raw source file does not have the expected content.

    ``path``, ``line`` (1-based, or None for whole-file problems; ``unit="row"`` for Parquet rows)
    and ``field`` locate it;
    ``reason`` is the key under which it would be counted when skipping is asked for.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        reason: str | None = None,
        hint: str | None = None,
        unit: str = "line",
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.path if line is None else f"{self.path}, {unit} {line}"
        if field is not None:
            where += f", field {field!r}"
        text = f"{where}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class PreparedDatasetError(DataError):
    """A prepared dataset directory is missing a file or is inconsistent with its manifest."""


class DownloadError(RuntimeError):
    """A download failed, was truncated or did not match its expected checksum."""
