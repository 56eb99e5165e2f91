"""genrec.cpu_threads: the default thread count follows the free cores, and a user's setting wins."""

from __future__ import annotations

import os

import pytest
import torch

from genrec import cpu_threads


@pytest.fixture
def governor(monkeypatch):
    """An enabled governor on a pretend 2-core machine whose busy-task count the test sets."""
    busy = {"others": 0}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GENREC_ADAPTIVE_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "others_running", lambda: busy["others"])
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(cpu_threads, "CHECK_INTERVAL_S", 0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    assert cpu_threads.enable()
    yield busy
    cpu_threads.disable()
    torch.set_num_threads(before)


def test_a_busy_core_lowers_the_count_after_enough_readings_and_a_free_one_raises_it(governor):
    governor["others"] = 1
    for _ in range(cpu_threads.READINGS - 1):
        cpu_threads.tick()
        assert torch.get_num_threads() == 2  # one or two readings are not enough to lower it
    cpu_threads.tick()
    assert torch.get_num_threads() == 1
    governor["others"] = 0
    cpu_threads.tick()
    assert torch.get_num_threads() == 2  # the first free reading raises it
    governor["others"] = 5
    for _ in range(cpu_threads.READINGS):
        cpu_threads.tick()
    assert torch.get_num_threads() == 1  # never below one


def test_a_short_blip_does_not_lower_the_count(governor):
    for others in (0, 1, 0, 1, 0):
        governor["others"] = others
        cpu_threads.tick()
        assert torch.get_num_threads() == 2


def test_a_count_set_by_someone_else_stands(governor):
    torch.set_num_threads(1)  # e.g. a with-block of the user's
    governor["others"] = 0
    for _ in range(3):
        cpu_threads.tick()
    assert torch.get_num_threads() == 1
    cpu_threads.use_fixed(2)  # run.threads / --threads
    governor["others"] = 1
    for _ in range(5):
        cpu_threads.tick()
    assert torch.get_num_threads() == 2 and not cpu_threads.adapting()


@pytest.mark.parametrize("env", [{"OMP_NUM_THREADS": "2"}, {"GENREC_ADAPTIVE_THREADS": "0"}])
def test_user_settings_in_the_environment_turn_it_off(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cpu_threads.enable() is False and not cpu_threads.adapting()


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux /proc")
def test_others_running_reads_a_count():
    others = cpu_threads.others_running()
    assert isinstance(others, int) and others >= 0
