"""Beam search replayed as one CUDA graph: encoder, every step's model call and beam-step kernel.

A graph is captured once per input signature (the shapes after the user dimension, dtypes, and
the capacity of the request-mask buffers) for a fixed number of users, beam size and top_k,
then every call copies its batch into the graph's static buffers and replays it: no Python,
no launch gaps, no allocation between kernels. ``make_step_fn(batch)`` (for instance
``lambda batch: model.step_fn(batch, beam_size)``) runs inside the capture, so the encoding
of the new batch is part of each replay.

Capture needs a model whose step function never reads device data back to the host. The warm-up
runs with ``torch.cuda.set_sync_debug_mode("error")``; if it (or the capture itself) fails, that
signature falls back to the eager loop, with the reason in ``fallback_reason``: the results are
the same, only slower. A short batch is padded by repeating its first user; a long one runs in
chunks of ``num_users``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from genrec.decoding.masks import ItemLists, RequestMasks
from genrec.decoding.search import BeamSearchResult, StepFn, check_search_args, decode_loop
from genrec.decoding.trie import TrieIndex

MakeStepFn = Callable[[Mapping[str, torch.Tensor]], StepFn]


@dataclass
class _Captured:
    inputs: dict[str, torch.Tensor]
    masks: RequestMasks | None
    graph: torch.cuda.CUDAGraph | None = None
    result: BeamSearchResult | None = None
    fallback_reason: str | None = None


class GraphedBeamSearch:
    """``beam_search`` for fixed (num_users, beam_size, top_k), captured in a CUDA graph and replayed.

    >>> search = GraphedBeamSearch(lambda b: model.step_fn(b, 20), index, num_users=4096, beam_size=20)
    >>> items, scores = search({"history": history, "history_len": lengths}, exclude=history_items)

    ``use_graph=False`` (or a CPU index) runs the same loop eagerly, which is what the graph
    is checked against.
    """

    def __init__(
        self,
        make_step_fn: MakeStepFn,
        index: TrieIndex,
        *,
        num_users: int,
        beam_size: int,
        top_k: int | None = None,
        backend: str = "auto",
        use_graph: bool | None = None,
        warmup: int = 1,
        max_graphs: int = 4,
    ) -> None:
        check_search_args(index, num_users, beam_size, top_k)
        if num_users < 1:
            raise ValueError("num_users must be >= 1")
        self.make_step_fn = make_step_fn
        self.index = index
        self.num_users = num_users
        self.beam_size = beam_size
        self.top_k = top_k or beam_size
        self.backend = backend
        on_cuda = index.device.type == "cuda"
        if use_graph and not on_cuda:
            raise ValueError(f"CUDA graphs need the index on a CUDA device, it is on {index.device}")
        self.use_graph = on_cuda if use_graph is None else use_graph
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._captured: OrderedDict[tuple, _Captured] = OrderedDict()
        self.graphed = False  # whether the last call replayed a graph
        self.fallback_reason: str | None = None  # why the last call ran eagerly, if it did

    def __call__(
        self,
        inputs: Mapping[str, torch.Tensor],
        *,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
    ) -> BeamSearchResult:
        users = _batch_size(inputs)
        if users > self.num_users:
            parts = []
            for start in range(0, users, self.num_users):
                rows = slice(start, start + self.num_users)
                parts.append(
                    self(
                        {k: v[rows] for k, v in inputs.items()},
                        exclude=None if exclude is None else exclude[rows],
                        allow=None if allow is None else allow[rows],
                    )
                )
            return BeamSearchResult(torch.cat([p.items for p in parts]), torch.cat([p.scores for p in parts]))
        masks = RequestMasks.build(self.index, users, exclude=exclude, allow=allow)
        if not self.use_graph:
            self.graphed, self.fallback_reason = False, "graphs disabled"
            return self._eager({k: v.to(self.index.device) for k, v in inputs.items()}, masks, users)
        # Capture, copies and replay on the index's GPU, whichever device is current.
        with torch.cuda.device(self.index.device):
            return self._replay(inputs, masks, users)

    # ---- internals ----
    def _replay(
        self, inputs: Mapping[str, torch.Tensor], masks: RequestMasks | None, users: int
    ) -> BeamSearchResult:
        captured = self._get_captured(inputs, masks)
        for name, buf in captured.inputs.items():
            _copy_rows(buf, inputs[name].to(buf.device, non_blocking=True))
        if captured.masks is not None:
            _fill_masks(captured.masks, masks, users)
        if captured.graph is None:
            self.graphed, self.fallback_reason = False, captured.fallback_reason
            result = self._eager(captured.inputs, captured.masks, self.num_users)
        else:
            captured.graph.replay()
            self.graphed, self.fallback_reason = True, None
            result = captured.result
        return BeamSearchResult(result.items[:users].clone(), result.scores[:users].clone())

    def _eager(
        self, inputs: Mapping[str, torch.Tensor], masks: RequestMasks | None, users: int
    ) -> BeamSearchResult:
        step = self.make_step_fn(inputs)
        return decode_loop(step, self.index, users, self.beam_size, self.top_k, self.backend, masks)

    def _get_captured(self, inputs: Mapping[str, torch.Tensor], masks: RequestMasks | None) -> _Captured:
        capacity = 0 if masks is None else _capacity(masks.max_nodes())
        signature = (
            tuple((k, tuple(v.shape[1:]), v.dtype) for k, v in sorted(inputs.items())),
            capacity,
        )
        # A graph with larger mask buffers serves smaller masks too (and no mask: empty deny-lists).
        for key, entry in self._captured.items():
            if key[0] == signature[0] and key[1] >= capacity and (key[1] > 0 or capacity == 0):
                self._captured.move_to_end(key)
                return entry
        entry = self._capture(inputs, capacity)
        self._captured[signature] = entry
        while len(self._captured) > self.max_graphs:
            self._captured.popitem(last=False)
        return entry

    def _capture(self, inputs: Mapping[str, torch.Tensor], capacity: int) -> _Captured:
        device = self.index.device
        U, L = self.num_users, self.index.levels
        static = {k: _pad_rows(v.to(device), U).clone() for k, v in inputs.items()}
        static_masks = None
        if capacity:
            static_masks = RequestMasks(
                offsets=torch.zeros(L, U + 1, dtype=torch.long, device=device),
                nodes=[torch.zeros(capacity, dtype=torch.int32, device=device) for _ in range(L)],
                allow=torch.zeros(U, dtype=torch.bool, device=device),
            )
        entry = _Captured(static, static_masks)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        previous_mode = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(side):
                torch.cuda.set_sync_debug_mode("error")
                for _ in range(max(1, self.warmup)):
                    self._eager(static, static_masks, U)
        except RuntimeError as exc:
            if "synchroniz" not in str(exc):
                raise
            entry.fallback_reason = (
                f"the step function synchronises with the host: {str(exc).splitlines()[0]}"
            )
            return entry
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
            torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # An explicit stream on the index's device: the default capture stream belongs to whichever
            # device was current when it was first made, and a capture there records none of our kernels.
            with torch.cuda.graph(graph, stream=side):
                entry.result = self._eager(static, static_masks, U)
        except Exception as exc:  # capture is best effort: the eager loop gives the same results
            entry.fallback_reason = (
                f"CUDA graph capture failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            )
            entry.result = None
            torch.cuda.synchronize(device)
            return entry
        entry.graph = graph
        return entry


def _batch_size(inputs: Mapping[str, torch.Tensor]) -> int:
    if not inputs:
        raise ValueError("inputs must hold at least one tensor")
    sizes = {k: v.shape[0] for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) != len(inputs):
        raise TypeError("every input must be a tensor whose first dimension is the user")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs disagree on the number of users: {sizes}")
    return next(iter(sizes.values()))


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with its first row repeated up to ``rows`` rows (padding users decode like user 0)."""
    if x.shape[0] >= rows:
        return x
    return torch.cat([x, x[:1].expand(rows - x.shape[0], *x.shape[1:])])


def _copy_rows(buf: torch.Tensor, x: torch.Tensor) -> None:
    n = x.shape[0]
    buf[:n].copy_(x)
    if n < buf.shape[0]:
        buf[n:].copy_(x[:1].expand(buf.shape[0] - n, *x.shape[1:]))


def _capacity(n: int) -> int:
    return max(64, 1 << max(0, n - 1).bit_length())


def _fill_masks(static: RequestMasks, masks: RequestMasks | None, users: int) -> None:
    """Copy a batch's masks into fixed-size buffers; padding users (and a missing mask) deny nothing."""
    if masks is None:
        static.offsets.zero_()
        static.allow.zero_()
        return
    for t, nodes in enumerate(masks.nodes):
        static.nodes[t][: nodes.numel()].copy_(nodes)
        static.offsets[t, : users + 1].copy_(masks.offsets[t])
        static.offsets[t, users + 1 :].copy_(
            masks.offsets[t, -1:].expand(static.offsets.shape[1] - users - 1)
        )
    static.allow[:users].copy_(masks.allow)
    static.allow[users:].zero_()
