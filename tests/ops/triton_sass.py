"""Compile genrec's Triton kernels for sm_90 without a GPU and count register spills in the SASS.

ptxas makes the spills, so they show only in the machine code (LDL/STL instructions, and the
STACK bytes of ``cuobjdump -res-usage``), never in the PTX. Run as a script (Triton must not be
in interpreter mode): JSON variants on stdin, one JSON result per line on stdout.

A variant: {"kernel": "beam_step" | "rq_encode", "constexprs": {...}, "logits": "fp32" | "fp16" | "bf16",
"num_warps": int, "maxnreg": int | None}.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def triton_tool(name: str) -> Path | None:
    """Triton's bundled copy of an NVIDIA tool (ptxas, cuobjdump), or None without Triton's NVIDIA backend."""
    import importlib.util

    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / name
    return path if path.exists() else None


def _signature(kernel: str, dtype: str, constexprs: dict) -> dict:
    if kernel == "beam_step":
        sig = {
            n: "*i32"
            for n in ("states_ptr", "row_ptr_ptr", "child_tokens_ptr", "dense_ptr", "mask_nodes_ptr", "next_states_ptr")
        }
        sig.update(
            logits_ptr=f"*{dtype}", beam_scores_ptr="*fp32", mask_offsets_ptr="*i64", mask_allow_ptr="*i1",
            tokens_ptr="*i64", parents_ptr="*i64", scores_ptr="*fp32",
        )  # fmt: skip
        sig.update({n: "i32" for n in ("B", "V", "K", "nodes", "n_children", "n_mask", "csr_iters", "mask_iters")})
    else:
        sig = {"x_ptr": f"*{dtype}", "cb_ptr": f"*{dtype}", "norms_ptr": "*fp32", "out_ptr": "*i64"}
        sig.update({n: "i32" for n in ("N", "D", "K", "L")})
    sig.update({k: "constexpr" for k in constexprs})
    return sig


def spill_report(variant: dict) -> dict:
    """The variant, with ``regs``, ``local_bytes``, ``stack_bytes`` (where ptxas puts spills) and the
    ``ldl``/``stl`` (local load/store) counts of its sm_90 SASS."""
    import triton
    from triton.backends.compiler import GPUTarget

    if variant["kernel"] == "beam_step":
        from genrec.triton_kernels.beam_step import _beam_step_kernel as fn
    else:
        from genrec.triton_kernels.rq_encode import _rq_encode_kernel as fn
    constexprs = variant["constexprs"]
    src = triton.compiler.ASTSource(
        fn=fn, signature=_signature(variant["kernel"], variant["logits"], constexprs), constexprs=constexprs
    )
    options = {"num_warps": variant["num_warps"]}
    if variant.get("maxnreg"):
        options["maxnreg"] = variant["maxnreg"]
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    cuobjdump = str(triton_tool("cuobjdump"))
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run(
            [cuobjdump, "-res-usage", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    regs = re.search(r"REG:(\d+)", usage)
    local = re.search(r"LOCAL:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    return {
        **variant,
        "regs": int(regs.group(1)) if regs else None,
        "local_bytes": int(local.group(1)) if local else None,
        "stack_bytes": int(stack.group(1)) if stack else None,
        "ldl": len(re.findall(r"\bLDL(?:\.\w+)*\b", sass)),
        "stl": len(re.findall(r"\bSTL(?:\.\w+)*\b", sass)),
        "sass_lines": sass.count("\n"),
    }


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter compiles nothing")
    for variant in json.load(sys.stdin):
        print(json.dumps(spill_report(variant)), flush=True)


if __name__ == "__main__":
    main()
