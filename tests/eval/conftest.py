"""The eval tests share the data tests' fixtures (the prepared Beauty dataset)."""

from tests.data.conftest import prepared_beauty  # noqa: F401
