"""Shared helpers for the decoding tests: random catalogues and a model whose logits depend only on
(user, prefix), so every item's full score can also be computed exhaustively."""

from __future__ import annotations

import torch


def random_codes(num_items: int, level_sizes: list[int], seed: int) -> torch.Tensor:
    """``num_items`` distinct random IDs (int64 [num_items, L]); needs num_items <= prod(level_sizes)."""
    g = torch.Generator().manual_seed(seed)
    space = 1
    for v in level_sizes:
        space *= v
    if num_items > space:
        raise ValueError("more items than distinct IDs")
    if space <= 1 << 24:
        flat = torch.randperm(space, generator=g)[:num_items]
    else:
        flat = torch.unique(torch.randint(0, space, (2 * num_items + 16,), generator=g))
        flat = flat[torch.randperm(flat.numel(), generator=g)[:num_items]]
    cols = []
    for v in reversed(level_sizes):
        cols.append(flat % v)
        flat = flat // v
    return torch.stack(cols[::-1], dim=1)


class PrefixModel:
    """Logits that are a fixed random function of (user, prefix), checking the step contract as it goes.

    ``step_fn()`` returns a fresh step function; it verifies that step t comes after step t-1, that
    step 0 has one beam, and that ``parents`` and ``prefix`` agree: the prefix of beam b at step t
    extends the prefix its parent had at step t-1 (what a model's cache reorder relies on).
    """

    def __init__(
        self,
        num_users: int,
        level_sizes: list[int],
        seed: int,
        *,
        scale: float = 2.0,
        rows: int = 997,
        exact: bool = False,
    ):
        """``exact=True``: each row has one logit 0 and the rest in [-60, -30], so in float32 its
        logsumexp is exactly 0 in any summation order and every backend computes bit-identical
        scores (use it to compare backends without near-ties)."""
        g = torch.Generator().manual_seed(seed)
        self.num_users = num_users
        self.level_sizes = list(level_sizes)
        self.rows = rows
        if exact:
            self.tables = []
            for v in level_sizes:
                table = -30 - 30 * torch.rand(rows, v, generator=g, dtype=torch.float64)
                table.scatter_(1, torch.randint(0, v, (rows, 1), generator=g), 0.0)
                self.tables.append(table.float().double())
        else:
            self.tables = [
                torch.randn(rows, v, generator=g, dtype=torch.float64) * scale for v in level_sizes
            ]
        self.calls = 0

    def logits(self, users: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """float64 logits of level prefix.shape[-1] for (users [...], prefix [..., t])."""
        t = prefix.shape[-1]
        h = (users.long() + 1) * 1000003
        for i in range(t):
            h = (h * 31 + prefix[..., i].long() + 7) % 1_000_000_007
        return self.tables[t].to(prefix.device)[h % self.rows]

    def step_fn(self, device="cpu", dtype=torch.float32):
        state = {"t": 0, "prefix": None}

        def step(prefix: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
            U, B, t = prefix.shape
            assert self.num_users == U and t == state["t"], (prefix.shape, state["t"])
            assert parents.shape == (U, B) and parents.dtype == torch.long
            if t == 0:
                assert B == 1 and bool((parents == 0).all())
            else:
                previous = state["prefix"]
                assert bool(((parents >= 0) & (parents < previous.shape[1])).all())
                reordered = previous.gather(1, parents[:, :, None].expand(U, B, t - 1))
                assert torch.equal(reordered, prefix[:, :, : t - 1]), "parents do not match the prefixes"
            state["t"] += 1
            state["prefix"] = prefix.clone()
            self.calls += 1
            users = torch.arange(U, device=prefix.device)[:, None].expand(U, B)
            return self.logits(users, prefix).to(device, dtype)

        return step

    def exhaustive(self, codes: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
        """Every user's total log-probability of every item: [num_users, num_items]."""
        U, N = self.num_users, codes.shape[0]
        users = torch.arange(U)[:, None].expand(U, N)
        total = torch.zeros(U, N, dtype=torch.float64)
        for t in range(codes.shape[1]):
            prefix = codes[None, :, :t].expand(U, N, t)
            logp = torch.log_softmax(self.logits(users, prefix), dim=-1)
            total += logp.gather(2, codes[None, :, t : t + 1].expand(U, N, 1)).squeeze(2)
        return total.to(dtype)
