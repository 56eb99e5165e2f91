"""Tiny models run faster on one CPU thread than on two, and far faster on a busy machine.

A test folder opts in by importing the fixture into its conftest.py:
``from tests.one_thread import one_thread  # noqa: F401``.
"""

from __future__ import annotations

import pytest

from genrec.embed.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield
