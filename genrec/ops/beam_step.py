"""``constrained_beam_step``: one fused step of trie-constrained beam search, dispatched among the backends.

One call does, for every user at once: log-softmax over the level's vocabulary, adding each
beam's running score, masking the continuations the trie (and an optional per-request mask)
does not allow, choosing the best ``beam_size`` over (beam x token), and producing the next trie
states and the parent of every new beam. Fixed output shapes and no host synchronisation (with
``validate=False``), so a decoding loop built on it can be captured in a CUDA graph.

The trie level is given as CSR arrays (``row_ptr`` [nodes + 1], ``child_tokens`` [children],
both int32; the children of node s are the next level's nodes ``row_ptr[s] .. row_ptr[s+1]-1``
with ascending tokens) and optionally as a dense table [nodes, V] of child ids (-1: no child),
which the kernels then read instead. ``genrec.decoding.TrieIndex`` builds both.

The per-request mask (``StepMask``) is a sorted list of next-level node ids per user (CSR over
users: ``offsets`` [U + 1] int64, ``nodes`` int32) and a flag per user: ``allow[u]`` True means
only the listed nodes may be entered, False means the listed nodes may not.

Tie rule, the same in every backend: score descending, then parent beam ascending, then token
ascending. Scores are computed in float32 as ``beam_score + (logit - logsumexp(row))``; a
candidate whose score is NaN or -inf is never chosen (so a beam whose logits hold NaN or +inf,
or are all -inf, has no candidates). Slots left empty hold token -1, parent -1, score -inf and
state -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from genrec.ops._backends import Backend, BackendUnavailableError, resolve_backend, why_unavailable
from genrec.ops._checks import FLOAT_DTYPES, require_dtype, require_rank, require_tensor
from genrec.ops.reference import constrained_beam_step_reference


class BeamStep(NamedTuple):
    """The beams a step keeps, best first per user: each [U, beam_size]."""

    tokens: torch.Tensor  # int64, the token appended (-1: empty slot)
    parents: torch.Tensor  # int64, which input beam it extends (-1: empty slot)
    scores: torch.Tensor  # float32, total log-probability so far (-inf: empty slot)
    states: torch.Tensor  # int32, the trie node reached (-1: empty slot)


@dataclass(frozen=True)
class StepMask:
    """Per-request node lists for one step: ``nodes[offsets[u]:offsets[u+1]]`` (sorted) belong to user u.

    Sorted lists are binary-searched. ``validate=True`` and the cpp kernel refuse unsorted ones; with
    ``validate=False`` the reference, cuda and triton backends take them too (scanned, same result).

    ``allow[u]`` True: user u may only enter the listed nodes; False: user u may not enter them.
    ``nodes`` may be longer than ``offsets[-1]`` (a fixed-capacity buffer); the tail is ignored.
    """

    offsets: torch.Tensor  # int64 [U + 1], non-decreasing
    nodes: torch.Tensor  # int32 [capacity]
    allow: torch.Tensor  # bool [U]


def check_beam_step_inputs(
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    states: torch.Tensor,
    row_ptr: torch.Tensor,
    child_tokens: torch.Tensor,
    beam_size: int,
    dense: torch.Tensor | None = None,
    mask: StepMask | None = None,
    *,
    values: bool = True,
) -> None:
    """Raise a clear TypeError/ValueError for inputs constrained_beam_step cannot take.

    ``values=True`` also checks the data (states in [-1, nodes), the mask lists sorted, the CSR
    bounds), which synchronises a GPU; shapes, dtypes and devices are always checked.
    """
    for name, t in (
        ("logits", logits),
        ("beam_scores", beam_scores),
        ("states", states),
        ("row_ptr", row_ptr),
        ("child_tokens", child_tokens),
    ):
        require_tensor(name, t)
    require_rank("logits", logits, 3, "[users, beams, vocab]")
    require_dtype("logits", logits, FLOAT_DTYPES)
    U, B, V = logits.shape
    if B < 1 or V < 1:
        raise ValueError(f"logits need at least one beam and one token, got shape {tuple(logits.shape)}")
    if tuple(beam_scores.shape) != (U, B) or beam_scores.dtype != torch.float32:
        raise ValueError(
            f"beam_scores must be float32 [users, beams] = [{U}, {B}], got {beam_scores.dtype} "
            f"{tuple(beam_scores.shape)}"
        )
    if tuple(states.shape) != (U, B) or states.dtype != torch.int32:
        raise ValueError(
            f"states must be int32 [users, beams] = [{U}, {B}], got {states.dtype} {tuple(states.shape)}"
        )
    require_rank("row_ptr", row_ptr, 1, "[nodes + 1]")
    require_rank("child_tokens", child_tokens, 1, "[children]")
    require_dtype("row_ptr", row_ptr, (torch.int32,))
    require_dtype("child_tokens", child_tokens, (torch.int32,))
    if row_ptr.numel() < 1:
        raise ValueError("row_ptr must hold at least one entry ([nodes + 1])")
    nodes = row_ptr.numel() - 1
    if dense is not None:
        require_tensor("dense", dense)
        if tuple(dense.shape) != (nodes, V) or dense.dtype != torch.int32:
            raise ValueError(
                f"dense must be int32 [nodes, vocab] = [{nodes}, {V}], got {dense.dtype} {tuple(dense.shape)}"
            )
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    if B * V >= 2**32:
        raise ValueError(f"beams * vocab must be below 2^32, got {B} * {V}")
    tensors = {"logits": logits, "beam_scores": beam_scores, "states": states, "row_ptr": row_ptr}
    tensors["child_tokens"] = child_tokens
    if dense is not None:
        tensors["dense"] = dense
    if mask is not None:
        _check_mask(mask, U)
        tensors.update(mask_offsets=mask.offsets, mask_nodes=mask.nodes, mask_allow=mask.allow)
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(
            "tensors must be on one device: " + ", ".join(f"{n} on {d}" for n, d in devices.items())
        )
    if values:
        _check_values(states, row_ptr, child_tokens, V, nodes, mask)


def _check_mask(mask: StepMask, U: int) -> None:
    """The per-request mask's type, shapes and dtypes."""
    if not isinstance(mask, StepMask):
        raise TypeError(f"mask must be a genrec.ops.StepMask, got {type(mask).__name__}")
    if tuple(mask.offsets.shape) != (U + 1,) or mask.offsets.dtype != torch.int64:
        raise ValueError(
            f"mask.offsets must be int64 [users + 1] = [{U + 1}], got {mask.offsets.dtype} "
            f"{tuple(mask.offsets.shape)}"
        )
    if mask.nodes.dim() != 1 or mask.nodes.dtype != torch.int32:
        raise ValueError(
            f"mask.nodes must be 1-D int32, got {mask.nodes.dtype} {tuple(mask.nodes.shape)}"
        )
    if tuple(mask.allow.shape) != (U,) or mask.allow.dtype != torch.bool:
        raise ValueError(
            f"mask.allow must be bool [users] = [{U}], got {mask.allow.dtype} {tuple(mask.allow.shape)}"
        )


