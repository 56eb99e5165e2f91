"""Top-K items by inner product: faiss where installed (exact, or an approximate index for large
catalogues), a chunked PyTorch matmul + top-k otherwise (the recommender on it:
genrec.serve.inner_product).

>>> index = InnerProductIndex(item_vectors)               # [num_items, D]; exact by default
>>> scores, items = index.search(user_vectors, k=10)      # numpy [U, 10] each, best first

Backends: ``"faiss"`` (``IndexFlatIP`` exact; ``IndexHNSWFlat`` / ``IndexIVFFlat`` approximate, all
with the inner-product metric), ``"torch"`` (exact: one matmul and ``topk`` per chunk of queries, on
the device the vectors live on), ``"auto"``: for CUDA tensors faiss on their GPU where faiss has GPU
support (``pip install genrec[gpu]``), else torch (a GPU matmul beats copying to faiss-cpu, and the GPU
machine has no faiss); faiss on the CPU when it is importable, else torch.
Approximate kinds need faiss; ``kind="auto"`` is exact below ``approximate_above`` items and HNSW
above (exact when faiss is absent). Rows with fewer than k results are padded with item -1 and
score -inf, as genrec.eval's recommender protocol expects.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genrec._faiss import faiss_gpu_available, gpu_id, index_to_gpu

BACKENDS = ("auto", "faiss", "torch")
_GPU_FAISS_MAX_K = 2048  # the largest k faiss's GPU top-k takes
KINDS = ("auto", "exact", "hnsw", "ivf")


class RetrievalError(ValueError):
    """A retrieval backend or index kind cannot be used as asked; the message says why and what to do."""


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _as_float32(x) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if t.dim() != 2:
        raise RetrievalError(f"expected a 2-d array of vectors, got shape {tuple(t.shape)}")
    return t.detach().float().contiguous()


class InnerProductIndex:
    """The items' vectors [num_items, D], searchable for the top-k inner products of query vectors.

    ``kind``: "exact", "hnsw" or "ivf" (approximate, faiss only), or "auto". HNSW (graph) needs no
    training and suits most catalogues; IVF (``nlist`` k-means cells, ``nprobe`` of them searched)
    builds faster for very large ones. Defaults: ``nlist`` = 4 sqrt(num_items) (capped so each cell
    trains on at least 39 items), ``nprobe`` = max(8, nlist / 16).
    """

    def __init__(
        self,
        item_vectors,
        *,
        kind: str = "exact",
        backend: str = "auto",
        approximate_above: int = 1_000_000,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int = 0,
        nprobe: int = 0,
        query_chunk: int = 0,
        seed: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise RetrievalError(f"retrieval kind {kind!r} is not one of {', '.join(KINDS)}")
        if backend not in BACKENDS:
            raise RetrievalError(f"retrieval backend {backend!r} is not one of {', '.join(BACKENDS)}")
        items = _as_float32(item_vectors)
        if items.shape[0] == 0:
            raise RetrievalError("cannot build an index over an empty catalogue")
        self.num_items, self.dim = int(items.shape[0]), int(items.shape[1])
        have_faiss = faiss_available()
        if kind == "auto":
            kind = "hnsw" if self.num_items > approximate_above and have_faiss else "exact"
        # GPU faiss builds exact and IVF indexes on the items' GPU (HNSW stays on the CPU).
        on_gpu_faiss = items.device.type == "cuda" and kind in ("exact", "ivf") and faiss_gpu_available()
        if backend == "auto":
            approximate_or_cpu = kind != "exact" or (items.device.type == "cpu" and have_faiss)
            backend = "faiss" if approximate_or_cpu or on_gpu_faiss else "torch"
        if backend == "faiss" and not have_faiss:
            raise RetrievalError(
                f"retrieval backend 'faiss' (kind {kind!r}) needs the faiss package: pip install faiss-cpu, "
                "or use backend 'torch' with kind 'exact'"
            )
        if backend == "torch" and kind != "exact":
            raise RetrievalError(
                f"retrieval kind {kind!r} is approximate and only the faiss backend builds it; "
                "use kind 'exact' with backend 'torch', or install faiss-cpu"
            )
        self.kind, self.backend = kind, backend
        self.ef_search = int(ef_search)
        self.query_chunk = int(query_chunk)
        if backend == "torch":
            self._items = items  # stays on its device
            self._faiss = None
        else:
            self._items = None
            self._faiss = self._build_faiss(items.cpu().numpy(), hnsw_m, ef_construction, nlist, nprobe, seed)
        self.device = None  # the GPU holding the faiss index, if one does
        if backend == "faiss" and on_gpu_faiss:
            nprobe_cpu = getattr(self._faiss, "nprobe", None)
            self._faiss = index_to_gpu(self._faiss, items.device)
            if nprobe_cpu is not None:
                self._faiss.nprobe = nprobe_cpu
            self.device = f"cuda:{gpu_id(items.device)}"

    def _build_faiss(
        self, items: np.ndarray, hnsw_m: int, ef_construction: int, nlist: int, nprobe: int, seed
    ):
        import faiss

        d = self.dim
        if self.kind == "exact":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
        else:  # ivf
            n = self.num_items
            nlist = nlist or round(4 * math.sqrt(n))
            nlist = max(1, min(nlist, n // 39 or 1))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(seed)
            index.train(items)
            index.nprobe = min(nlist, nprobe or max(8, nlist // 16))
            self._quantizer = quantizer  # the IVF index does not own it: keep it alive
        index.add(items)
        return index

    def __repr__(self) -> str:
        return f"InnerProductIndex(items={self.num_items}, dim={self.dim}, kind={self.kind!r}, backend={self.backend!r})"

    def describe(self) -> dict:
        out = {"kind": self.kind, "backend": self.backend, "num_items": self.num_items, "dim": self.dim}
        if self.device is not None:
            out["device"] = self.device
        if self.kind == "hnsw":
            out["ef_search"] = self.ef_search
        if self.kind == "ivf":
            out.update(nlist=int(self._faiss.nlist), nprobe=int(self._faiss.nprobe))
        return out

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [Q, k], items int64 [Q, k]) of the k largest inner products, best first."""
        if k < 1:
            raise RetrievalError(f"k must be >= 1, got {k}")
        q = _as_float32(queries)
        if q.shape[1] != self.dim:
            raise RetrievalError(f"queries have dimension {q.shape[1]}, the index holds {self.dim}-d items")
        n_q = q.shape[0]
        scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        items = np.full((n_q, k), -1, dtype=np.int64)
        if n_q == 0:
            return scores, items
        take = min(k, self.num_items)
        if self.backend == "torch":
            got_s, got_i = self._search_torch(q, take)
        else:
            got_s, got_i = self._search_faiss(q.cpu().numpy(), take)
        got_s[got_i < 0] = -np.inf  # faiss marks "not found" with -1
        scores[:, :take], items[:, :take] = got_s, got_i
        return scores, items

    def _search_torch(self, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        items = self._items
        q = q.to(items.device)
        # Bound the [chunk, num_items] score block to about 64M floats.
        chunk = self.query_chunk or max(1, (1 << 26) // self.num_items)
        out_s, out_i = [], []
        # Exact scores in float32, even when called under a bf16 autocast (validation during training).
        with torch.no_grad(), torch.autocast(items.device.type, enabled=False):
            for lo in range(0, q.shape[0], chunk):
                top = (q[lo : lo + chunk] @ items.T).topk(k, dim=1)
                out_s.append(top.values.cpu())
                out_i.append(top.indices.cpu())
        return torch.cat(out_s).numpy(), torch.cat(out_i).numpy().astype(np.int64)

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.device is not None and k > _GPU_FAISS_MAX_K:
            raise RetrievalError(
                f"GPU faiss searches at most k = {_GPU_FAISS_MAX_K}, got {k}; use backend 'torch' for larger k"
            )
        if self.kind == "hnsw":
            self._faiss.hnsw.efSearch = max(self.ef_search, k)
        s, i = self._faiss.search(np.ascontiguousarray(q, dtype=np.float32), k)
        return s.astype(np.float32), i.astype(np.int64)
