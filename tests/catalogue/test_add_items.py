"""`genrec add-items` on a tiny finished run: new items are embedded, tokenized and appended, the
updated run recommends them, the old items and the source run stay exactly as they were, and
bad input writes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from genrec.catalogue import NewItemsError, add_items, save_run_encoders
from genrec.cli import app
from genrec.serve.run import load_run
from genrec.tokenize.artifacts import load_tokenizer
from genrec.train.checkpoint import read_tensors
from tests.catalogue.conftest import NEW_ROWS, NUM_ITEMS, folder_digest, like, write_items


@pytest.fixture(scope="module")
def added(catalogue_run, tmp_path_factory):
    """The run with NEW_ROWS added, and the source run's digest taken before."""
    run, _, _ = catalogue_run
    root = tmp_path_factory.mktemp("added")
    before = folder_digest(run)
    result = add_items(run, write_items(root / "new.parquet", NEW_ROWS), root / "run2", device="cpu")
    return result, before


def test_new_items_get_unique_ids_from_the_runs_tokenizer(catalogue_run, added):
    run, _, _ = catalogue_run
    result, _ = added
    old = np.load(run / "tokenizer" / "semantic_ids.npy")
    new = np.load(result.run_dir / "tokenizer" / "semantic_ids.npy")
    N, n = len(old), len(NEW_ROWS)
    assert result.item_ids == ["N1", "N2", "N3"] and result.item_idx.tolist() == list(range(N, N + n))
    np.testing.assert_array_equal(new[:N], old)  # the catalogue's IDs are untouched
    np.testing.assert_array_equal(new[N:], result.semantic_ids)
    assert len(np.unique(new, axis=0)) == N + n  # every ID unique
    level_sizes = json.loads((run / "run.json").read_text())["level_sizes"]
    assert (new < np.array(level_sizes)).all() and (new >= 0).all()
    # The codes are the saved tokenizer's own encoding of the new items' embeddings ...
    codes = load_tokenizer(run / "tokenizer").encode(result.embeddings)
    np.testing.assert_array_equal(new[N:, :-1], codes)
    # ... and the last token the smallest one free for its prefix (among the items before it, the
    # new ones added earlier in the same file too).
    for j, row in enumerate(new[N:]):
        before = new[: N + j]
        same = before[(before[:, :-1] == row[:-1]).all(1), -1]
        assert row[-1] == min(set(range(len(same) + 1)) - set(same.tolist()))
    tok = json.loads((result.run_dir / "tokenizer" / "tokenizer.json").read_text())
    info = json.loads((result.run_dir / "run.json").read_text())
    from genrec.files import array_sha256

    assert tok["num_items"] == N + n and tok["semantic_ids_sha256"] == array_sha256(new)
    assert info["inputs"]["semantic_ids"] == array_sha256(new) and info["level_sizes"] == level_sizes
    assert info["new_items"]["trained_items"] == N and info["new_items"]["batches"][0]["count"] == n


def test_new_items_are_embedded_as_the_catalogue_was(catalogue_run, added):
    """A new item with catalogue item 5's attributes has item 5's fused content part."""
    _, embed_dir, _ = catalogue_run
    result, _ = added
    catalogue = np.load(embed_dir / "embeddings.npy")
    layout = json.loads((embed_dir / "embed.json").read_text())["layout"]["columns"]
    lo, hi = layout["content"]
    np.testing.assert_allclose(result.embeddings[0, lo:hi], catalogue[5, lo:hi], atol=1e-6)
    np.testing.assert_allclose(result.embeddings[1, lo:hi], catalogue[13, lo:hi], atol=1e-6)
    assert np.isfinite(result.embeddings).all() and result.embeddings.shape == (3, catalogue.shape[1])