def _check_values(states, row_ptr, child_tokens, V, nodes, mask) -> None:
    bad = (states < -1) | (states >= nodes)
    if bool(bad.any()):
        raise ValueError(
            f"states must be -1 (dead beam) or a node id in [0, {nodes}); got {int(states[bad][0])}"
        )
    if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != child_tokens.numel() or bool((row_ptr.diff() < 0).any()):
        raise ValueError(
            "row_ptr must start at 0, never decrease, and end at len(child_tokens) "
            f"({child_tokens.numel()}); it does not"
        )
    if child_tokens.numel() and (int(child_tokens.min()) < 0 or int(child_tokens.max()) >= V):
        raise ValueError(f"child_tokens must lie in [0, vocab = {V}) (the logits' last dimension)")
    if mask is not None:
        off = mask.offsets
        if int(off[0]) < 0 or bool((off.diff() < 0).any()) or int(off[-1]) > mask.nodes.numel():
            raise ValueError(
                f"mask.offsets must be non-decreasing within [0, len(mask.nodes) = {mask.nodes.numel()}]"
            )
        used = mask.nodes[int(off[0]) : int(off[-1])].long()
        if used.numel() > 1:
            owner = torch.searchsorted(
                off[1:], torch.arange(int(off[0]), int(off[-1]), device=off.device), right=True
            )
            if bool(((used.diff() < 0) & (owner.diff() == 0)).any()):
                raise ValueError("each user's mask.nodes must be sorted ascending")


