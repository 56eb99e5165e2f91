"""What ``genrec serve`` answers, without the web framework: requests checked and turned into
item indices (:class:`Query`), and a batch of them answered with the run's recommender.

A batch is answered by one recommender call per kind of request in it (normally one): requests
without lists go through genrec.recommend.RunRecommender exactly as ``genrec recommend`` does;
requests with ``exclude`` / ``allow`` lists through genrec.serve.restricted. Requests asking for
different k are separate calls (a cold-item cap makes a top k more than a prefix of a longer list).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrec.batch_recommend import BatchRecommendError, run_dataset
from genrec.batch_users import user_ids_of
from genrec.data import load_prepared
from genrec.files import file_sha256
from genrec.run_format import RunError
from genrec.serve.beam import BeamSearchRecommender
from genrec.serve.restricted import restricted_topk
from genrec.serve.run import Recommendation, RunRecommender, load_run

NAMES_SHOWN = 10  # unknown ids named in an error message


class RequestError(ValueError):
    """A request the service refuses: ``status`` is the HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Query:
    """One request in item indices: the history (oldest first), k, the user index (-1: none) and
    the optional exclude / allow lists."""

    history: np.ndarray
    k: int
    user: int = -1
    exclude: np.ndarray | None = None
    allow: np.ndarray | None = None

    @property
    def restricted(self) -> bool:
        return self.exclude is not None or self.allow is not None

    def group(self) -> tuple:
        """Requests of one group are answered by one recommender call."""
        kind = "allow" if self.allow is not None else ("exclude" if self.exclude is not None else "plain")
        return (self.k, kind)


