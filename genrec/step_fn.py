"""The one type the models and the decoder share (docs/contracts.md, "the decoding contract").

``step_fn(prefix, parents) -> logits``: ``prefix`` int64 [U, B, t] holds each beam's tokens so
far, ``parents`` int64 [U, B] which beam of the previous step each beam extends; the result is
the next token's logits [U, B, V_t]. Models build one per batch of users; the decoder calls it
once per level, in order. It lives here, outside both packages, because neither may import the
other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
