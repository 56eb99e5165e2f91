"""torch.compile on the 1M train step (notes: ../../NOTES.md), eager and compiled alternating
(ABBA) on the same batches in one process, after a few compiling steps.

    THP_MEM_ALLOC_ENABLE=1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 NB=60 \
        python ab_compile.py /tmp/scale_bench/epoch/items-1000000 MODE

MODE: ``module`` compiles the loss module as ``train.compile`` does; ``blocks`` compiles only the
transformer blocks (the item transformer's two and the depth decoder's); ``blocks-torch-dropout``
also lets compiled code draw dropout with the compiler's own generator instead of genrec's
(whose seed, a Python int, breaks the graph); ``blocks-no-dropout`` sets every dropout to 0 in both
arms.
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import genrec.models.layers as L

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/results/scale-cpu
from train_stage_setup import build, stepper

work, mode = sys.argv[1], sys.argv[2]
if mode == "blocks-torch-dropout":
    genrec_dropout = L.Dropout.forward

    def dropout(self, x):
        if torch.compiler.is_compiling() and self.training and self.p:
            return F.dropout(x, self.p, training=True)
        return genrec_dropout(self, x)

    L.Dropout.forward = dropout

model, opt, batches = build(work, 128, int(os.environ.get("NB", "60")))
lm, step = stepper(model, opt)
if mode == "blocks-no-dropout":
    for m in model.modules():
        if isinstance(m, L.Dropout):
            m.p = 0.0
        if isinstance(m, L.Attention):
            m.attn_dropout = 0.0

if mode == "module":
    compiled_lm = torch.compile(lm, dynamic=True)

    def use(compiled):
        return compiled_lm if compiled else lm
else:
    blocks = list(model.blocks) + list(model.depth_blocks)
    for b in blocks:
        b.compile(dynamic=True)
    compiled_calls = [b._compiled_call_impl for b in blocks]

    def use(compiled):
        for b, call in zip(blocks, compiled_calls, strict=True):
            b._compiled_call_impl = call if compiled else None
        return lm


start = time.perf_counter()
for b in batches[:4]:
    step(b, use(True))
print(f"compiling and 4 steps: {time.perf_counter() - start:.1f} s", flush=True)
for b in batches[:3]:
    step(b, use(False))
eager, compiled = [], []
for i, b in enumerate(batches[4:]):
    order = [(False, eager), (True, compiled)] if i % 2 == 0 else [(True, compiled), (False, eager)]
    for flag, times in order:
        module = use(flag)
        t = time.perf_counter()
        step(b, module)
        times.append(time.perf_counter() - t)
e, c = statistics.median(eager), statistics.median(compiled)
print(f"{mode}: eager {e * 1e3:.1f} ms, compiled {c * 1e3:.1f} ms a step (medians of {len(eager)}): ratio {e / c:.3f}")
