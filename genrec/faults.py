"""Fault injection for the crash-safety tests: ``GENREC_FAULT_AT=<label>[#<n>]`` kills the process
(SIGKILL, no clean-up) the n-th time (default: the first) it reaches ``fault_point(label)``.

Inert unless the variable is set: one dictionary lookup per call.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "GENREC_FAULT_AT"
_hits: dict[str, int] = {}


def fault_point(label: str) -> None:
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("#")
    if name != label:
        return
    _hits[label] = _hits.get(label, 0) + 1
    if _hits[label] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
