"""The 1M train stage's model, optimizer and first batches, built as the stage builds them (cpu
profile, seed 42, row-sparse item table), and its step, for the step harnesses in this folder's
subfolders (xeon/spin-malloc-ab/step_parts.py, epyc/fused-elementwise/ab.py, epyc/resume/resume_ab.py,
epyc/compile/ab_compile.py)."""

from __future__ import annotations

import glob

import torch

from genrec.config import load_config
from genrec.data import load_prepared
from genrec.models import build_model
from genrec.tokenize.artifacts import load_semantic_ids, read_tokenizer_info
from genrec.train.examples import BatchMaker, build_examples, epoch_batches
from genrec.train.recipe import LossModule, make_optimizer


def build(work: str, batch_size: int = 128, count: int = 40):
    """(model, optimizer, the epoch's first ``count`` batches) from a `genrec bench scale` work folder."""
    config = load_config("configs/tiger_beauty.toml", profile="cpu")
    t = config.train
    ds = load_prepared(f"{work}/prepared")
    tok = glob.glob(f"{work}/cache/tokenize/*")[0]
    codes = load_semantic_ids(tok)
    levels = [int(v) for v in read_tokenizer_info(tok)["level_sizes"]]
    starts, ends = ds.train_bounds()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_model(config.model, levels, t.max_history, len(codes))
    model.sparse_item_grads(True)
    opt = make_optimizer(model, config, torch.device("cpu"), True)
    ex = build_examples(starts, ends, t.max_history, "window")
    maker = BatchMaker(ex, ds.items, codes, torch.device("cpu"))
    batches = [maker(b) for b in epoch_batches(ex, batch_size, 42, 0, True)[:count]]
    model.train()
    return model, opt, batches


def stepper(model, opt):
    """(the loss module, ``step(batch, module=None)``): one training step as the stage takes it
    (forward, backward, clipping at 1.0, the optimizer, gradients cleared); ``module`` stands in for
    the loss module (a compiled one)."""
    loss_module = LossModule(model, 0.0)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch, module=None):
        ((module or loss_module)(batch) / 1000.0).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return loss_module, step
