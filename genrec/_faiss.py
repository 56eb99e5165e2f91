"""faiss on a GPU, where the installed faiss was built with GPU support (``pip install genrec[gpu]``).

faiss is optional everywhere: nothing here imports it before it is asked for, and every caller keeps
its CPU path for when GPU faiss is absent (the GPU machine has no faiss at all).
"""

from __future__ import annotations

import functools
import importlib.util

import torch


def faiss_gpu_available() -> bool:
    """Whether faiss is importable, built with GPU support, and sees at least one GPU."""
    if importlib.util.find_spec("faiss") is None:
        return False
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def gpu_id(device: torch.device) -> int:
    """The CUDA ordinal of ``device`` (the current one for a bare "cuda")."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.cache
def gpu_resources(gpu: int):
    """One faiss GpuResources per GPU, kept for the process (its scratch memory is reused)."""
    import faiss

    return faiss.StandardGpuResources()


def index_to_gpu(index, device: torch.device):
    """A copy of the CPU faiss ``index`` on ``device``'s GPU."""
    import faiss

    gpu = gpu_id(device)
    return faiss.index_cpu_to_gpu(gpu_resources(gpu), gpu, index)


def flat_l2_index(dim: int, device: torch.device):
    """An exact L2 faiss index on ``device``'s GPU (what k-means assigns points with)."""
    import faiss

    gpu = gpu_id(device)
    config = faiss.GpuIndexFlatConfig()
    config.device = gpu
    return faiss.GpuIndexFlatL2(gpu_resources(gpu), dim, config)