class RecommendService:
    """A run (and, for known users, its dataset) opened for answering requests.

    ``max_list`` bounds the items of a history, exclude or allow list (an allow list's beam is
    as wide as the list). ``dataset`` None: requests for known users are refused with the reason
    ``dataset_problem``.
    """

    def __init__(
        self,
        run: RunRecommender,
        *,
        info: dict,
        dataset=None,
        dataset_problem: str | None = None,
        max_list: int = 1000,
    ) -> None:
        self.run = run
        self.info = info
        self.dataset = dataset
        self.dataset_problem = dataset_problem
        self.max_list = int(max_list)
        self._user_index: dict[str, int] | None = None
        rec = run.recommender
        beam = getattr(rec, "beam_size", None)
        self.max_k = run.num_items if beam is None else min(int(beam), run.num_items)
        self.model_sha256 = file_sha256(Path(run.run_dir) / "model.safetensors", missing_ok=True)
        self._restricted_view = copy.copy(run)  # shares the id index; its recommender set per call

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        *,
        device: str = "cpu",
        beam_size: int | None = None,
        dataset_dir: str | Path | None = None,
        users: bool = True,
        max_list: int = 1000,
    ) -> RecommendService:
        """load_run (as ``genrec recommend`` does) and, with ``users``, the run's dataset (checked
        against its fingerprint; where it cannot be loaded, known-user requests are refused)."""
        run_dir = Path(run_dir)
        run = load_run(run_dir, device=device, beam_size=beam_size)
        info = run.info
        dataset, problem = None, "this server was started without the run's dataset (--no-users)"
        if users:
            try:
                dataset = run_dataset(run_dir, info, dataset_dir, load_prepared, RunError)
                problem = None
            except (BatchRecommendError, RunError) as e:
                if dataset_dir is not None:
                    raise
                problem = f"the run's dataset cannot be loaded ({e}); start the server with --dataset"
                warnings.warn(f"known-user requests are off: {problem}", RuntimeWarning, stacklevel=2)
        return cls(run, info=info, dataset=dataset, dataset_problem=problem, max_list=max_list)

    # ---- health ------------------------------------------------------------------------------

    def health(self) -> dict:
        rec = self.run.recommender
        train = self.info.get("train") or {}
        return {
            "status": "ok",
            "run": str(self.run.run_dir),
            "model": {
                "kind": self.info["config"]["model"]["kind"],
                "signature": train.get("signature_hash"),
                "weights_sha256": self.model_sha256,
                "semantic_ids_sha256": (self.info.get("inputs") or {}).get("semantic_ids"),
            },
            "num_items": self.run.num_items,
            "num_users": None if self.dataset is None else int(self.dataset.num_users),
            "device": str(getattr(rec, "device", "cpu")),
            "beam_size": getattr(rec, "beam_size", None),
            "max_k": self.max_k,
            "max_list": self.max_list,
        }

    # ---- requests into queries ---------------------------------------------------------------

    def query_for_history(
        self, history: Sequence[str], k: int, exclude: Sequence[str] | None, allow: Sequence[str] | None
    ) -> Query:
        if len(history) == 0:
            raise RequestError(422, "history is empty: give at least one item id")
        return self._query(self._indices(history, "history"), k, -1, exclude, allow)

    def query_for_user(
        self, user_id: str, k: int, exclude: Sequence[str] | None, allow: Sequence[str] | None
    ) -> Query:
        if self.dataset is None:
            raise RequestError(404, f"known-user requests are off: {self.dataset_problem}")
        u = self._users().get(str(user_id).strip())
        if u is None:
            raise RequestError(
                404, f"user id {str(user_id)!r} is not a user of dataset {self.dataset.name} ({self.dataset.path})"
            )
        history = np.asarray(self.dataset.sequence(u), dtype=np.int64)
        return self._query(history, k, u, exclude, allow)

    def _users(self) -> dict[str, int]:
        if self._user_index is None:
            self._user_index = {v: u for u, v in enumerate(user_ids_of(self.dataset))}
        return self._user_index

    def _query(self, history: np.ndarray, k: int, user: int, exclude, allow) -> Query:
        if not 1 <= k <= self.max_k:
            raise RequestError(
                422,
                f"k = {k} is out of range: this run recommends 1..{self.max_k} items "
                f"(its beam size and catalogue size)",
            )
        lists = {"exclude": exclude, "allow": allow}
        if any(v is not None for v in lists.values()) and not isinstance(self.run.recommender, BeamSearchRecommender):
            raise RequestError(
                422, "exclude and allow lists need a generative run (this run ranks by inner product)"
            )
        got = {name: None if v is None else self._indices(v, name) for name, v in lists.items()}
        if got["allow"] is not None:
            got["allow"] = np.unique(got["allow"])
        if got["exclude"] is not None:
            got["exclude"] = np.unique(got["exclude"])
        return Query(history, int(k), user, got["exclude"], got["allow"])

    def _indices(self, ids: Sequence[str], field: str) -> np.ndarray:
        if len(ids) > self.max_list:
            raise RequestError(422, f"{field} holds {len(ids)} items; this server takes at most {self.max_list}")
        index_of = self.run.index_of
        out = np.empty(len(ids), dtype=np.int64)
        unknown = []
        for n, item_id in enumerate(ids):
            i = index_of.get(str(item_id).strip())
            if i is None:
                unknown.append(str(item_id))
            else:
                out[n] = i
        if unknown:
            shown = ", ".join(repr(x) for x in unknown[:NAMES_SHOWN])
            more = f" and {len(unknown) - NAMES_SHOWN} more" if len(unknown) > NAMES_SHOWN else ""
            raise RequestError(
                422, f"{field}: unknown item ids {shown}{more} (not in this run's catalogue of {self.run.num_items} items)"
            )
        return out

    # ---- answering ---------------------------------------------------------------------------

    def answer(self, queries: Sequence[Query]) -> list[list[Recommendation]]:
        """The lists of a batch of queries, in order: one recommender call per group."""
        out: list[list[Recommendation] | None] = [None] * len(queries)
        groups: dict[tuple, list[int]] = {}
        for n, q in enumerate(queries):
            groups.setdefault(q.group(), []).append(n)
        for (k, kind), rows in groups.items():
            qs = [queries[n] for n in rows]
            histories = [q.history for q in qs]
            users = None
            if any(q.user >= 0 for q in qs):  # -1 is the models' "unknown user", as None is
                users = [q.user for q in qs]
            if kind == "plain":
                lists = self.run.recommend_indices(histories, k, users)
            else:
                lists = self._restricted(histories, k, users, qs)
            for n, got in zip(rows, lists, strict=True):
                out[n] = got
        return out  # type: ignore[return-value]

    def _restricted(self, histories, k, users, qs: list[Query]) -> list[list[Recommendation]]:
        base = self.run.recommender

        def search_only(hist, k_, users_):
            return restricted_topk(
                base, hist, k_, users_, [q.exclude for q in qs], [q.allow for q in qs]
            )

        view = self._restricted_view
        view.recommender = _TopkOnly(search_only, base)
        return view.recommend_indices(histories, k, users)


class _TopkOnly:
    """A stand-in recommender whose topk is genrec.serve.restricted's (RunRecommender formats it)."""

    def __init__(self, topk, base) -> None:
        self._topk = topk
        self.device = base.device

    def topk(self, histories, k, users=None):
        return self._topk(histories, k, users)
