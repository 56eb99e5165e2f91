"""``genrec recommend --users all|FILE --out recs.parquet``: the test stage's lists for every user,
in resumable batches; a killed job resumes without decoding finished batches again; bad input is
refused before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genrec.batch_recommend import BatchRecommendError, recommend_to_parquet, staging_dir
from genrec.cli import app
from genrec.data import load_prepared
from genrec.eval import load_per_user
from genrec.serve.beam import BeamSearchRecommender
from tests.cli.tiny_runs import BATCH, ITEM_DECODER, train_tiny_run
from tests.one_thread import one_thread  # noqa: F401  (tiny models: one CPU thread)
from tests.pipeline.conftest import tiny_prepared  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
# The GPU machine has neither polars nor faiss: the batch path must run without them.
CLI_WITHOUT_POLARS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"polars", "faiss"}:
            raise ImportError(f"{name} is not installed here (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
from genrec.cli import app
app(sys.argv[1:])
"""
MODELS = {"tiger": [], "item_decoder": ITEM_DECODER, "sasrec": ["model.kind=sasrec"]}


@pytest.fixture(scope="module", params=sorted(MODELS))
def tested_run(request, tmp_path_factory, tiny_prepared):  # noqa: F811
    return train_tiny_run(
        tmp_path_factory.mktemp(f"batch-{request.param}"), tiny_prepared, MODELS[request.param]
    )


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory, tiny_prepared):  # noqa: F811
    return train_tiny_run(tmp_path_factory.mktemp("batch-fused"), tiny_prepared, ITEM_DECODER)


