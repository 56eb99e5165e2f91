"""In-process A/B of the 1M train step (notes: ../../NOTES.md): torch's elementwise path
(x * dropout_multiplier, F.gelu, the attention's dropout inside scaled_dot_product_attention,
F.cross_entropy) against the fused kernels of fused-train-kernels.patch, the two alternating
(ABBA) on the same batches, in one process, so the machine's drift hits both alike.

    git apply bench/results/scale-cpu/epyc/fused-elementwise/fused-train-kernels.patch
    python setup.py -q build_ext --inplace
    THP_MEM_ALLOC_ENABLE=1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 NB=100 \
        python bench/results/scale-cpu/epyc/fused-elementwise/ab.py /tmp/scale_bench/epoch/items-1000000

PARTS (drop, gelu, attn, ce; default all) chooses which parts take torch's path in the A runs.
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch.nn.functional as F

import genrec.models.base as B
import genrec.models.layers as L
from genrec.ops import dropout_multiplier

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/results/scale-cpu
from train_stage_setup import build, stepper

OLD = [False]
parts = set(os.environ.get("PARTS", "drop,gelu,attn,ce").split(","))
new_fwd, new_gelu, new_attn, new_ce = (
    L.Dropout.forward,
    L.Dropout.gelu_then,
    L.attention_with_dropout,
    B.summed_cross_entropy,
)


def fwd(self, x):
    if OLD[0] and "drop" in parts and self.training and self.p and x.device.type == "cpu":
        return x * dropout_multiplier(x, self.draw_seed(), self.p)
    return new_fwd(self, x)


def gelu_then(self, x):
    if OLD[0] and "gelu" in parts:
        return self(F.gelu(x))
    return new_gelu(self, x)


def attn(q, k, v, mask, is_causal, p):
    if OLD[0] and "attn" in parts:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
    return new_attn(q, k, v, mask, is_causal, p)


def ce(logits, target):
    if OLD[0] and "ce" in parts:
        return F.cross_entropy(logits, target, reduction="sum")
    return new_ce(logits, target)


L.Dropout.forward, L.Dropout.gelu_then, L.attention_with_dropout, B.summed_cross_entropy = (
    fwd,
    gelu_then,
    attn,
    ce,
)

model, opt, batches = build(sys.argv[1], 128, int(os.environ.get("NB", "60")))
_, step = stepper(model, opt)

for b in batches[:4]:
    OLD[0] = False
    step(b)
    OLD[0] = True
    step(b)
tt = {True: [], False: []}
for i, b in enumerate(batches[4:]):
    order = (True, False) if i % 2 == 0 else (False, True)
    for o in order:
        OLD[0] = o
        s = time.perf_counter()
        step(b)
        tt[o].append(time.perf_counter() - s)
old, new = sum(tt[True]), sum(tt[False])
ratios = [a / b for a, b in zip(tt[True], tt[False], strict=True)]
print(
    f"parts {sorted(parts)}: old {old / len(tt[True]) * 1e3:.1f} ms/step, new {new / len(tt[False]) * 1e3:.1f} ms/step, old/new {old / new:.3f}, median per-batch ratio {statistics.median(ratios):.3f}"
)
