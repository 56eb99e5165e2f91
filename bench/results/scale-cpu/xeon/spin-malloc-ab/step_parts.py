"""The 1M train stage's step, timed part by part on its real windows (notes: ../../NOTES.md).

Reads a `genrec bench scale` 1M work folder (prepared data and tokenizer cache), builds the
training model and the epoch's first 40 batches exactly as the train stage does (seed 42), and
times 37 steps after 3 warm-up steps, split into the item transformer, the depth decoder, the
item head (forward and backward each) and clipping + the optimizer:

    GOMP_SPINCOUNT=10000 python step_parts.py /tmp/scale_bench/work/items-1000000

MALLOPT=0 leaves glibc's allocator thresholds alone (1, the default: genrec.cpu_malloc's);
GOMP_SPINCOUNT must be set in the environment (torch is imported before genrec here); BS sets the
batch size. Prints ms per part, examples/s, and page faults and kernel time per step.
"""

import ctypes
import os
import resource
import sys
import time
from pathlib import Path

import torch

if os.environ.get("MALLOPT", "1") == "1":
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/results/scale-cpu
from train_stage_setup import build

from genrec.models.base import cross_entropy_sum

work = sys.argv[1]
batch_size = int(os.environ.get("BS", "128"))
model, opt, batches = build(work, batch_size, 40)
keep = model._free_vector_keep(torch.device("cpu"))


def parts(b: dict) -> dict:
    window, length = b["window"], b["window_len"]
    width = window.shape[1]
    times, s = {}, time.perf_counter()
    h = model.hidden(
        window[:, :-1], (length - 1).clamp(min=0), b.get("user_ids"), b["window_items"][:, : width - 1], keep
    )
    valid = torch.arange(1, width)[None, :] < length[:, None]
    target, hv = window[:, 1:][valid], h[valid]
    times["item_transformer_fwd"], s = time.perf_counter() - s, time.perf_counter()
    hd = hv.detach().requires_grad_()
    logits = model.depth_logits(hd, target)
    depth_loss = sum(cross_entropy_sum(lg, target[:, i], None, 0.0) for i, lg in enumerate(logits))
    times["depth_fwd"], s = time.perf_counter() - s, time.perf_counter()
    head_loss = model._item_cross_entropy(hd, b["window_items"][:, 1:][valid], 0.0, keep)
    times["item_head_fwd"], s = time.perf_counter() - s, time.perf_counter()
    depth_loss.backward()
    times["depth_bwd"], s = time.perf_counter() - s, time.perf_counter()
    head_loss.backward()
    times["item_head_bwd"], s = time.perf_counter() - s, time.perf_counter()
    (hv * hd.grad).sum().backward()
    times["item_transformer_bwd"], s = time.perf_counter() - s, time.perf_counter()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    times["clip_and_optimizer"] = time.perf_counter() - s
    return times


for b in batches[:3]:
    parts(b)
timed = batches[3:]
before = resource.getrusage(resource.RUSAGE_SELF)
total: dict = {}
for b in timed:
    for k, v in parts(b).items():
        total[k] = total.get(k, 0.0) + v
after = resource.getrusage(resource.RUSAGE_SELF)
seconds = sum(total.values())
for k, v in total.items():
    print(f"{k:22s} {v / len(timed) * 1e3:7.2f} ms  {v / seconds * 100:5.1f}%")
print(
    f"page faults/step {(after.ru_minflt - before.ru_minflt) / len(timed):.0f}, "
    f"kernel ms/step {(after.ru_stime - before.ru_stime) / len(timed) * 1e3:.1f}"
)
print(f"{seconds / len(timed) * 1e3:.1f} ms/step, {batch_size * len(timed) / seconds:.0f} examples/s")