def plain(output: str) -> str:
    """CLI output without rich's panel borders and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def lists_of(path: Path) -> dict[int, tuple[list[int], list[float], list[int]]]:
    """Per user: item indices, scores and ranks, in file order."""
    table = pq.read_table(path).to_pydict()
    out: dict[int, tuple[list, list, list]] = {}
    for u, i, s, r in zip(table["user_idx"], table["item_idx"], table["score"], table["rank"], strict=True):
        items, scores, ranks = out.setdefault(u, ([], [], []))
        items.append(i), scores.append(s), ranks.append(r)
    return out


def test_all_users_get_exactly_the_test_stage_lists(tested_run, tmp_path):
    run, captured = tested_run
    out = tmp_path / "recs.parquet"
    done = recommend_to_parquet(run, "all", out, k=10, progress=False)
    assert done.users == 60 and done.batches == 4 and done.computed == [0, 1, 2, 3] and not done.skipped
    assert not staging_dir(out).exists()
    table = pq.read_table(out)
    assert table.schema.names == ["user_idx", "user_id", "rank", "item_idx", "item_id", "score"]
    got = lists_of(out)
    assert sorted(got) == sorted(captured) == list(range(60))
    assert table.column("user_idx").to_pylist() == sorted(table.column("user_idx").to_pylist())
    for u, (items, scores, ranks) in got.items():
        want_items, want_scores = captured[u]
        filled = want_items >= 0
        assert items == want_items[filled].tolist(), u
        assert np.array_equal(np.array(scores, dtype=np.float32), want_scores[filled]), u  # bit for bit
        assert ranks == list(range(1, len(items) + 1))
    # The ids are the run's and the dataset's, and the held-out item sits where the test found it.
    item_ids = pq.read_table(run / "items.parquet").column("item_id").to_pylist()
    rows = table.to_pylist()
    assert all(r["item_id"] == item_ids[r["item_idx"]] and r["user_id"] == f"U{r['user_idx']}" for r in rows)
    per_user = load_per_user(run / "test_eval.json")
    targets = load_prepared(_dataset_path(run)).split("test").targets
    assert len(per_user["rank"]) == 60
    for u, rank in zip(per_user["user_idx"], per_user["rank"], strict=True):
        items = got[int(u)][0]
        assert rank == (items.index(targets[u]) if targets[u] in items else -1)


def _dataset_path(run: Path) -> Path:
    import json

    return Path(json.loads((run / "run.json").read_text())["dataset"]["path"])


def test_a_shorter_list_is_the_head_of_the_longer_one(fused_run, tmp_path):
    run, _ = fused_run
    recommend_to_parquet(run, "all", tmp_path / "k10.parquet", k=10, progress=False)
    recommend_to_parquet(run, "all", tmp_path / "k3.parquet", k=3, progress=False, batch_users=7)
    long, short = lists_of(tmp_path / "k10.parquet"), lists_of(tmp_path / "k3.parquet")
    for u in long:
        assert short[u][0] == long[u][0][:3]
        np.testing.assert_allclose(short[u][1], long[u][1][:3], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_a_users_file_gets_its_users_in_file_order(fused_run, tmp_path, kind):
    run, captured = fused_run
    users = [41, 3, 17, 59, 0]
    path = tmp_path / f"users.{kind}"
    if kind == "txt":
        path.write_text(
            "\n".join(f" U{u} " for u in users[:2]) + "\n\n" + "\n".join(f"U{u}" for u in users[2:])
        )
    elif kind == "csv":
        path.write_text("score,user_id\n" + "".join(f"0.5,U{u}\n" for u in users))
    else:
        pq.write_table(pa.table({"user_id": [f"U{u}" for u in users]}), path)
    out = tmp_path / "recs.parquet"
    recommend_to_parquet(run, path, out, k=10, batch_users=2, progress=False)
    table = pq.read_table(out)
    order = list(dict.fromkeys(table.column("user_idx").to_pylist()))
    assert order == users
    got = lists_of(out)
    for u in users:  # other batch neighbours than the test's: the same items, scores to rounding
        want_items, want_scores = captured[u]
        assert got[u][0] == want_items[want_items >= 0].tolist()
        np.testing.assert_allclose(got[u][1], want_scores[want_items >= 0], rtol=0, atol=1e-5)


def run_cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """genrec in a fresh process (a fault point SIGKILLs it), with polars and faiss unimportable."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENREC_FAULT_AT", None)
    if fault:
        env["GENREC_FAULT_AT"] = fault
    return subprocess.run(
        [sys.executable, "-c", CLI_WITHOUT_POLARS, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_killed_job_resumes_without_decoding_finished_batches(fused_run, tmp_path, monkeypatch):
    run, _ = fused_run
    reference = tmp_path / "reference.parquet"
    recommend_to_parquet(run, "all", reference, k=10, progress=False)
    out = tmp_path / "recs.parquet"
    args = ["recommend", "--run", str(run), "--users", "all", "--out", str(out), "--no-progress"]
    killed = run_cli(args, fault="recommend-part-written#2")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    parts = staging_dir(out)
    assert sorted(p.name for p in parts.iterdir()) == [
        "manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert not out.exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*")}

    # Other arguments do not mix with these parts: refused, and nothing changes.
    with pytest.raises(BatchRecommendError, match=r"different .*k.*--restart"):
        recommend_to_parquet(run, "all", out, k=5, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*")} == stamps

    decoded: list[int] = []  # users the recommender decodes while resuming
    real = BeamSearchRecommender.topk

    def counting(self, histories, k, users=None):
        decoded.append(len(histories))
        return real(self, histories, k, users)

    monkeypatch.setattr(BeamSearchRecommender, "topk", counting)

    def still_there(b):
        assert {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*") if p.name in stamps} == stamps

    done = recommend_to_parquet(run, "all", out, k=10, progress=False, on_batch=still_there)
    assert done.skipped == [0, 1] and done.computed == [2, 3] and sum(decoded) == 60 - 2 * BATCH
    assert pq.read_table(out).equals(pq.read_table(reference)) and not parts.exists()


def test_a_job_killed_after_writing_the_output_finishes_its_clean_up(fused_run, tmp_path):
    run, _ = fused_run
    out = tmp_path / "recs.parquet"
    args = ["recommend", "--run", str(run), "--users", "all", "--out", str(out), "--no-progress"]
    assert run_cli(args, fault="recommend-concatenated").returncode == -9
    assert out.is_file() and staging_dir(out).is_dir()
    before = pq.read_table(out)
    res = run_cli(args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 of 4 batches decoded, 4 reused" in plain(res.stdout)
    assert pq.read_table(out).equals(before) and not staging_dir(out).exists()


def test_restart_discards_another_jobs_parts(fused_run, tmp_path):
    run, _ = fused_run
    out = tmp_path / "recs.parquet"
    args = ["recommend", "--run", str(run), "--users", "all", "--out", str(out), "--no-progress"]
    assert run_cli([*args, "--k", "5"], fault="recommend-part-written#1").returncode == -9
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "--restart" in plain(res.output) and not out.exists()
    res = CliRunner().invoke(app, [*args, "--restart"])
    assert res.exit_code == 0, res.output
    assert "4 of 4 batches decoded" in plain(res.output)
    assert set(pq.read_table(out).column("rank").to_pylist()) == set(range(1, 11))


def test_restart_starts_over_and_an_interrupted_call_leaves_its_parts(fused_run, tmp_path):
    run, _ = fused_run
    out = tmp_path / "recs.parquet"

    def stop_at_2(b):
        if b == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recommend_to_parquet(run, "all", out, progress=False, on_batch=stop_at_2)
    assert sorted(p.name for p in staging_dir(out).glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    (staging_dir(out) / ".manifest.json.x1y2").write_text("{")  # a kill while writing a manifest
    done = recommend_to_parquet(run, "all", out, progress=False, restart=True)
    assert done.computed == [0, 1, 2, 3] and not done.skipped and not staging_dir(out).exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("users.txt", "U1\nU2\nnobody\n", r"users.txt: line 3: user id 'nobody' is not a user"),
        ("users.txt", "U1\n\nU7\nU1\n", r"users.txt: line 4: user id 'U1' repeats line 1"),
        ("users.txt", "\n \n", r"users.txt: lists no user ids"),
        ("users.csv", "id,name\nU1,a\n", r"users.csv: no user_id column \(columns: id, name\)"),
        ("users.csv", "user_id,x\nU1,1\nU2\n", r"users.csv: line 3 has 1 fields, the header 2"),
        ("users.csv", "user_id\nU1\nU99\n", r"users.csv: line 3: user id 'U99' is not a user"),
        ("users.parquet", ["U0", "U5", "X"], r"users.parquet: row 3: user id 'X' is not a user"),
        ("users.txt", b"U1\nU\xff\n", r"users.txt: line 2 is not valid UTF-8"),
        ("missing.txt", None, r"missing.txt: no such users file"),
    ],
)
def test_bad_users_files_are_named_and_nothing_is_written(fused_run, tmp_path, name, content, message):
    run, _ = fused_run
    path = tmp_path / name
    if isinstance(content, list):
        pq.write_table(pa.table({"user_id": content}), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    out = tmp_path / "out" / "recs.parquet"
    out.parent.mkdir()
    with pytest.raises(BatchRecommendError, match=message):
        recommend_to_parquet(run, path, out, progress=False)
    res = CliRunner().invoke(app, ["recommend", "--run", str(run), "--users", str(path), "--out", str(out)])
    assert res.exit_code == 1 and "nothing was written" in plain(res.output)
    assert list(out.parent.iterdir()) == []


def test_bad_options_are_refused_before_anything_is_written(fused_run, tmp_path):
    run, _ = fused_run
    out = tmp_path / "recs.parquet"
    with pytest.raises(BatchRecommendError, match=r"--k 60: k=60 exceeds the beam size"):
        recommend_to_parquet(run, "all", out, k=60, progress=False)
    with pytest.raises(BatchRecommendError, match="does not exist"):
        recommend_to_parquet(run, "all", tmp_path / "no" / "recs.parquet", progress=False)
    with pytest.raises(BatchRecommendError, match="is a folder"):
        recommend_to_parquet(run, "all", tmp_path, progress=False)
    (tmp_path / "recs.parquet.parts").mkdir()
    (tmp_path / "recs.parquet.parts" / "mine.txt").write_text("keep me")
    with pytest.raises(BatchRecommendError, match="holds files genrec did not write"):
        recommend_to_parquet(run, "all", out, progress=False, restart=True)
    assert (tmp_path / "recs.parquet.parts" / "mine.txt").read_text() == "keep me"
    invoke = CliRunner().invoke
    res = invoke(app, ["recommend", "--run", str(run), "--users", "all"])
    assert res.exit_code == 2 and "needs --out" in plain(res.output)
    res = invoke(
        app, ["recommend", "--run", str(run), "--users", "all", "--history", "I001", "--out", str(out)]
    )
    assert res.exit_code == 2 and "either --history" in plain(res.output)
    res = invoke(app, ["recommend", "--run", str(run), "--history", "I001", "--out", str(out)])
    assert res.exit_code == 2 and "applies to batch mode" in plain(res.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.parquet.parts"]
