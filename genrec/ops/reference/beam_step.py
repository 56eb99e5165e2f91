"""One constrained beam-search step in plain PyTorch: the ground truth for every backend.

Fixed shapes throughout (no data-dependent sizes, no host synchronisation), so on a GPU it can
also run inside a CUDA graph.
"""

from __future__ import annotations

import torch


def constrained_beam_step_reference(
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    states: torch.Tensor,
    row_ptr: torch.Tensor,
    child_tokens: torch.Tensor,
    dense: torch.Tensor | None,
    mask_offsets: torch.Tensor | None,
    mask_nodes: torch.Tensor | None,
    mask_allow: torch.Tensor | None,
    beam_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens, parents, scores, next_states)``, each [U, beam_size]; see genrec.ops.constrained_beam_step.

    Candidate (b, v) of user u scores ``beam_scores[u, b] + (logits[u, b, v] - logsumexp(logits[u, b]))``
    in float32. It is valid when beam b is live (``0 <= states[u, b] < nodes``), v is a child
    of that node, the per-request mask allows the child, and the score is neither NaN nor -inf.
    The best ``beam_size`` valid candidates come out ordered by score descending, then parent b
    ascending, then token v ascending; missing ones are token -1, parent -1, score -inf, state -1.
    """
    U, B, V = logits.shape
    device = logits.device
    nodes = row_ptr.numel() - 1
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (U, B, 1)
    scores = beam_scores[..., None] + (x - lse)  # (U, B, V)

    alive = (states >= 0) & (states < nodes)  # (U, B)
    s = states.long().clamp(0, max(nodes - 1, 0))
    if dense is not None:
        child = dense.long()[s] if nodes > 0 else torch.full((U, B, V), -1, device=device)  # (U, B, V)
    else:
        child = _csr_children(row_ptr, child_tokens, s, V)
    child = torch.where(alive[..., None], child, -1)
    valid = (child >= 0) & ~torch.isnan(scores) & (scores > float("-inf"))
    if mask_offsets is not None:
        valid &= _mask_allows(mask_offsets, mask_nodes, mask_allow, child.clamp_min(0))

    flat = torch.where(valid, scores, float("-inf")).reshape(U, B * V)
    # Stable descending sort: equal scores keep flat order (b * V + v), i.e. parent then token.
    sorted_scores, order = torch.sort(flat, dim=1, descending=True, stable=True)
    K = beam_size
    if B * V < K:
        pad = K - B * V
        sorted_scores = torch.cat([sorted_scores, sorted_scores.new_full((U, pad), float("-inf"))], 1)
        order = torch.cat([order, order.new_zeros(U, pad)], 1)
    top_scores, top = sorted_scores[:, :K], order[:, :K]
    found = top_scores > float("-inf")
    parents = torch.where(found, top // V, -1)
    tokens = torch.where(found, top % V, -1)
    next_states = torch.where(found, child.reshape(U, B * V).gather(1, top), -1).int()
    return tokens, parents, top_scores.contiguous(), next_states


def _csr_children(row_ptr: torch.Tensor, child_tokens: torch.Tensor, s: torch.Tensor, V: int) -> torch.Tensor:
    """Child node id of every (beam, token), -1 where the token is not a child: (U, B, V)."""
    U, B = s.shape
    n_children = child_tokens.numel()
    start = row_ptr.long()[s].clamp(0, n_children)  # (U, B)
    end = row_ptr.long()[s + 1].clamp(0, n_children)
    end = torch.maximum(end, start)
    # A node has at most V children; slot j of beam (u, b) is child start + j when j < count.
    j = torch.arange(V, device=s.device)
    c = start[..., None] + j  # (U, B, V)
    has = c < end[..., None]
    tok = child_tokens.long()[c.clamp(max=max(n_children - 1, 0))] if n_children else torch.zeros_like(c)
    has &= (tok >= 0) & (tok < V)
    child = torch.full((U * B, V + 1), -1, dtype=torch.long, device=s.device)
    # Slots without a child write to the spare column V, which is dropped.
    rows = torch.arange(U * B, device=s.device)[:, None].expand(U * B, V)
    child[rows, torch.where(has, tok, V).reshape(U * B, V)] = torch.where(has, c, -1).reshape(U * B, V)
    return child[:, :V].reshape(U, B, V)


def _mask_allows(
    mask_offsets: torch.Tensor, mask_nodes: torch.Tensor, mask_allow: torch.Tensor, child: torch.Tensor
) -> torch.Tensor:
    """Per (u, b, v): is child[u, b, v] allowed by user u's node list (allow-list or deny-list)?"""
    U = child.shape[0]
    M = mask_nodes.numel()
    if M == 0:
        return torch.zeros_like(child, dtype=torch.bool) == mask_allow[:, None, None]
    offsets = mask_offsets.clamp(0, M)
    # Membership of (user, node) pairs through one searchsorted over keys user * 2^31 + node (node
    # ids are below 2^31); entries outside every user's range get the user U, which no query has.
    span = 1 << 31
    i = torch.arange(M, device=child.device)
    owner = torch.searchsorted(offsets[1:], i, right=True)
    owner = torch.where(i < offsets[0], U, owner)
    keys, _ = torch.sort(owner * span + mask_nodes.long())
    query = (torch.arange(U, device=child.device)[:, None, None] * span + child).reshape(-1)
    pos = torch.searchsorted(keys, query).clamp(max=M - 1)
    hit = (keys[pos] == query).reshape(child.shape)
    return hit == mask_allow[:, None, None]
