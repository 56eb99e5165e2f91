"""LazyAdamW: AdamW where every row is touched, lazy rows elsewhere; and train.sparse_item_table."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.config import load_config
from genrec.models import build_model
from genrec.train import checkpoint as ckpt
from genrec.train.lazy_adamw import LazyAdamW
from genrec.train.recipe import make_optimizer, uses_sparse_item_table

HP = {"lr": 0.01, "betas": (0.9, 0.98), "eps": 1e-8}


def _pair(rows: int, dim: int, seed: int):
    """The same table and dense weight twice: once for AdamW (dense lookups), once sparse."""
    torch.manual_seed(seed)
    dense_emb, sparse_emb = torch.nn.Embedding(rows, dim), torch.nn.Embedding(rows, dim, sparse=True)
    sparse_emb.weight.data.copy_(dense_emb.weight.data)
    dense_lin = torch.nn.Linear(dim, 1)
    sparse_lin = torch.nn.Linear(dim, 1)
    sparse_lin.load_state_dict(dense_lin.state_dict())
    return (dense_emb, dense_lin), (sparse_emb, sparse_lin)


def _groups(emb, lin, decay):
    return [{"params": [emb.weight, lin.weight], "weight_decay": decay}, {"params": [lin.bias], "weight_decay": 0.0}]


def _loss(emb, lin, idx):
    return (lin(emb(idx)).squeeze(-1) ** 2).sum() + emb(idx[:2]).sum()  # rows looked up twice: duplicate grads


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(2, 12), dim=st.integers(1, 6), seed=st.integers(0, 2**16), decay=st.sampled_from([0.0, 0.05])
)
def test_every_row_touched_every_step_is_exactly_adamw(rows, dim, seed, decay):
    (de, dl), (se, sl) = _pair(rows, dim, seed)
    dense = torch.optim.AdamW(_groups(de, dl, decay), **HP)
    lazy = LazyAdamW(_groups(se, sl, decay), **HP)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(6):
        idx = torch.cat([torch.randperm(rows, generator=gen), torch.randint(0, rows, (3,), generator=gen)])
        for emb, lin, opt in ((de, dl, dense), (se, sl, lazy)):
            _loss(emb, lin, idx).backward()  # the sparse gradient uncoalesced: LazyAdamW sums its rows
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.testing.assert_close(se.weight, de.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sl.weight, dl.weight, rtol=1e-5, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(lazy.state[se.weight][key], dense.state[de.weight][key], rtol=1e-5, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(3, 12), dim=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_untouched_rows_stay_and_touched_rows_follow_the_lazy_rule(rows, dim, seed):
    """A brute-force per-row reference: Adam moments and bias correction per step of the parameter,
    decoupled decay, only on the rows the step's gradient names (duplicates summed)."""
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(rows, dim, sparse=True)
    opt = LazyAdamW([{"params": [emb.weight], "weight_decay": 0.1}], **HP)
    w = emb.weight.detach().double().clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    gen = torch.Generator().manual_seed(seed)
    beta1, beta2 = HP["betas"]
    for step in range(1, 6):
        idx = torch.randint(0, rows - 1, (4,), generator=gen)  # the last row is never touched
        target = torch.randn(4, dim, generator=gen)
        before = emb.weight.detach().clone()
        ((emb(idx) - target) ** 2).sum().backward()
        grad = torch.zeros_like(w)
        grad.index_add_(0, idx, 2 * (before[idx].double() - target.double()))
        opt.step()
        opt.zero_grad(set_to_none=True)
        for r in idx.unique().tolist():
            m[r] = beta1 * m[r] + (1 - beta1) * grad[r]
            v[r] = beta2 * v[r] + (1 - beta2) * grad[r] ** 2
            denom = (v[r].sqrt() / math.sqrt(1 - beta2**step)) + HP["eps"]
            w[r] = w[r] * (1 - HP["lr"] * 0.1) - HP["lr"] / (1 - beta1**step) * m[r] / denom
        assert torch.equal(emb.weight.detach()[rows - 1], before[rows - 1])
        torch.testing.assert_close(emb.weight.detach().double(), w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[emb.weight]["exp_avg"].double(), m, rtol=1e-5, atol=1e-7)
    assert float(opt.state[emb.weight]["step"]) == 5


def test_the_item_table_hands_on_a_coalesced_gradient_so_clipping_sees_the_true_norm():
    _, model = _item_model()
    model.sparse_item_grads(True)
    model.item_emb(torch.tensor([1, 1, 1, 4])).sum().backward()
    grad = model.item_emb.weight.grad
    # duplicates summed by the hook (the accumulated .grad may drop the is_coalesced flag itself)
    assert grad.is_sparse and grad._indices().tolist() == [[1, 4]]
    # rows 1 (x3) and 4 (x1) of ones: the true norm is sqrt(16 * 3^2 + 16 * 1^2) (d_model 16)
    assert float(torch.nn.utils.clip_grad_norm_([model.item_emb.weight], 1e9)) == pytest.approx(math.sqrt(160))


