"""genrec.models.layers.Dropout: torch.nn.Dropout's contract with genrec's counter-based CPU masks,
seeded by torch's generator."""

from __future__ import annotations

import pytest
import torch

from genrec.models.layers import Dropout
from genrec.ops import dropout_multiplier


def _seed_after(manual_seed: int) -> int:
    """The seed Dropout draws first after torch.manual_seed(manual_seed)."""
    torch.manual_seed(manual_seed)
    return int(torch.empty((), dtype=torch.int64).random_())


def test_training_output_and_gradient_are_the_seeded_mask():
    x = torch.randn(6, 5, 7, requires_grad=True)
    layer = Dropout(0.3).train()
    torch.manual_seed(11)
    y = layer(x)
    mask = dropout_multiplier(x, _seed_after(11), 0.3)
    assert torch.equal(y, x * mask)
    assert 0 < int((mask == 0).sum()) < mask.numel()
    y.sum().backward()
    assert torch.equal(x.grad, mask)  # d(sum(x * m))/dx = m: dropped elements get no gradient


def test_masks_follow_torch_manual_seed_and_change_from_call_to_call():
    x = torch.ones(64, 64)
    layer = Dropout(0.5).train()
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_eval_and_p_zero_pass_the_input_through():
    x = torch.randn(4, 4)
    assert Dropout(0.4).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_probabilities_outside_0_1_are_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)


def test_the_models_use_it():
    from genrec.models.layers import Block

    block = Block(8, 2, 4, 16, 0.1)
    kinds = {type(m) for m in block.modules()}
    assert Dropout in kinds and torch.nn.Dropout not in kinds
