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
    assert lr_at(20, time_progress=1.0) == pytest.approx(0.1)  # the budget spent: the floor
    # the clock's decay starts after the warm-up's share (10 of 110 steps) of the budget
    assert lr_at(10, time_progress=10 / 110) == pytest.approx(1.0)
    assert lr_at(10, time_progress=(10 + 50) / 110) == pytest.approx(0.55)  # half of the rest
    assert lr_at(100, time_progress=0.1) == lr_at(100)  # the further-along of the two wins
    assert lr_at(5, time_progress=1.0) == lr_at(5)  # warm-up is counted in steps


@pytest.mark.parametrize("pace", [0.3, 0.9, 0.999])
def test_a_run_on_pace_for_its_budget_decays_by_its_steps_alone(pace):
    # A run that spends at most its share of the budget per step (elapsed / budget <= step / total
    # steps) gets the same rates whatever its clock reads: its result does not depend on the clock.
    for step in range(0, 111):
        assert lr_at(step, time_progress=pace * step / 110) == lr_at(step)


def test_a_slower_run_decays_by_the_clock_and_reaches_the_floor_at_the_budget():
    for step in range(10, 60):
        assert lr_at(step, time_progress=2 * step / 110) < lr_at(step)
    assert lr_at(55, time_progress=1.0) == pytest.approx(0.1)