def _item_model(*overrides: str, num_items: int = 50):
    config = load_config(
        None,
        overrides=[
            "model.kind=item_decoder",
            "model.item_embeddings=true",
            "model.d_model=16",
            "model.num_heads=2",
            "model.head_dim=8",
            "model.d_ff=32",
            "model.item_loss=1.0",
            "model.item_negatives=8",
            *overrides,
        ],
    )
    return config, build_model(config.model, [4, 4], config.train.max_history, num_items)


def test_auto_turns_on_for_a_large_catalogue_on_a_cpu_only(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    config, model = _item_model()
    assert not uses_sparse_item_table(config, model, cpu)  # 50 items: the dense recipe
    monkeypatch.setattr("genrec.train.recipe.SPARSE_ITEM_TABLE_FROM", 50)
    assert uses_sparse_item_table(config, model, cpu)
    assert not uses_sparse_item_table(config, model, cuda)
    off, model = _item_model("train.sparse_item_table=off")
    assert not uses_sparse_item_table(off, model, cpu)
    full, model = _item_model("model.item_negatives=0")  # a full softmax reads the whole table
    assert not uses_sparse_item_table(full, model, cpu)


def test_on_where_impossible_is_a_clear_error():
    config, model = _item_model("train.sparse_item_table=on", "model.item_negatives=0")
    with pytest.raises(ValueError, match=r"sparse_item_table.*whole catalogue.*item_negatives"):
        uses_sparse_item_table(config, model, torch.device("cpu"))
    config, model = _item_model("train.sparse_item_table=on", "model.item_embeddings=false", "model.item_loss=0")
    with pytest.raises(ValueError, match="no item table"):
        uses_sparse_item_table(config, model, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"train\.sparse_item_table"):
        load_config(None, overrides=["train.sparse_item_table=yes"])


def test_a_sparse_item_table_trains_the_item_decoder_and_updates_only_touched_rows():
    config, model = _item_model("train.sparse_item_table=on", num_items=40)
    assert uses_sparse_item_table(config, model, torch.device("cpu"))
    model.sparse_item_grads(True)
    opt = make_optimizer(model, config, torch.device("cpu"), sparse_items=True)
    assert isinstance(opt, LazyAdamW)
    torch.manual_seed(0)
    items = torch.randint(0, 30, (4, 6))  # items 30..39 never in a window
    batch = {"window": torch.randint(0, 4, (4, 6, 2)), "window_len": torch.full((4,), 6), "window_items": items}
    before = model.item_emb.weight.detach().clone()
    total, _ = model.loss_terms(batch)
    total.backward()
    grad = model.item_emb.weight.grad
    assert grad.is_sparse
    touched = grad.coalesce().indices()[0].unique()
    opt.step()
    changed = (model.item_emb.weight.detach() != before).any(dim=1).nonzero()[:, 0]
    assert set(changed.tolist()) == set(touched.tolist())  # the windows' items and the sampled negatives
    assert set(items.unique().tolist()) <= set(touched.tolist())


def test_a_restored_state_is_the_optimizers_own_memory_and_resumes_exactly(tmp_path):
    """read_tensors hands back a copy-on-write map of the file; restore_optimizer must copy it, or every
    first write to a row of a large table faults (scale-cpu/NOTES.md), and the next steps must match."""
    _, (emb, lin) = _pair(12, 4, 0)
    names = {emb.weight: "emb", lin.weight: "lin.w", lin.bias: "lin.b"}
    opt = LazyAdamW(_groups(emb, lin, 0.05), **HP)
    idx = torch.tensor([1, 3, 3, 7])
    _loss(emb, lin, idx).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    tensors, groups = ckpt.optimizer_tensors(opt, names)
    ckpt.atomic_save_tensors(tmp_path / "optimizer.safetensors", tensors)

    _, (emb2, lin2) = _pair(12, 4, 0)
    emb2.load_state_dict(emb.state_dict())
    lin2.load_state_dict(lin.state_dict())
    names2 = {emb2.weight: "emb", lin2.weight: "lin.w", lin2.bias: "lin.b"}
    opt2 = LazyAdamW(_groups(emb2, lin2, 0.05), **HP)
    loaded = ckpt.read_tensors(tmp_path / "optimizer.safetensors")
    ckpt.restore_optimizer(opt2, loaded, groups, names2)
    for p, name in names2.items():
        for key, value in opt2.state[p].items():
            assert torch.equal(value, tensors[f"{name}/{key}"])
            assert value.data_ptr() != loaded[f"{name}/{key}"].data_ptr(), f"{name}/{key} aliases the file"
    for model, optimizer in (((emb, lin), opt), ((emb2, lin2), opt2)):
        _loss(*model, torch.tensor([0, 3, 9, 9])).backward()
        optimizer.step()
    assert torch.equal(emb.weight, emb2.weight) and torch.equal(lin.weight, lin2.weight)
