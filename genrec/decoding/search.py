"""Trie-constrained beam search: only ever emits the semantic IDs of real items.

The loop knows nothing of a model beyond ``step_fn(prefix, parents) -> logits``:

- step 0 runs with one beam per user (``prefix`` [U, 1, 0]); every later step with exactly
  ``beam_size`` beams (empty slots are dead beams with score -inf), so shapes are fixed and the
  loop can be captured in a CUDA graph (genrec.decoding.graphs);
- ``parents`` [U, B] names, for each beam, the beam of the previous step it extends, so a model
  reorders its key/value cache instead of recomputing it (at step 0 it is all zeros). Tokens and
  parents of dead beams are handed over as 0, which is always a valid index;
- each step is one call of ``genrec.ops.constrained_beam_step`` (log-softmax, running scores,
  trie and request masks, top ``beam_size`` per user, next trie states); the last step keeps
  ``top_k`` candidates, which may be more or fewer than ``beam_size``.

Nothing in the loop reads a tensor back to the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch

from genrec.decoding.masks import ItemLists, RequestMasks
from genrec.decoding.trie import TrieIndex
from genrec.ops import constrained_beam_step
from genrec.step_fn import StepFn

#: ``timer(name)`` returns a context manager around the "model" and "select" parts of each step.
Timer = Callable[[str], contextlib.AbstractContextManager]


class BeamSearchResult(NamedTuple):
    items: torch.Tensor  # int64 [U, top_k], best first; -1 where fewer than top_k valid items exist
    scores: torch.Tensor  # float32 [U, top_k], total log-probability of each item; -inf where item is -1


def beam_search(
    step_fn: StepFn,
    index: TrieIndex,
    num_users: int,
    beam_size: int,
    top_k: int | None = None,
    backend: str = "auto",
    *,
    exclude: ItemLists | None = None,
    allow: ItemLists | None = None,
    timer: Timer | None = None,
) -> BeamSearchResult:
    """The ``top_k`` most probable valid items per user under ``step_fn``, by beam search.

    ``step_fn(prefix [U, B, t], parents [U, B]) -> logits [U, B, index.level_sizes[t]]`` on the
    index's device (see the module docstring). ``top_k`` defaults to ``beam_size``. An item's
    score is the sum over levels of the log-softmax of the step's logits at its token.
    ``backend`` picks the beam-step kernel ("auto", "reference", "cpp", "cuda", "triton").
    ``exclude`` / ``allow``: per-user item lists (genrec.decoding.masks) removing items (e.g.
    the user's history) or restricting the search to them. ``timer`` instruments each step.
    """
    check_search_args(index, num_users, beam_size, top_k)
    masks = RequestMasks.build(index, num_users, exclude=exclude, allow=allow)
    return decode_loop(step_fn, index, num_users, beam_size, top_k or beam_size, backend, masks, timer)


def decode_loop(
    step_fn: StepFn,
    index: TrieIndex,
    num_users: int,
    beam_size: int,
    top_k: int,
    backend: str,
    masks: RequestMasks | None,
    timer: Timer | None = None,
) -> BeamSearchResult:
    """The step loop itself, on prepared masks: fixed shapes, no host synchronisation."""
    timer = timer or _no_timer
    device = index.device
    U, L = num_users, index.levels
    states = torch.zeros(U, 1, dtype=torch.int32, device=device)
    scores = torch.zeros(U, 1, dtype=torch.float32, device=device)
    prefix = torch.zeros(U, 1, 0, dtype=torch.long, device=device)
    parents = torch.zeros(U, 1, dtype=torch.long, device=device)
    for t in range(L):
        with timer("model"):
            logits = step_fn(prefix, parents)
        _check_logits(logits, U, prefix.shape[1], index.level_sizes[t], device, t)
        K = beam_size if t < L - 1 else top_k
        level = index.level(t)
        with timer("select"):
            step = constrained_beam_step(
                logits,
                scores,
                states,
                level.row_ptr,
                level.child_tokens,
                beam_size=K,
                dense=level.dense,
                mask=masks.step(t) if masks is not None else None,
                backend=backend,
                validate=False,
            )
        states, scores = step.states, step.scores
        if t < L - 1:
            parents = step.parents.clamp_min(0)
            history = prefix.gather(1, parents[:, :, None].expand(U, K, t))
            prefix = torch.cat([history, step.tokens.clamp_min(0)[:, :, None]], dim=2)
    return BeamSearchResult(index.items_of_leaves(states), scores)


def check_search_args(index: TrieIndex, num_users: int, beam_size: int, top_k: int | None) -> None:
    if not isinstance(index, TrieIndex):
        raise TypeError(f"index must be a genrec.decoding.TrieIndex, got {type(index).__name__}")
    for name, value in (("num_users", num_users), ("beam_size", beam_size), ("top_k", top_k)):
        if value is None and name == "top_k":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_users" else 1):
            raise ValueError(
                f"{name} must be a {'non-negative' if name == 'num_users' else 'positive'} int, got {value!r}"
            )


def _check_logits(logits, U: int, B: int, V: int, device: torch.device, t: int) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"step_fn must return a tensor of logits, got {type(logits).__name__} at step {t}")
    if tuple(logits.shape) != (U, B, V):
        raise ValueError(
            f"step_fn returned logits of shape {tuple(logits.shape)} at step {t}; expected [users, beams, "
            f"level_sizes[{t}]] = [{U}, {B}, {V}]"
        )
    if logits.device != device:
        raise ValueError(
            f"step_fn returned logits on {logits.device} but the trie index is on {device}; move it with index.to(...)"
        )


@contextlib.contextmanager
def _no_timer_cm():
    yield


def _no_timer(name: str):
    return _no_timer_cm()
