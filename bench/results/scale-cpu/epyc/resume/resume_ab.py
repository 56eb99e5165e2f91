"""Step rate of the 1M train stage after a resume (notes: ../../NOTES.md): the optimizer state read
back from a checkpoint and restored by the tree's ``genrec.train.checkpoint.restore_optimizer``
(before 4 December's fix it kept ``safetensors.torch.load_file``'s copy-on-write map of the file),
or copied into the process's own memory first, against a run that never stopped.

    python resume_ab.py WORK save CKPT            # 20 steps, then the model and optimizer to CKPT/
    python resume_ab.py WORK MODE CKPT [STEPS]    # MODE: tree | copied | fresh; prints one JSON line

Each MODE runs in its own process, on the same batches after the saved ones; run them alternately.
"""

import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/results/scale-cpu
from train_stage_setup import build, stepper

from genrec.train import checkpoint as ckpt

work, mode, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 300
model, opt, batches = build(work, 128, 20 + steps)
names = {p: n for n, p in model.named_parameters()}
_, step = stepper(model, opt)


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime


if mode == "save":
    for b in batches[:20]:
        step(b)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save_model(out / "model.safetensors", model)
    tensors, groups = ckpt.optimizer_tensors(opt, names)
    ckpt.atomic_save_tensors(out / "optimizer.safetensors", tensors)
    (out / "groups.json").write_text(json.dumps(groups))
    sys.exit(0)

if mode == "fresh":  # the run that never stopped: its own 20 steps, in this process
    for b in batches[:20]:
        step(b)
else:
    ckpt.load_model_weights(out / "model.safetensors", model)
    tensors = ckpt.read_tensors(out / "optimizer.safetensors")
    if mode == "copied":
        tensors = {k: v.clone() for k, v in tensors.items()}
    ckpt.restore_optimizer(opt, tensors, json.loads((out / "groups.json").read_text()), names)
    del tensors
times, faults, system = [], [], []
for b in batches[20:]:
    f0, s0 = usage()
    t = time.perf_counter()
    step(b)
    times.append(time.perf_counter() - t)
    f1, s1 = usage()
    faults.append(f1 - f0)
    system.append(s1 - s0)
blocks = [times[i : i + 50] for i in range(0, len(times), 50)]
print(
    json.dumps(
        {
            "mode": mode,
            "steps": len(times),
            "median_ms_per_50": [round(statistics.median(x) * 1e3, 1) for x in blocks],
            "median_ms": round(statistics.median(times) * 1e3, 1),
            "faults_per_step_per_50": [round(statistics.mean(faults[i : i + 50])) for i in range(0, len(faults), 50)],
            "system_ms_per_step": round(sum(system) / len(system) * 1e3, 2),
        }
    )
)
