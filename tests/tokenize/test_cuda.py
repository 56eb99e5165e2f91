"""The tokenizer on a GPU: same results run to run, and the same clusters as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.tokenize import tokenize
from tests.tokenize.helpers import hierarchical_clusters, same_partition
from tests.tokenize.test_tokenize import small_config

pytestmark = pytest.mark.cuda


def cuda_config(method: str):
    config = small_config(method, epochs=40, batch_size=8)
    config.device = "cuda"
    config.kmeans_backend = "torch"
    return config


def check_repeatable(x: np.ndarray, method: str):
    first, second = tokenize(x, cuda_config(method)), tokenize(x, cuda_config(method))
    assert first.metrics["device"].startswith("cuda") and first.tokenizer.codebooks.is_cuda
    np.testing.assert_array_equal(first.semantic_ids, second.semantic_ids)
    np.testing.assert_array_equal(first.tokenizer.encode(torch.from_numpy(x[:10])), first.codes[:10])
    return first


def test_rqkmeans_on_cuda():
    x, coarse, fine = hierarchical_clusters(8, 8, 6, 24, seed=11)
    result = check_repeatable(x, "rqkmeans")
    assert same_partition(np.stack([coarse, fine], 1), result.codes)


def test_rqvae_on_cuda():
    x, clusters, _ = hierarchical_clusters(8, 1, 6, 24, seed=0)
    result = check_repeatable(x, "rqvae")
    assert same_partition(clusters, result.codes[:, 0])
