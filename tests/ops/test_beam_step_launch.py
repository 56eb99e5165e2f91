"""The CUDA beam step's launch planning: shared memory, the dynamic-size opt-in, the workspace grid.

The planning is pure host arithmetic (csrc/cuda/beam_step_launch.h), compiled here alone with the
host C++ compiler, so it is checked without a GPU. The `cuda` tests launch the shapes that used to
fail, each in a fresh process (an earlier launch in the process would have raised the limit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
STATIC_SMEM = 1168  # ptxas -v for beam_step_kernel on sm_90 (read at run time by the kernel's host code)
HOPPER_OPTIN = 227 * 1024  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100/H200
KEY_BUDGET = 160 * 1024  # kSharedKeyBudget in csrc/cuda/beam_step.cu
DEFAULT = 48 * 1024

_DRIVER = r"""
#include <iostream>
#include "beam_step_launch.h"
using namespace genrec::beam_step_launch;
int main() {
  std::string op;
  long long a, b, c, d, e, f;
  while (std::cin >> op) {
    if (op == "plan") {
      std::cin >> a >> b >> c >> d >> e >> f;
      const SharedPlan p = plan_shared(a, b, c, d, e, f);
      std::cout << p.shared_keys << " " << p.dynamic_bytes << " " << p.fits << "\n";
    } else if (op == "optin") {
      std::cin >> a >> b >> c;
      std::cout << dynamic_optin_bytes(a, b, c) << "\n";
    } else if (op == "grid") {
      std::cin >> a >> b >> c >> d;
      std::cout << workspace_grid(a, b, c, d) << "\n";
    }
  }
}
"""


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    """A function that sends lines to the compiled planning driver and returns its output lines."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    tmp = tmp_path_factory.mktemp("launch")
    (tmp / "driver.cpp").write_text(_DRIVER)
    exe = tmp / "driver"
    subprocess.run(
        [cxx, "-std=c++17", "-O1", f"-I{ROOT / 'csrc' / 'cuda'}", str(tmp / "driver.cpp"), "-o", str(exe)],
        check=True,
        capture_output=True,
        timeout=120,
    )

    def ask(lines: list[str]) -> list[str]:
        done = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
        return done.stdout.split("\n")[: len(lines)]

    return ask


# (B, K, V): dynamic sizes in (48 KB - 1,168, 48 KB], which failed to launch unless an earlier launch
# in the process had raised the limit (issue 19: beams = K = 46 at V = 256; B = 1, V = 12,000, K = 20;
# B = 24, V = 500; B = K = 100 with a last level of 113-115 codes).
WINDOW_SHAPES = [(46, 46, 256), (1, 20, 12000), (24, 20, 500), (100, 100, 113), (100, 100, 114), (100, 100, 115)]


def test_shapes_just_below_48_kb_get_the_opt_in(planner):
    plans = planner([f"plan {B} {K} {V} {STATIC_SMEM} {HOPPER_OPTIN} {KEY_BUDGET}" for B, K, V in WINDOW_SHAPES])
    for (B, K, V), line in zip(WINDOW_SHAPES, plans, strict=True):
        shared, dynamic, fits = (int(x) for x in line.split())
        assert shared and fits, (B, K, V)
        assert DEFAULT - STATIC_SMEM < dynamic <= DEFAULT, (B, K, V, dynamic)  # the old rule raised nothing here
        default_limit = DEFAULT - STATIC_SMEM  # maxDynamicSharedSizeBytes before any opt-in
        (raise_to,) = planner([f"optin {dynamic} {STATIC_SMEM} {default_limit}"])
        assert int(raise_to) == dynamic, (B, K, V)


@given(
    dynamic=st.integers(0, 200 * 1024),
    static=st.integers(0, 8 * 1024),
    current=st.integers(0, 220 * 1024),
)
@example(dynamic=48_448, static=STATIC_SMEM, current=DEFAULT - STATIC_SMEM)  # needs it, below 48 KB alone
@example(dynamic=DEFAULT - STATIC_SMEM, static=STATIC_SMEM, current=DEFAULT - STATIC_SMEM)  # exactly fits
@example(dynamic=60_000, static=STATIC_SMEM, current=100_000)  # raised further by an earlier launch
def test_opt_in_when_static_plus_dynamic_exceed_48_kb_and_never_lowers(planner, dynamic, static, current):
    (raise_to,) = planner([f"optin {dynamic} {static} {current}"])
    raise_to = int(raise_to)
    if dynamic + static <= DEFAULT and dynamic <= current:
        assert raise_to == 0
    else:
        assert raise_to == max(dynamic, current) >= dynamic


