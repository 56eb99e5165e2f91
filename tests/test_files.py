"""genrec.files: atomic writes (all or nothing, a plain file's permissions, no temporary left),
strict JSON and the default permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

import genrec.files
from genrec.files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    default_mode,
    json_text,
    replace_dir,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_write_replaces_the_file_with_a_plain_file_s_permissions(tmp_path, umask_022):
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "one")
    assert target.read_text() == "one" and _mode(target) == 0o644  # mkstemp alone gives 0o600
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="midway"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("midway")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_temporary_sits_beside_the_target_with_the_suffix_asked_for(tmp_path):
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".plot.png.")
        tmp.write_bytes(b"x")
    assert (tmp_path / "plot.png").read_bytes() == b"x"


def test_default_mode_applies_the_umask(umask_022):
    assert default_mode() == 0o644 and default_mode(0o777) == 0o755


def test_json_text_writes_null_for_non_finite_floats_never_nan():
    text = json_text({"a": float("nan"), "b": [1.5, float("inf")], "c": (float("-inf"),)})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": [None]}


def _folder(path, files: dict[str, str]):
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _contents(path) -> dict[str, str]:
    return {p.name: p.read_text() for p in path.iterdir()}


def test_replace_dir_puts_the_staged_folder_in_place_of_none_or_an_old_one(tmp_path):
    final = tmp_path / "out"
    replace_dir(_folder(tmp_path / "stage1", {"a": "1", "b": "1"}), final)
    assert _contents(final) == {"a": "1", "b": "1"}
    replace_dir(_folder(tmp_path / "stage2", {"a": "2", "c": "2"}), final)
    assert _contents(final) == {"a": "2", "c": "2"}  # the new folder whole: no "b" left from the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing staged or set aside is left


def test_replace_dir_puts_the_old_folder_back_when_the_new_one_cannot_take_its_place(tmp_path, monkeypatch):
    final = _folder(tmp_path / "out", {"a": "old"})
    staged = _folder(tmp_path / "stage", {"a": "new"})
    real = os.replace

    def failing(src, dst):
        if os.fspath(src) == os.fspath(staged):
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(genrec.files.os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        replace_dir(staged, final)
    assert _contents(final) == {"a": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "stage"]  # the aside folder is gone
