"""A wheel built with GENREC_BUILD_EXT=0 is a working pure-PyTorch install, and the Triton
kernels install as genrec.triton_kernels, never as a top-level ``triton_kernels``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_without_extension_works(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info", "build")
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("genrec", "triton_kernels", "csrc"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    env = {**os.environ, "GENREC_BUILD_EXT": "0"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("genrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    assert "genrec/triton_kernels/rq_encode.py" in names
    assert not [n for n in names if n.startswith("triton_kernels/")]
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"genrec"}

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
    )
    # The test venv holds genrec as an editable install, whose import hook would otherwise
    # supply genrec._C from the source tree: drop it, so the probe sees the wheel alone.
    probe = textwrap.dedent(
        """
        import sys
        sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
        import torch, genrec, genrec.ops, genrec.triton_kernels
        assert not genrec.extension_loaded()
        assert genrec.triton_kernels.__file__.startswith(SITE), genrec.triton_kernels.__file__
        assert genrec.ops.resolve_backend("rq_encode", "auto", torch.device("cpu")).value == "reference"
        codes = genrec.ops.rq_encode(torch.randn(10, 4), torch.randn(2, 3, 4))
        assert codes.shape == (10, 2)
        try:
            genrec.ops.rq_encode(torch.randn(10, 4), torch.randn(2, 3, 4), backend="cpp")
        except genrec.ops.BackendUnavailableError as e:
            assert "pip install" in str(e), e
        else:
            raise AssertionError("cpp backend should be unavailable")
        print("ok")
        """
    ).replace("SITE", repr(str(site)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n{probe}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