def constrained_beam_step(
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    states: torch.Tensor,
    row_ptr: torch.Tensor,
    child_tokens: torch.Tensor,
    *,
    beam_size: int,
    dense: torch.Tensor | None = None,
    mask: StepMask | None = None,
    backend: str | Backend = "auto",
    validate: bool = True,
    out: BeamStep | None = None,
) -> BeamStep:
    """The best ``beam_size`` continuations per user of beams in ``states`` under the trie level.

    ``logits`` [U, B, V] (float32/16, bfloat16; computed in float32), ``beam_scores`` [U, B]
    float32 (running log-probabilities), ``states`` [U, B] int32 (trie node of each beam at this
    level, -1 for a dead beam). See the module docstring for the trie arrays, ``mask`` and the
    tie rule. ``backend``: "auto", "reference", "cpp", "cuda" or "triton". ``validate=False``
    skips the value checks (which synchronise a GPU). ``out``: a BeamStep of contiguous buffers
    to write into (every element is written).

    >>> import torch, genrec.ops
    >>> row_ptr, child_tokens = torch.tensor([0, 2], dtype=torch.int32), torch.tensor([1, 2], dtype=torch.int32)
    >>> logits = torch.log(torch.tensor([[[0.5, 0.2, 0.3]]]))
    >>> step = genrec.ops.constrained_beam_step(logits, torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.int32),
    ...                                         row_ptr, child_tokens, beam_size=3)
    >>> step.tokens.tolist(), step.states.tolist()
    ([[2, 1, -1]], [[1, 0, -1]])
    """
    check_beam_step_inputs(
        logits, beam_scores, states, row_ptr, child_tokens, beam_size, dense, mask, values=validate
    )
    if out is not None:
        _check_out(out, logits, beam_size)
    chosen = _backend_for_shape(backend, logits.device, *logits.shape[1:], beam_size)
    m = (mask.offsets, mask.nodes, mask.allow) if mask is not None else (None, None, None)
    args = (logits, beam_scores, states, row_ptr, child_tokens, dense, *m, beam_size)
    if chosen is Backend.REFERENCE:
        result = BeamStep(*constrained_beam_step_reference(*args))
        if out is None:
            return result
        for buf, value in zip(out, result, strict=True):
            buf.copy_(value)
        return out
    if chosen is Backend.TRITON:
        # lazy: Triton compiles its kernels' module on first use; only this backend needs it
        from genrec.triton_kernels.beam_step import constrained_beam_step_triton

        return BeamStep(*constrained_beam_step_triton(*args, out=out))
    if out is None:
        return BeamStep(*torch.ops.genrec.constrained_beam_step(*args))
    torch.ops.genrec.constrained_beam_step_out(*args, *out)
    return out


# What each GPU kernel takes (csrc/cuda/beam_step.cu, triton_kernels/beam_step.py); the reference and
# the cpp kernel take every shape check_beam_step_inputs accepts.
_CUDA_MAX_BEAMS = 1024
_CUDA_MAX_BEAM_SIZE = 1024
_CUDA_MAX_CANDIDATES = 2**28
_TRITON_MAX_BEAM_SIZE = 1024


