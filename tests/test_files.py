"""genrec.files: atomic writes (all or nothing, a plain file's permissions, no temporary left),
strict JSON and the default permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from genrec.files import atomic_path, atomic_write_bytes, atomic_write_text, default_mode, json_text


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
