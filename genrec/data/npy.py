"""Reading ``.npy`` files safely: the header is checked against the file before any array is made.

``np.load`` trusts the header's shape: a header claiming a huge or impossible shape makes it try
to allocate that much (or fail with an obscure error). Here the header must describe exactly the
bytes that follow it, and object arrays (pickles) are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


def load_npy(path: str | Path, error: type[Exception] = ValueError) -> np.ndarray:
    """The array in ``path``; a damaged or foreign file raises ``error`` naming it and the problem."""
    path = Path(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    except (OSError, ValueError, SyntaxError) as e:
        raise error(f"{path}: not a readable .npy file ({e})") from None
    if dtype.hasobject:
        raise error(f"{path}: holds Python objects (dtype {dtype}); only plain numeric arrays are read")
    if any(d < 0 for d in shape):
        raise error(f"{path}: its header claims the impossible shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    if expected != data_bytes:
        raise error(
            f"{path}: its header claims shape {list(shape)} of {dtype} ({expected:,} bytes) but the file "
            f"holds {data_bytes:,} bytes of data; the file is damaged or truncated"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise error(f"{path}: not a readable .npy file ({e})") from None
