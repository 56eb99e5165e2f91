"""genrec.bench.results.save_figure: the image appears whole or not at all, and the figure is closed."""

from __future__ import annotations

import os

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genrec.files import default_file_mode, save_figure  # noqa: E402


def _figure():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    return fig


def test_save_figure_writes_the_image_and_closes_the_figure(tmp_path):
    fig = _figure()
    path = save_figure(fig, tmp_path / "sub" / "plot.png", dpi=50)
    assert path == tmp_path / "sub" / "plot.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.stat(path).st_mode & 0o777 == default_file_mode()
    assert not plt.fignum_exists(fig.number)
    assert os.listdir(path.parent) == ["plot.png"]  # no temporary file left


def test_a_failed_save_keeps_the_old_image_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old image")
    fig = _figure()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old image"
    assert os.listdir(tmp_path) == ["plot.png"]
    assert not plt.fignum_exists(fig.number)
