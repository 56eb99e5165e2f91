"""The decode path, k-means and retrieval import and run where polars, faiss and transformers are absent
(the GPU machine)."""

from __future__ import annotations

import subprocess
import sys

_BLOCKED = """
import sys

# None in sys.modules: `import name` raises ImportError and importlib.util.find_spec(name) is None,
# as where the package is not installed.
for name in ("polars", "faiss", "transformers", "sentence_transformers"):
    sys.modules[name] = None
import torch
from typer.testing import CliRunner
from genrec.cli import app
from genrec.bench import decode, decode_baselines, gpu_check
from genrec.decoding import TrieIndex, beam_search

result = CliRunner().invoke(app, ["bench", "decode", "--help"])
assert result.exit_code == 0 and "--gpu-check" in result.output, result.output
assert not decode_baselines.hf_available() and decode.run_decode_benchmarks and gpu_check.run_gpu_check
index = TrieIndex.from_codes(torch.tensor([[0, 1], [1, 0], [1, 1]]))
items, _ = beam_search(lambda prefix, parents: torch.zeros(1, prefix.shape[1], 2), index, 1, 3)
assert sorted(items[0].tolist()) == [0, 1, 2]
# k-means and retrieval, whose GPU paths use faiss when it has GPU support, run without faiss at all.
from genrec._faiss import faiss_gpu_available
from genrec.retrieval import InnerProductIndex
from genrec.tokenize.kmeans import kmeans
assert not faiss_gpu_available()
assert kmeans(torch.randn(60, 4), 3, iters=3).shape == (3, 4)
index = InnerProductIndex(torch.randn(20, 4))
assert index.backend == "torch" and index.search(torch.randn(2, 4), 3)[1].shape == (2, 3)
print("ok")
"""


def test_decode_path_needs_no_polars_faiss_or_transformers():
    done = subprocess.run([sys.executable, "-c", _BLOCKED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