def test_keys_move_to_the_global_workspace_when_shared_memory_cannot_hold_them(planner):
    shapes = [(20, 20, 256), (100, 100, 256), (64, 50, 4096), (1024, 1024, 64), (1, 1, 1)]
    lines = planner([f"plan {B} {K} {V} {STATIC_SMEM} {HOPPER_OPTIN} {KEY_BUDGET}" for B, K, V in shapes])
    got = {shape: tuple(int(x) for x in line.split()) for shape, line in zip(shapes, lines, strict=True)}
    assert got[(20, 20, 256)][0] == 1 and got[(100, 100, 256)][0] == 1
    assert got[(64, 50, 4096)][0] == 0 and got[(1024, 1024, 64)][0] == 0  # 1 MiB and 256 KiB of keys
    assert all(fits for _, dynamic, fits in got.values())
    assert all(dynamic <= HOPPER_OPTIN - STATIC_SMEM for _, dynamic, _ in got.values())


@given(
    users=st.integers(1, 1 << 22),
    slot=st.integers(4, 1 << 30),
    budget=st.sampled_from([1 << 20, 256 << 20, 1 << 30]),
    sms=st.integers(1, 200),
)
def test_workspace_budget_is_a_cap_never_a_floor(planner, users, slot, budget, sms):
    (grid,) = planner([f"grid {users} {slot} {budget} {sms}"])
    grid = int(grid)
    assert 1 <= grid <= users
    assert grid <= 4 * sms
    if slot <= budget:
        assert grid * slot <= budget
    else:
        assert grid == 1  # the one block every launch needs, whatever its slot


def test_workspace_examples_from_the_review(planner):
    # 132 SMs, 256 MiB budget. It used to be max(2 * SMs, budget / slot) = 264 blocks for slots of
    # 1 MiB and more: 1 GiB at B = 64, V = 16,384 and 3.4 GiB at B = 100, V = 32,768.
    rows = [(4096, 64 * 16384 * 4), (4096, 100 * 32768 * 4), (4096, 64 * 4096 * 4), (10, 64 * 4096 * 4)]
    grids = [int(g) for g in planner([f"grid {u} {slot} {256 << 20} 132" for u, slot in rows])]
    assert grids == [64, 20, 256, 10]
    assert all(g * slot <= 256 << 20 for g, (_, slot) in zip(grids, rows, strict=True))


_FRESH_LAUNCH = """
import sys, torch
import genrec.ops as ops
from genrec.ops import Backend
from tests.ops.test_beam_step import _large_case, run, to_device
U, B, V, K, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
case = _large_case(23, U, B, V, K, 3 * B + 7, dense=False, fill=1.0, mask=True)
case["logits"] = case["logits"].to(getattr(torch, dtype))
expected = run({**case, "logits": case["logits"].float()}, Backend.REFERENCE, poison=False)
got = run(to_device(case, "cuda"), Backend.CUDA)  # the first launch of the kernel in this process
for field in ("tokens", "parents", "states", "scores"):
    assert torch.equal(getattr(got, field).cpu(), getattr(expected, field)), field
print("ok")
"""


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", WINDOW_SHAPES, ids=[f"B{b}-K{k}-V{v}" for b, k, v in WINDOW_SHAPES])
def test_cuda_launches_just_below_48_kb_in_a_fresh_process(shape, dtype):
    from genrec.ops import Backend, available_backends

    if Backend.CUDA not in available_backends("constrained_beam_step", "cuda"):
        pytest.skip("genrec._C was built without CUDA kernels")
    B, K, V = shape
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_LAUNCH, "16", str(B), str(V), str(K), dtype],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert torch.cuda.is_available()
