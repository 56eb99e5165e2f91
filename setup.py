"""Build script for genrec's compiled extension ``genrec._C``.

Build switches (environment variables, read at build time):

- ``GENREC_BUILD_EXT=0``       skip the compiled extension: a pure-PyTorch install that still works.
- ``GENREC_BUILD_CUDA=auto|1|0`` build the CUDA kernels: ``auto`` (default) when nvcc is found,
  ``1`` forces them (and fails without nvcc), ``0`` builds the CPU kernels only.
- ``GENREC_CUDA_ARCH``         target architectures for nvcc, in ``TORCH_CUDA_ARCH_LIST`` syntax
  (default ``9.0+PTX``: Hopper machine code plus PTX for newer GPUs).
- ``MAX_JOBS``                 parallel compile jobs (read by torch's build helper).
- ``GENREC_DEBUG=1``           compile with ``-O0 -g`` and device-side line info.
"""

from __future__ import annotations

import glob
import os
import shutil

from setuptools import find_packages, setup


def _flag(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


def _cuda_requested() -> bool:
    mode = _flag("GENREC_BUILD_CUDA", "auto")
    if mode not in {"auto", "1", "0", "true", "false", "yes", "no"}:
        raise SystemExit(f"GENREC_BUILD_CUDA must be auto, 1 or 0, got {mode!r}")
    if mode in {"0", "false", "no"}:
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    found = bool(nvcc) and os.path.exists(nvcc)
    if mode == "auto":
        return found
    if not found:
        raise SystemExit(
            "GENREC_BUILD_CUDA=1 but nvcc was not found: set CUDA_HOME to your CUDA toolkit "
            "(for example CUDA_HOME=/usr/local/cuda)"
        )
    return True


def _extensions():
    if _flag("GENREC_BUILD_EXT", "1") in {"0", "false", "no"}:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    debug = _flag("GENREC_DEBUG", "0") in {"1", "true", "yes"}
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = [*opt, "-std=c++20", "-fopenmp", "-Wno-psabi"]
    if _cuda_requested():
        # GENREC_CUDA_ARCH wins, then a TORCH_CUDA_ARCH_LIST the user set, then Hopper + PTX.
        arch = os.environ.get("GENREC_CUDA_ARCH") or os.environ.get("TORCH_CUDA_ARCH_LIST") or "9.0+PTX"
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch
        nvcc = [*opt, "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        if debug:
            nvcc += ["-G"]
        ext = CUDAExtension(
            "genrec._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            define_macros=[("GENREC_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "genrec._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    # The Triton kernels live in the top-level folder triton_kernels/ but install as
    # genrec.triton_kernels, so genrec never shadows (or is shadowed by) another
    # distribution's top-level ``triton_kernels`` package.
    packages=[*find_packages(include=["genrec", "genrec.*"]), "genrec.triton_kernels"],
    package_dir={"genrec.triton_kernels": "triton_kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
