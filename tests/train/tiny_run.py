"""A tiny training run on the synthetic world, as its own process (for the kill/resume and torchrun tests).

python -m tests.train.tiny_run --run-dir DIR [--resume] [--set section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from genrec.serve.beam import BeamSearchRecommender
from genrec.train import distributed
from genrec.train.inputs import TrainInputs
from genrec.train.trainer import fit
from tests.train.helpers import exhaustive_search, synthetic_world, tiny_config


def inputs_for_world(num_users: int = 60):
    offsets, flat, codes, level_sizes = synthetic_world(num_users=num_users)
    starts, ends = offsets[:-1], offsets[1:]
    return TrainInputs(
        flat_items=flat,
        train_starts=starts,
        train_ends=ends - 2,
        valid_users=np.arange(len(starts)),
        valid_starts=starts,
        valid_ends=ends - 2,
        valid_targets=flat[ends - 2],
        codes=codes,
        level_sizes=level_sizes,
        fingerprints={"dataset": "synthetic", "tokenizer": "synthetic"},
    )


def validator(inputs: TrainInputs, beam: int):
    codes_t = torch.as_tensor(inputs.codes)

    def validate(model, users, starts, ends, targets):
        rec = BeamSearchRecommender(model, inputs.codes, beam_size=beam, index=codes_t, search=exhaustive_search)
        return rec.ranking_sums(inputs.flat_items, starts, ends, targets, users)

    return validate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = tiny_config(*args.overrides)
    device = torch.device("cpu")
    info = distributed.setup(device)
    inputs = inputs_for_world()
    result = fit(
        config,
        inputs,
        args.run_dir,
        device=device,
        dist_info=info,
        resume=args.resume,
        validate_fn=validator(inputs, config.train.val_beam),
        progress=False,
    )
    if info.is_main:
        summary = {"steps": result.steps, "best": result.best, "stopped": result.stopped_because}
        (args.run_dir / "tiny_result.json").write_text(json.dumps(summary))
    distributed.cleanup(info)


if __name__ == "__main__":
    main()
