"""genrec/_openmp.py: importing genrec before torch shortens the idle OpenMP workers' spin, unless the
user chose a wait setting; torch imported first keeps its own (libgomp reads it when torch loads it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SHOW = "import os, json; {imports}; from genrec import _openmp; print(json.dumps(_openmp.describe()))"


def _describe(imports: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", SHOW.format(imports=imports)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_genrec_first_sets_a_short_spin():
    info = _describe("import genrec")
    assert info["GOMP_SPINCOUNT"] == "10000" and info["set_by_genrec"] is True
    assert info["OMP_WAIT_POLICY"] is None


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}])
def test_a_policy_the_user_chose_is_kept(env):
    info = _describe("import genrec", **env)
    assert info["set_by_genrec"] is False
    assert info["OMP_WAIT_POLICY"] == env.get("OMP_WAIT_POLICY")
    assert info["GOMP_SPINCOUNT"] == env.get("GOMP_SPINCOUNT")


def test_torch_first_is_left_alone():
    # Too late to matter once libgomp is loaded, so genrec does not pretend otherwise.
    info = _describe("import torch; import genrec")
    assert info["GOMP_SPINCOUNT"] is None and info["set_by_genrec"] is False

