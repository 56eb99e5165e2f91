"""genrec: generative-retrieval recommendation.

Importing genrec loads the compiled operators (``torch.ops.genrec.*``) when the
extension was built; everything else works without it through the PyTorch
reference implementations.
"""

from genrec._openmp import prefer_short_spin
from genrec.heap import prefer_huge_pages

prefer_short_spin()  # before anything imports torch: see genrec/_openmp.py
prefer_huge_pages()  # likewise: see genrec/heap.py

from genrec._extension import extension_error, extension_loaded  # noqa: E402

__version__ = "0.1.0"

__all__ = ["__version__", "extension_error", "extension_loaded"]
