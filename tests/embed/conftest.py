"""Session fixtures of the multimodal, diffusion and encoder-ablation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.embed.multimodal_data import clustered_dataset


@pytest.fixture(scope="session")
def clustered_path(tmp_path_factory) -> Path:
    """The clustered catalogue, written once per session (its texts, and so its text embeddings, are shared)."""
    return clustered_dataset(tmp_path_factory.mktemp("clustered") / "clustered")


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory) -> Path:
    """An embedding cache shared by the tests that run the real text encoder: MiniLM runs once."""
    return tmp_path_factory.mktemp("text-cache")
