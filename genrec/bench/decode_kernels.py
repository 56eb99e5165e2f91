"""The beam step alone, per trie level, on the inputs a real search feeds it: its time and the
bytes it must move, against the device's measured copy bandwidth."""

from __future__ import annotations

import torch

from genrec.bench.decode_fixtures import PrecomputedLogits
from genrec.bench.timing import median_seconds
from genrec.decoding import TrieIndex
from genrec.ops import Backend, constrained_beam_step, empty_beam_step


def kernel_rows(
    index: TrieIndex, users: int, beam: int, backends: list[Backend], ceilings: dict, device, quick: bool
):
    """Time the beam step alone at each level on the inputs a real search feeds it."""
    rows = []
    for t, (logits, scores, states) in enumerate(_level_inputs(index, users, beam, device)):
        level = index.level(t)
        B, V = logits.shape[1], logits.shape[2]
        candidates, trie_bytes = _trie_traffic(level, states, V)
        moved = logits.numel() * logits.element_size() + users * B * 8 + trie_bytes + users * beam * 24
        for backend in backends:
            out = empty_beam_step(users, beam, device)

            def call(backend=backend, level=level, logits=logits, scores=scores, states=states, out=out):
                constrained_beam_step(
                    logits, scores, states, level.row_ptr, level.child_tokens, beam_size=beam, dense=level.dense,
                    backend=backend, validate=False, out=out,
                )  # fmt: skip

            try:
                seconds = median_seconds(call, device, min_run_time=0.05 if quick else 0.2)
            except Exception as exc:  # keep the other backends' figures
                rows.append(
                    {
                        **failed_row("kernel", backend.value, "precomputed", index.num_items, beam, exc),
                        "level": t,
                    }
                )
                rows[-1]["kind"] = "kernel"
                continue
            gbps = moved / seconds / 1e9
            rows.append(
                {
                    "kind": "kernel",
                    "backend": backend.value,
                    "num_items": index.num_items,
                    "beam": beam,
                    "level": t,
                    "users": users,
                    "in_beams": B,
                    "vocab": V,
                    "dense": level.dense is not None,
                    "candidates": candidates,
                    "median_ms": seconds * 1e3,
                    "user_steps_per_s": users / seconds,
                    "bytes_moved": moved,
                    "GBps": gbps,
                    "pct_of_copy_bw": 100 * gbps / ceilings["copy_GBps"]
                    if ceilings.get("copy_GBps")
                    else None,
                }
            )
    return rows


def _level_inputs(index: TrieIndex, users: int, beam: int, device) -> list[tuple]:
    """The (logits, scores, states) the beam step gets at each level of one search over ``index``
    (seeded precomputed logits; each level's scores and states are the step's output at the level
    before)."""
    model = PrecomputedLogits(users, beam, list(index.level_sizes), device, seed=7)
    inputs = []
    step = model.step_fn()
    states = torch.zeros(users, 1, dtype=torch.int32, device=device)
    scores = torch.zeros(users, 1, device=device)
    prefix = torch.zeros(users, 1, 0, dtype=torch.long, device=device)
    for t in range(index.levels):
        logits = step(prefix, None)
        inputs.append((logits, scores, states))
        level = index.level(t)
        out = constrained_beam_step(
            logits,
            scores,
            states,
            level.row_ptr,
            level.child_tokens,
            beam_size=beam,
            dense=level.dense,
            validate=False,
        )
        scores, states = out.scores, out.states
        prefix = torch.zeros(users, beam, t + 1, dtype=torch.long, device=device)
    return inputs


def _trie_traffic(level, states: torch.Tensor, V: int) -> tuple[int, int]:
    """The candidates one level's step scores from the live ``states``, and the trie bytes it reads
    (a dense level: a row of V per live beam; a sparse one: the children and the row bounds)."""
    live = states.long().clamp_min(0)
    if level.dense is not None:
        trie_bytes = int((states >= 0).sum()) * V * 4
        candidates = int((states >= 0).sum()) * V
    else:
        counts = (level.row_ptr.long()[live + 1] - level.row_ptr.long()[live]) * (states >= 0)
        candidates = int(counts.sum())
        trie_bytes = candidates * 4 + int((states >= 0).sum()) * 8
    return candidates, trie_bytes


def failed_row(method, backend, model, n, beam, exc: BaseException) -> dict:
    """The row of a method or backend that raised: the error in place of its figures."""
    message = str(exc).strip().splitlines()
    return {
        "kind": "decode",
        "method": method,
        "backend": backend,
        "model": model,
        "num_items": n,
        "beam": beam,
        "error": f"{type(exc).__name__}: {message[0] if message else ''}"[:500],
    }
