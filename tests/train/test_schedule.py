"""The learning-rate schedule: warm-up, then decay to the floor by the step budget or the clock."""

from __future__ import annotations

import pytest

from genrec.train.schedule import learning_rate


def lr_at(step, **kw):
    args = dict(lr=1.0, warmup_steps=10, total_steps=110, schedule="cosine", min_lr_ratio=0.1)
    return learning_rate(step, **{**args, **kw})


def test_warmup_then_cosine_to_the_floor():
    assert lr_at(0) == pytest.approx(0.1) and lr_at(9) == pytest.approx(1.0)
    assert lr_at(10) == pytest.approx(1.0)
    assert lr_at(60) == pytest.approx(0.55)  # half-way: the mean of peak and floor
    assert lr_at(110) == pytest.approx(0.1) and lr_at(500) == pytest.approx(0.1)
    assert all(lr_at(s) >= lr_at(s + 1) for s in range(10, 120))


def test_linear_and_constant():
    assert lr_at(60, schedule="linear") == pytest.approx(0.55)
    assert lr_at(60, schedule="constant") == 1.0


def test_the_clock_can_decay_faster_than_the_steps():
    assert lr_at(20, time_progress=1.0) == pytest.approx(0.1)
    assert lr_at(20, time_progress=0.5) == pytest.approx(0.55)
    assert lr_at(100, time_progress=0.1) == lr_at(100)  # the further-along of the two wins
    assert lr_at(5, time_progress=1.0) == lr_at(5)  # warm-up is counted in steps