def test_old_weights_are_kept_and_new_items_get_zero_free_embeddings(catalogue_run, added):
    run, _, _ = catalogue_run
    result, _ = added
    old, new = read_tensors(run / "model.safetensors"), read_tensors(result.run_dir / "model.safetensors")
    assert set(old) == set(new)
    N = len(np.load(run / "tokenizer" / "semantic_ids.npy"))
    for name, tensor in old.items():
        if new[name].shape == tensor.shape:
            assert torch.equal(new[name], tensor), name
        else:  # a per-item table: the old rows, then one row per new item
            assert new[name].shape[0] == N + 3 and torch.equal(new[name][:N], tensor), name
    assert (
        torch.count_nonzero(new["item_emb.weight"][N:]) == 0 and result.model_update == "zero item embeddings"
    )
    # The co-occurrence statistics the fusion ranks with: the new items co-occur with nothing.
    from genrec.fusion import load_cooccurrence

    before = load_cooccurrence(run / "cooccurrence.safetensors")
    after = load_cooccurrence(result.run_dir / "cooccurrence.safetensors")
    assert after.num_items == N + 3 and after.train_counts[N:].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(after.indptr[: N + 1], before.indptr)
    np.testing.assert_array_equal(after.indices, before.indices)


def test_the_updated_run_recommends_the_new_items(catalogue_run, added):
    run, _, _ = catalogue_run
    result, _ = added
    rec = load_run(result.run_dir, device="cpu")
    N = rec.num_items - 3
    assert rec.num_items == N + 3 and rec.item_ids[N:] == ["N1", "N2", "N3"]
    # The decoding index holds them: their IDs lead to them.
    index = rec.recommender.index
    np.testing.assert_array_equal(index.lookup(torch.as_tensor(result.semantic_ids)).numpy(), result.item_idx)
    # Allowed alone, a new item is what the constrained beam search returns.
    from genrec.decoding import beam_search

    model, codes = rec.recommender.model, rec.recommender.codes
    history = torch.tensor([[4, 5]])
    batch = {"history": codes[history], "history_len": torch.tensor([2]), "history_items": history}
    for item in result.item_idx:
        found = beam_search(model.step_fn(batch, 4), index, 1, 4, 1, allow=[np.array([item])])
        assert found.items.tolist() == [[item]] and np.isfinite(found.scores.item())
    # With a beam over the whole catalogue every item is ranked: the new ones are in the list, and
    # the old items keep their scores up to one shift per list (the item head's normaliser grew).
    rec.recommender.beam_size = rec.num_items
    before = load_run(run, device="cpu")
    before.recommender.beam_size = N
    for hist in (["I004", "I005"], ["I010"], ["I020", "I021", "I022"]):
        got = rec.recommend_ids([hist], k=rec.num_items - len(hist))[0]
        assert {r.item_id for r in got} == set(rec.item_ids) - set(hist)
        old = {r.item_id: r.score for r in before.recommend_ids([hist], k=N - len(hist))[0]}
        shift = [r.score - old[r.item_id] for r in got if r.item_id in old]
        assert len(shift) == N - len(hist) and np.ptp(shift) < 1e-4
    # New items can be in a history too (their embedding rows and co-occurrence rows exist).
    assert len(rec.recommend_ids([["I003", "N1"]], k=5)[0]) == 5


def test_the_source_run_is_unchanged_byte_for_byte(catalogue_run, added):
    run, _, _ = catalogue_run
    _, before = added
    assert folder_digest(run) == before
    result, _ = added
    assert (
        not (result.run_dir / "checkpoints").exists() and not (result.run_dir / "best.safetensors").exists()
    )
    assert (result.run_dir / "encoders" / "encoders.json").is_file()
    rows = pq.read_table(result.run_dir / "new_items" / "batch-0001.parquet").to_pylist()
    assert [r["item_id"] for r in rows] == ["N1", "N2", "N3"] and rows[0]["brand"] == "Brand1"


def test_items_can_be_added_again_to_the_updated_run(added, tmp_path):
    result, _ = added
    # Like a catalogue item, the first whose codes still have a free disambiguation token (the tiny
    # tokenizer's collisions decide which; a full prefix is refused with nothing written).
    for i in range(NUM_ITEMS):
        try:
            more = add_items(
                result.run_dir, write_items(tmp_path / f"more{i}.parquet", [like(i, "N4")]), tmp_path / "run3"
            )
            break
        except NewItemsError as e:
            assert "disambiguation token" in str(e) and not (tmp_path / "run3").exists()
    else:
        pytest.fail("no catalogue item's codes have room for one more item")
    info = json.loads((tmp_path / "run3" / "run.json").read_text())
    N = info["new_items"]["trained_items"]
    assert more.item_idx.tolist() == [N + 3] and [b["count"] for b in info["new_items"]["batches"]] == [3, 1]
    assert sorted(p.name for p in (tmp_path / "run3" / "new_items").iterdir()) == [
        "batch-0001.parquet",
        "batch-0002.parquet",
    ]
    assert load_run(tmp_path / "run3", device="cpu").item_ids[-4:] == ["N1", "N2", "N3", "N4"]
    with pytest.raises(NewItemsError, match=r"row 1 \(item_id 'N2'\), column 'item_id': the run already has"):
        add_items(result.run_dir, write_items(tmp_path / "again.parquet", [like(3, "N2")]), tmp_path / "run4")


