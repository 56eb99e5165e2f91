"""The device's measured ceilings: copy bandwidth and matrix-product rate.

Kernel figures are reported against these, measured in the same run, rather
than against datasheet numbers.
"""

from __future__ import annotations

import torch

from genrec.bench.timing import median_seconds


def measure_ceilings(device: torch.device | str) -> dict:
    device = torch.device(device)
    gpu = device.type == "cuda"
    n_bytes = (1 << 30) if gpu else (1 << 28)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t_copy = median_seconds(lambda src=src, dst=dst: dst.copy_(src), device)
    out = {"copy_GBps": 2 * n_bytes / t_copy / 1e9}  # bytes read plus bytes written
    del src, dst
    size = 8192 if gpu else 2048
    dtypes = [torch.float32, torch.bfloat16] if gpu else [torch.float32]
    for dtype in dtypes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        t = median_seconds(lambda a=a, b=b: a @ b, device)
        out[f"matmul_{str(dtype).removeprefix('torch.')}_TFLOPs"] = 2 * size**3 / t / 1e12
    if gpu:
        out["note"] = "float32 matmul uses TF32 only if torch.backends.cuda.matmul.allow_tf32 is set"
    return out
