"""genrec serve end to end: real HTTP requests to a uvicorn server on localhost, answers equal to
``genrec recommend``'s (same items, order and scores); micro-batched answers equal to unbatched
ones under concurrent requests; exclude and allow lists exact against a brute-force ranking."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from genrec.cli import app as cli
from genrec.serve.run import load_run


def as_lists(recs) -> list[dict]:
    return [r.__dict__ for r in recs]


def same_ranking(got: list[dict], want: list[dict], tol: float = 1e-5) -> None:
    """Equal lists up to float32 rounding of scores: a batch's matrix shapes change the last bits, so
    items whose scores are within ``tol`` may swap places, nothing else."""
    assert len(got) == len(want)
    g = np.array([r["score"] for r in got])
    w = np.array([r["score"] for r in want])
    np.testing.assert_allclose(g, w, rtol=0, atol=tol)
    for n, (a, b) in enumerate(zip(got, want, strict=True)):
        if a["item_id"] != b["item_id"]:  # a near-tie: the swapped item is in the other list, as close
            near = [r["item_id"] for r in want if abs(r["score"] - a["score"]) <= tol]
            assert a["item_id"] in near, (n, got, want)


def random_histories(rec, count: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [
        [rec.item_ids[i] for i in rng.choice(rec.num_items, size=int(rng.integers(1, 12)))] for _ in range(count)
    ]


@pytest.fixture(scope="module")
def reference(served_run):
    return load_run(served_run, device="cpu")


def test_history_answers_equal_genrec_recommend(plain_server, reference, served_run):
    with httpx.Client(base_url=plain_server.url) as client:
        for n, history in enumerate(random_histories(reference, 12, seed=0)):
            k = 1 + n % reference.recommender.beam_size
            got = client.post("/recommend", json={"history": history, "k": k})
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["k"] == k and body["history_length"] == len(history)
            # Exactly RunRecommender.recommend_ids': the same call on the same run.
            assert body["items"] == as_lists(reference.recommend_ids([history], k)[0])
        history = random_histories(reference, 1, seed=1)[0]
        cli_out = CliRunner().invoke(
            cli, ["recommend", "--run", str(served_run), "--history", ",".join(history), "--k", "7", "--json"]
        )
        assert cli_out.exit_code == 0, cli_out.output
        assert client.post("/recommend", json={"history": history, "k": 7}).json()["items"] == json.loads(
            cli_out.output
        )


def test_known_user_gets_their_whole_sequence_as_history(plain_server, reference, served_run):
    from genrec.batch_recommend import open_tested_run

    dataset = open_tested_run(served_run, device="cpu").dataset
    with httpx.Client(base_url=plain_server.url) as client:
        for u in (0, 17, 59):
            user_id = f"U{u}"
            sequence = [reference.item_ids[i] for i in dataset.sequence(u)]
            got = client.post("/recommend/user", json={"user_id": user_id, "k": 5})
            assert got.status_code == 200, got.text
            assert got.json()["history_length"] == len(sequence)
            assert got.json()["items"] == as_lists(reference.recommend_ids([sequence], 5, users=[u])[0])


async def _post_all(url: str, bodies: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        answers = await asyncio.gather(*(client.post(path, json=body) for path, body in bodies))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    return [a.json() for a in answers]


def test_batched_answers_equal_unbatched_under_concurrent_requests(batched_server, plain_server, reference):
    histories = random_histories(reference, 40, seed=2)
    rng = np.random.default_rng(3)
    bodies = [("/recommend", {"history": h, "k": 5}) for h in histories]
    bodies += [("/recommend", {"history": h, "k": 3}) for h in histories[:6]]  # another k: another call
    bodies += [
        ("/recommend", {"history": h, "k": 4, "exclude": list(rng.choice(reference.item_ids, 5))})
        for h in histories[:6]
    ]
    bodies += [
        ("/recommend", {"history": h, "k": 4, "allow": list(rng.choice(reference.item_ids, 8))})
        for h in histories[:6]
    ]
    bodies += [("/recommend/user", {"user_id": f"U{u}", "k": 5}) for u in range(6)]
    before = httpx.get(f"{batched_server.url}/health").json()["batching"]
    batched = asyncio.run(_post_all(batched_server.url, bodies))
    after = httpx.get(f"{batched_server.url}/health").json()["batching"]
    assert after["requests"] - before["requests"] == len(bodies)
    assert after["batches"] - before["batches"] < len(bodies) / 4  # they were batched
    assert after["largest_batch"] > 8
    unbatched = [httpx.post(f"{plain_server.url}{path}", json=body).json() for path, body in bodies]
    for (_, body), got, want in zip(bodies, batched, unbatched, strict=True):
        assert got["k"] == want["k"] == body["k"]
        same_ranking(got["items"], want["items"])


def test_a_wrong_answer_fails_the_comparison():
    """same_ranking is not vacuous: another item, a moved item or a changed score fail it."""
    want = [{"item_id": "a", "score": -1.0}, {"item_id": "b", "score": -2.0}]
    for bad in (
        [{"item_id": "a", "score": -1.0}, {"item_id": "c", "score": -2.0}],
        [{"item_id": "b", "score": -1.0}, {"item_id": "a", "score": -2.0}],
        [{"item_id": "a", "score": -1.0}, {"item_id": "b", "score": -2.1}],
        want[:1],
    ):
        with pytest.raises(AssertionError):
            same_ranking(bad, want)


def _ranking_of_everything(run_dir, history: list[str]) -> list[dict]:
    """Brute force: with a beam as wide as the catalogue every item is a candidate with its exact
    fused score, so this is the run's score sorted over all items (the history excluded, as the
    run does)."""
    n = len(load_run(run_dir, device="cpu").item_ids)
    full = load_run(run_dir, device="cpu", beam_size=n)
    return as_lists(full.recommend_ids([history], n)[0])


def test_allow_lists_get_exactly_the_best_allowed_items(plain_server, reference, served_run):
    rng = np.random.default_rng(4)
    with httpx.Client(base_url=plain_server.url) as client:
        for history in random_histories(reference, 8, seed=5):
            everything = _ranking_of_everything(served_run, history)
            ranked = [r["item_id"] for r in everything]
            # Mostly items the unrestricted top k does not hold: a post-filter would come up short.
            allow = [str(x) for x in rng.choice(ranked[4:], size=6, replace=False)] + [history[0]]
            k = 5
            got = client.post("/recommend", json={"history": history, "k": k, "allow": allow}).json()["items"]
            want = [r for r in everything if r["item_id"] in allow][:k]
            assert len(want) == k  # the history item is excluded by the run, 6 others remain
            same_ranking(got, want)


def test_exclude_lists_rank_the_rest(plain_server, reference, served_run):
    from genrec.serve.service import RecommendService

    wide = RecommendService.open(served_run, device="cpu", beam_size=reference.num_items, users=False)
    rng = np.random.default_rng(6)
    with httpx.Client(base_url=plain_server.url) as client:
        for history in random_histories(reference, 8, seed=7):
            everything = _ranking_of_everything(served_run, history)
            top = [r["item_id"] for r in everything[:10]]
            exclude = [str(x) for x in rng.choice(top, size=4, replace=False)]
            k = 8
            got = client.post("/recommend", json={"history": history, "k": k, "exclude": exclude}).json()["items"]
            assert len(got) == k and not {r["item_id"] for r in got} & set(exclude)
            # With every item in the beam, excluding is exactly removing them from the full ranking.
            q = wide.query_for_history(history, k, exclude, None)
            wide_got = as_lists(wide.answer([q])[0])
            same_ranking(wide_got, [r for r in everything if r["item_id"] not in exclude][:k])


def test_allow_lists_are_exact_with_a_beam_narrower_than_the_list(reference, served_run):
    """An allow list longer than the beam: its search widens to the whole list, so the answer is
    still the brute-force best, even where a beam of 3 would have pruned the best allowed items."""
    from genrec.serve.service import RecommendService

    narrow = RecommendService.open(served_run, device="cpu", beam_size=3, users=False)
    rng = np.random.default_rng(8)
    for history in random_histories(reference, 10, seed=9):
        everything = _ranking_of_everything(served_run, history)
        allow = [str(x) for x in rng.choice([r["item_id"] for r in everything], size=12, replace=False)]
        got = as_lists(narrow.answer([narrow.query_for_history(history, 3, None, allow)])[0])
        same_ranking(got, [r for r in everything if r["item_id"] in allow][:3])


def test_restricted_lists_score_every_candidate_before_filtering(monkeypatch):
    """The fusion may skip candidates that cannot reach the unfiltered top k (Fusion.build's best);
    allow and exclude lists filter after building, so the serving wrapper must not let it."""
    import torch

    from genrec.fusion import Candidates, Fusion, FusionWeights
    from genrec.serve.restricted import _FilteredFusion

    seen = []

    def fake_build(self, *args, best=None, **kwargs):
        seen.append(best)
        items = torch.tensor([[0, 1, 2]])
        zeros = torch.zeros(1, 3)
        return Candidates(items, zeros.clone(), zeros.clone(), zeros.clone(), 3)

    monkeypatch.setattr(Fusion, "build", fake_build)
    wrapper = _FilteredFusion(
        Fusion(FusionWeights()), extra_sources=True, forbidden=torch.tensor([1]), permitted=None, num_items=3
    )
    cand = wrapper.build(None, {}, None, None, None, [np.array([0])], True, None, best=2)
    assert seen == [None]
    assert cand.items.tolist() == [[0, -1, 2]]  # row 0's item 1 (key 0 * 3 + 1) filtered out