def shape_limit(backend: Backend, beams: int, vocab: int, beam_size: int) -> str | None:
    """None when ``backend``'s kernel takes this step's shape, else what it exceeds."""
    if backend is Backend.CUDA:
        if beams > _CUDA_MAX_BEAMS or beam_size > _CUDA_MAX_BEAM_SIZE:
            return (
                f"the cuda kernel takes at most {_CUDA_MAX_BEAMS} input beams and beam_size "
                f"{_CUDA_MAX_BEAM_SIZE} (got {beams} and {beam_size})"
            )
        if beams * vocab > _CUDA_MAX_CANDIDATES:
            return f"the cuda kernel takes beams * vocab <= 2^28 (got {beams} * {vocab})"
    if backend is Backend.TRITON and beam_size > _TRITON_MAX_BEAM_SIZE:
        return f"the triton kernel takes beam_size <= {_TRITON_MAX_BEAM_SIZE} (got {beam_size})"
    return None


def pick_for_shape(candidates, beams: int, vocab: int, beam_size: int) -> Backend:
    """The first of ``candidates`` (available backends, fastest first) whose kernel takes the shape."""
    for backend in candidates:
        if shape_limit(backend, beams, vocab, beam_size) is None:
            return backend
    return Backend.REFERENCE


def _backend_for_shape(backend, device: torch.device, beams: int, vocab: int, beam_size: int) -> Backend:
    chosen = resolve_backend("constrained_beam_step", backend, device)
    if Backend(backend) is Backend.AUTO:
        # "auto" falls back to the next available backend that takes the shape (on a GPU: triton for
        # more than 1024 beams, the reference for a beam_size above 1024), never to a CPU-only one.
        order = [b for b in (Backend.CUDA, Backend.TRITON, Backend.CPP) if b is not chosen]
        usable = [chosen, *(b for b in order if why_unavailable("constrained_beam_step", b, device) is None)]
        return pick_for_shape(usable, beams, vocab, beam_size)
    reason = shape_limit(chosen, beams, vocab, beam_size)
    if reason is not None:
        others = "backend 'triton' or 'reference'" if chosen is Backend.CUDA else "backend 'reference'"
        raise BackendUnavailableError(
            f"genrec.ops.constrained_beam_step: backend {chosen.value!r} cannot take this step: {reason}; "
            f"use {others} (or 'auto', which picks one that can)"
        )
    return chosen


def empty_beam_step(num_users: int, beam_size: int, device: torch.device | str) -> BeamStep:
    """Uninitialised output buffers for ``constrained_beam_step(..., out=...)``."""
    shape = (num_users, beam_size)
    return BeamStep(
        torch.empty(shape, dtype=torch.long, device=device),
        torch.empty(shape, dtype=torch.long, device=device),
        torch.empty(shape, dtype=torch.float32, device=device),
        torch.empty(shape, dtype=torch.int32, device=device),
    )


def _check_out(out: BeamStep, logits: torch.Tensor, beam_size: int) -> None:
    if not isinstance(out, BeamStep):
        raise TypeError(f"out must be a genrec.ops.BeamStep of four tensors, got {type(out).__name__}")
    expected = (logits.shape[0], beam_size)
    dtypes = {"tokens": torch.long, "parents": torch.long, "scores": torch.float32, "states": torch.int32}
    for name, buf in zip(BeamStep._fields, out, strict=True):
        require_tensor(f"out.{name}", buf)
        if tuple(buf.shape) != expected or buf.dtype != dtypes[name] or not buf.is_contiguous():
            raise ValueError(
                f"out.{name} must be a contiguous {dtypes[name]} tensor of shape {expected}, "
                f"got {buf.dtype} {tuple(buf.shape)}"
            )
        if buf.device != logits.device:
            raise ValueError(f"out.{name} is on {buf.device} but logits are on {logits.device}")
