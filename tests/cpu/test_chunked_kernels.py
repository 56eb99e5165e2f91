"""The C++ kernels' parallel loop (csrc/cpu/parallel.h): with several threads every user / row block
is computed exactly once and the result equals the one-thread result bit for bit, with genrec's
chunked loop and with the former OpenMP regions (GENREC_CPU_PARALLEL=openmp). Outputs are poisoned
first, so a chunk that is skipped shows. Sizes are large enough to be split into many chunks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import genrec
from genrec.ops import BeamStep, constrained_beam_step, rq_encode

pytestmark = pytest.mark.skipif(not genrec.extension_loaded(), reason="needs genrec._C")


def _beam_inputs(users: int = 300, beams: int = 20, vocab: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(users, beams, vocab, generator=g) * 3
    scores = -torch.rand(users, beams, generator=g) * 5
    scores[::7, -3:] = float("-inf")  # some dead beams
    states = torch.zeros(users, beams, dtype=torch.int32)
    dense = torch.arange(vocab, dtype=torch.int32)[None, :].clone()
    dense[0, ::5] = -1  # tokens the trie does not allow
    return logits, scores, states, torch.zeros(2, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), dense


def _beam_step(threads: int, inputs, beam: int = 20) -> BeamStep:
    logits, scores, states, row_ptr, child_tokens, dense = inputs
    shape = (logits.shape[0], beam)
    out = BeamStep(
        torch.full(shape, -7, dtype=torch.long),
        torch.full(shape, -7, dtype=torch.long),
        torch.full(shape, float("nan")),
        torch.full(shape, -7, dtype=torch.int32),
    )  # poison: a user no chunk computed keeps it
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        constrained_beam_step(
            logits, scores, states, row_ptr, child_tokens, beam_size=beam, dense=dense, backend="cpp", out=out
        )
    finally:
        torch.set_num_threads(before)
    return out


def _rq(threads: int, n: int = 20_000, d: int = 32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g)
    cb = torch.randn(3, 256, d, generator=g) * torch.tensor([1.0, 0.5, 0.25]).view(-1, 1, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return rq_encode(x, cb, backend="cpp"), rq_encode(x, cb, backend="reference")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("users", [1, 7, 300])
def test_beam_step_on_two_threads_equals_one_thread(users):
    inputs = _beam_inputs(users=users)
    one, two = _beam_step(1, inputs), _beam_step(2, inputs)
    for a, b in zip(
        (one.tokens, one.parents, one.states), (two.tokens, two.parents, two.states), strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(one.scores, two.scores)
    assert bool((two.tokens >= 0).all()) and bool(two.scores.isfinite().all())


def test_rq_encode_on_two_threads_equals_one_thread_and_the_reference():
    one, ref = _rq(1)
    two, _ = _rq(2)
    assert torch.equal(one, two) and torch.equal(two, ref)


def test_the_former_openmp_regions_give_the_same_results():
    code = (
        "import torch, genrec\n"
        "from tests.cpu.test_chunked_kernels import _beam_inputs, _beam_step, _rq\n"
        "s = _beam_step(2, _beam_inputs())\n"
        "codes, ref = _rq(2)\n"
        "torch.save({'tokens': s.tokens, 'scores': s.scores, 'codes': codes}, __import__('sys').argv[1])\n"
    )
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"genrec-openmp-{os.getpid()}.pt")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "GENREC_CPU_PARALLEL": "openmp", "PYTHONPATH": repo}
    try:
        subprocess.run([sys.executable, "-c", code, path], env=env, check=True, timeout=300, cwd=repo)
        other = torch.load(path, weights_only=True)
    finally:
        if os.path.exists(path):
            os.remove(path)
    here = _beam_step(2, _beam_inputs())
    assert torch.equal(other["tokens"], here.tokens) and torch.equal(other["scores"], here.scores)
    assert torch.equal(other["codes"], _rq(2)[0])
