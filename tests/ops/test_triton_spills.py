"""Every Triton kernel variant the dispatchers can launch is free of register spills on sm_90.

Compiled for Hopper without a GPU (Triton's own ptxas), disassembled with Triton's cuobjdump, and
checked on the SASS, where ptxas's spills are (LDL/STL, stack bytes); the PTX never shows them.
Skipped where Triton's NVIDIA tools are not installed. The first run compiles about 90 variants
(a minute or two on two cores); Triton's cache makes later runs fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ops.triton_sass import triton_tool

ROOT = Path(__file__).resolve().parents[2]
needs_tools = pytest.mark.skipif(
    triton_tool("ptxas") is None or triton_tool("cuobjdump") is None,
    reason="Triton's NVIDIA tools (ptxas, cuobjdump) are not installed",
)


def _beam_step_config():
    pytest.importorskip("triton")
    from genrec.triton_kernels import beam_step

    return beam_step


def _beam_variant(config, *, dense: bool, mask: bool, logits: str = "fp32") -> dict:
    return {
        "kernel": "beam_step",
        "constexprs": {
            "BLOCK_B": config.block_b, "BLOCK_V": config.block_v, "K_PAD": config.k_pad,
            "ONE_CHUNK": config.one_chunk, "DENSE": dense, "HAS_MASK": mask,
        },
        "logits": logits,
        "num_warps": config.num_warps,
        "maxnreg": config.maxnreg,
    }  # fmt: skip


def compile_reports(variants: list[dict], workers: int = 2) -> list[dict]:
    """Spill reports of ``variants``, compiled by ``workers`` subprocesses (Triton not interpreting)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tests.ops.triton_sass"]
    workers = min(workers, len(variants))
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"worker{i}.log" for i in range(workers)]
        procs = []
        for i, log in enumerate(logs):
            with log.open("w") as err:  # a file, not a pipe: a chatty compiler cannot block the worker
                proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT
                )
            proc.stdin.write(json.dumps(variants[i::workers]))
            proc.stdin.close()
            procs.append(proc)
        for proc, log in zip(procs, logs, strict=True):
            out = proc.stdout.read()
            assert proc.wait(timeout=1200) == 0, log.read_text()[-3000:]
            reports += [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(reports) == len(variants)
    return reports


def assert_no_spills(reports: list[dict]) -> None:
    spilling = [r for r in reports if r["ldl"] or r["stl"] or r["local_bytes"] or r["stack_bytes"]]
    assert not spilling, "variants that spill registers on sm_90:\n" + "\n".join(
        f"{r['constexprs']} {r['logits']} warps={r['num_warps']}: {r['regs']} registers, "
        f"{r['stack_bytes']} B stack, {r['local_bytes']} B local, {r['ldl']} LDL / {r['stl']} STL"
        for r in spilling
    )
    assert all(r["sass_lines"] > 100 for r in reports), "the disassembly came back (nearly) empty"


@given(V=st.integers(1, 1 << 20), K=st.integers(1, 1024))
def test_dispatcher_only_picks_listed_variants(V, K):
    beam_step = _beam_step_config()
    config = beam_step.launch_config(V, K)
    assert config in beam_step.dispatch_variants()
    assert config.block_v >= min(V, beam_step.MAX_BLOCK_V) and config.k_pad >= K
    assert config.block_b * config.block_v <= beam_step.TILE_ELEMENTS


@needs_tools
def test_every_beam_step_variant_compiles_for_hopper_without_spills():
    """All block sizes the dispatcher can pick, with the CSR trie and a mask (the most code)."""
    beam_step = _beam_step_config()
    variants = [_beam_variant(c, dense=False, mask=True) for c in beam_step.dispatch_variants()]
    assert len(variants) == 49
    assert_no_spills(compile_reports(variants))


@needs_tools
def test_extreme_beam_step_variants_without_spills_for_every_trie_mask_and_dtype():
    """The widest tiles and the largest top-K, under each trie kind, mask setting and logits dtype."""
    beam_step = _beam_step_config()
    variants = []
    for config in (
        beam_step.launch_config(1, 1024),  # 32 rows x 64 tokens
        beam_step.launch_config(2048, 1024),  # one row of 2048 in registers
        beam_step.launch_config(100_000, 1024),  # chunked rows
    ):
        for dense in (False, True):
            for mask in (False, True):
                for logits in ("fp32", "fp16", "bf16"):
                    variants.append(_beam_variant(config, dense=dense, mask=mask, logits=logits))
    assert_no_spills(compile_reports(variants))


@needs_tools
def test_rq_encode_kernel_compiles_for_hopper_without_spills():
    pytest.importorskip("triton")
    variants = [
        {
            "kernel": "rq_encode",
            "constexprs": {"BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_D": 32},  # rq_encode_triton's blocks
            "logits": dtype,
            "num_warps": 4,
        }
        for dtype in ("fp32", "fp16", "bf16")
    ]
    assert_no_spills(compile_reports(variants))


@needs_tools
def test_spill_check_sees_spills():
    """The check itself can fail: a 16,384-wide tile in one row (what the dispatcher used to pick for
    V from 8,193 to 16,384) spills thousands of registers."""
    beam_step = _beam_step_config()
    wide = beam_step.LaunchConfig(1, 16384, 16, True, 4, 255)
    (report,) = compile_reports([_beam_variant(wide, dense=False, mask=False)], workers=1)
    assert report["ldl"] > 100 and report["stl"] > 100 and report["stack_bytes"] > 0