BAD = {
    "duplicate id in the file": (
        [like(1, "X"), like(2, "X")],
        r"row 2 \(item_id 'X'\), column 'item_id': the id repeats row 1",
    ),
    "id the run has": ([like(1, "I003")], r"row 1 \(item_id 'I003'\), column 'item_id': the run already has"),
    "missing text": (
        [like(1, "X"), {**like(2, "Y"), "title": None}],
        r"row 2 \(item_id 'Y'\), column 'title': the text is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rows_are_refused_and_nothing_is_written(catalogue_run, tmp_path, case):
    run, _, _ = catalogue_run
    rows, message = BAD[case]
    before = folder_digest(run)
    items = write_items(tmp_path / "new.parquet", rows)
    with pytest.raises(NewItemsError, match=r"new\.parquet: .*" + message):
        add_items(run, items, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.parquet"]  # no folder, no leftovers
    assert folder_digest(run) == before


def test_a_file_with_the_wrong_columns_or_format_is_refused(catalogue_run, tmp_path):
    import pyarrow as pa

    run, _, _ = catalogue_run
    before = folder_digest(run)
    pq.write_table(pa.table({"id": ["X"], "name": ["x"]}), tmp_path / "cols.parquet")
    with pytest.raises(
        NewItemsError, match=r"cols\.parquet: missing column\(s\) item_id, title, brand, categories"
    ):
        add_items(run, tmp_path / "cols.parquet", tmp_path / "out")
    pq.write_table(
        pa.table({"item_id": ["X"], "title": [3], "brand": ["b"], "categories": [["c"]]}),
        tmp_path / "t.parquet",
    )
    with pytest.raises(NewItemsError, match=r"t\.parquet: column 'title' holds int64, expected strings"):
        add_items(run, tmp_path / "t.parquet", tmp_path / "out")
    (tmp_path / "x.parquet").write_text("item_id,title\n")
    with pytest.raises(NewItemsError, match=r"x\.parquet: not a readable parquet file"):
        add_items(run, tmp_path / "x.parquet", tmp_path / "out")
    items = write_items(tmp_path / "ok.parquet", [like(1, "X")])
    (tmp_path / "taken").mkdir()
    with pytest.raises(NewItemsError, match=r"taken already exists"):
        add_items(run, items, tmp_path / "taken")
    with pytest.raises(NewItemsError, match=r"inside the run"):
        add_items(run, items, run / "sub")
    assert not (tmp_path / "out").exists() and folder_digest(run) == before


def test_a_run_that_cannot_embed_new_items_says_why(catalogue_run, tmp_path):
    run, _, _ = catalogue_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "encoders")
    items = write_items(tmp_path / "new.parquet", [like(1, "X")])
    with pytest.raises(NewItemsError, match=r"no encoders/encoders\.json.*train it again"):
        add_items(copy, items, tmp_path / "out")
    # An embed output made by an encoder with no state (here a stand-in test encoder).
    fake = tmp_path / "emb"
    fake.mkdir()
    (fake / "embed.json").write_text(json.dumps({"encoder": "test_cycle", "dimension": 8}))
    recorded = save_run_encoders(copy, fake, None)
    assert not recorded.supported and "item-ID model" in recorded.reason
    recorded = save_run_encoders(copy, fake, copy / "tokenizer")
    assert not recorded.supported and "'test_cycle'" in recorded.reason
    with pytest.raises(
        NewItemsError, match=r"cannot take new items: its embed encoder 'test_cycle' .* cannot embed"
    ):
        add_items(copy, items, tmp_path / "out")
    # A multimodal output made before encoders saved their state.
    (fake / "embed.json").write_text(json.dumps({"encoder": "multimodal", "dimension": 12}))
    recorded = save_run_encoders(copy, fake, copy / "tokenizer")
    assert not recorded.supported and "holds no encoder state" in recorded.reason
    assert not (tmp_path / "out").exists()


def test_a_damaged_saved_encoder_is_refused(catalogue_run, tmp_path):
    run, _, _ = catalogue_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = copy / "encoders" / "encoder_state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(NewItemsError, match=r"encoder_state\.safetensors is damaged"):
        add_items(copy, write_items(tmp_path / "new.parquet", [like(1, "X")]), tmp_path / "out")


def test_cli_adds_items_and_reports_errors(catalogue_run, tmp_path):
    run, _, _ = catalogue_run
    items = write_items(tmp_path / "new.parquet", [like(9, "C1")])
    out = CliRunner().invoke(
        app, ["add-items", "--run", str(run), "--items", str(items), "--out", str(tmp_path / "r2"), "--json"]
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert [r["item_id"] for r in report["added"]] == ["C1"] and len(report["added"][0]["semantic_id"]) == 3
    shown = CliRunner().invoke(
        app, ["recommend", "--run", str(tmp_path / "r2"), "--history", "C1", "--k", "3", "--json"]
    )
    assert shown.exit_code == 0 and len(json.loads(shown.output)) == 3
    bad = CliRunner().invoke(
        app, ["add-items", "--run", str(run), "--items", str(items), "--out", str(tmp_path / "r2")]
    )
    assert bad.exit_code == 1 and "already exists" in bad.output and "nothing was written" in bad.output


def _has_content_vectors() -> bool:
    from genrec.config import ModelConfig

    return hasattr(ModelConfig(), "content_vectors")


@pytest.mark.skipif(not _has_content_vectors(), reason="no content vectors in this genrec")
def test_a_run_with_content_vectors_scores_new_items_by_their_content(tmp_path):
    """With model.content_vectors the new items' content joins the model's content table, and the
    updated run knows them as never trained (cold)."""
    import itertools

    from genrec.config import load_config
    from genrec.data import write_prepared
    from genrec.pipeline import run_pipeline
    from tests.catalogue.conftest import NUM_ITEMS, item_rows, run_overrides
    from tests.train.helpers import synthetic_world

    offsets, flat, _, _ = synthetic_world(num_users=60, num_items=NUM_ITEMS)
    sequences = [[f"I{i:03d}" for i in flat[a:b]] for a, b in itertools.pairwise(offsets)]
    rows = item_rows()
    prepared = write_prepared(tmp_path / "data", sequences, item_ids=[r["item_id"] for r in rows], items=rows)
    config = load_config(
        None,
        overrides=[
            *run_overrides(prepared, tmp_path / "cache"),
            "model.content_vectors=true",
            "model.profile_embeddings=content",
        ],
    )
    result = run_pipeline(config, tmp_path / "run", progress=False)
    save_run_encoders(tmp_path / "run", result.stages["embed"]["path"], result.stages["tokenize"]["path"])
    added = add_items(tmp_path / "run", write_items(tmp_path / "new.parquet", NEW_ROWS), tmp_path / "run2")
    assert added.model_update == "content vectors"
    rec = load_run(tmp_path / "run2", device="cpu")
    model = rec.recommender.model
    assert model.cold_items()[-3:].tolist() == [True] * 3 and not model.cold_items()[:NUM_ITEMS].any()
    unit = added.embeddings / np.linalg.norm(added.embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(model.item_content[-3:].numpy(), unit, atol=1e-6)
    # The profile embeddings grow with the catalogue; the old rows stay bit for bit.
    from genrec.profile_similarity import SIMILARITY_FILE, load_similarity

    old = load_similarity(tmp_path / "run" / SIMILARITY_FILE, NUM_ITEMS).rows
    new = load_similarity(tmp_path / "run2" / SIMILARITY_FILE, NUM_ITEMS + 3).rows
    assert torch.equal(new[:NUM_ITEMS], old)
    np.testing.assert_allclose(new[NUM_ITEMS:].numpy(), unit, atol=1e-6)
    assert rec.recommender.fusion.similarity.num_items == NUM_ITEMS + 3
    assert len(rec.recommend_ids([["I004", "N1"]], k=5)[0]) == 5


def test_a_run_with_a_text_profile_embeds_new_items_text_as_its_profile_was(tmp_path):
    """model.profile_embeddings = "text" with an encoder that reads no text: the run's similarity
    file records the text encoder's settings, and new items are embedded with them."""
    import itertools

    from genrec.config import load_config
    from genrec.data import write_prepared
    from genrec.embed.text import TextEncoder
    from genrec.pipeline import run_pipeline
    from genrec.profile_similarity import SIMILARITY_FILE, load_similarity
    from tests.catalogue.conftest import item_rows, run_overrides
    from tests.train.helpers import synthetic_world

    offsets, flat, _, _ = synthetic_world(num_users=60, num_items=NUM_ITEMS)
    sequences = [[f"I{i:03d}" for i in flat[a:b]] for a, b in itertools.pairwise(offsets)]
    rows = item_rows()
    prepared = write_prepared(tmp_path / "data", sequences, item_ids=[r["item_id"] for r in rows], items=rows)
    overrides = [
        *run_overrides(prepared, tmp_path / "cache"),
        "model.content_vectors=true",
        "model.profile_embeddings=text",
    ]
    run_pipeline(load_config(None, overrides=overrides), tmp_path / "run", progress=False)
    old = load_similarity(tmp_path / "run" / SIMILARITY_FILE, NUM_ITEMS)
    assert old.source == "text" and old.text_spec["model_sha256"]
    items = write_items(tmp_path / "new.parquet", NEW_ROWS)
    add_items(tmp_path / "run", items, tmp_path / "run2")
    new = load_similarity(tmp_path / "run2" / SIMILARITY_FILE, NUM_ITEMS + len(NEW_ROWS))
    assert torch.equal(new.rows[:NUM_ITEMS], old.rows) and new.text_spec == old.text_spec
    _, text = TextEncoder.embed_new_texts(old.text_spec, pq.read_table(items), where="test", device="cpu")
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    np.testing.assert_allclose(new.rows[NUM_ITEMS:].numpy(), unit, atol=1e-6)
    # The existing items' rows are the same encoder's output: re-embedding one gives its row back.
    table = pq.read_table(prepared / "items.parquet").slice(0, 2)
    _, again = TextEncoder.embed_new_texts(old.text_spec, table, where="test", device="cpu")
    np.testing.assert_allclose(
        again / np.linalg.norm(again, axis=1, keepdims=True), old.rows[:2].numpy(), atol=1e-5
    )


def test_identical_items_past_the_last_token_take_the_nearest_free_ids(catalogue_run, tmp_path):
    """Items with equal content get equal codes; once every last token the model can emit is used on
    those codes, the next items take the nearest codes with room (the last level's next-nearest
    codewords, in order); where no choice has room, nothing is written."""
    run, _, _ = catalogue_run
    limit = json.loads((run / "run.json").read_text())["level_sizes"][-1]
    rows = [like(5, f"D{i}") for i in range(limit + 2)]
    added = add_items(run, write_items(tmp_path / "new.parquet", rows), tmp_path / "out")
    ids = [tuple(r) for r in added.semantic_ids.tolist()]
    assert len(set(ids)) == len(ids)
    choices = load_tokenizer(run / "tokenizer").encode_choices(added.embeddings, 32)
    assert (choices == choices[:1]).all()  # equal content, equal choices
    own = tuple(choices[0, 0])
    stayed = [i for i in ids if i[:-1] == own]
    moved = [i for i in ids if i[:-1] != own]
    assert len(stayed) + len(moved) == len(ids) and added.moved == len(moved) >= 1
    # The movers took the first choices, in order, that still had a free last token.
    allowed = [tuple(c) for c in choices[0, 1:]]
    assert all(m[:-1] in allowed for m in moved)
    assert sorted(allowed.index(m[:-1]) for m in moved) == [allowed.index(m[:-1]) for m in moved]

    before = folder_digest(run)
    with pytest.MonkeyPatch.context() as mp:  # one choice only: the item's own codes
        mp.setattr("genrec.catalogue.add.ID_CHOICES", 1)
        with pytest.raises(
            NewItemsError, match=r"new\.parquet: row \d+ \(item_id 'D\d+'\): its codes .* without retraining"
        ):
            add_items(run, write_items(tmp_path / "new.parquet", rows), tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and folder_digest(run) == before
