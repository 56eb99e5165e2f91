"""These tests run tiny models (see tests/one_thread.py)."""

from tests.one_thread import one_thread  # noqa: F401
