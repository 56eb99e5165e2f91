"""bench/gpu_check_collect.py reads each compute-sanitizer tool's summary line, racecheck's own too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

COLLECT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check_collect.py"


def _collect_module():
    spec = importlib.util.spec_from_file_location("gpu_check_collect", COLLECT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_sanitizer_summary_is_counted_and_an_unfinished_run_is_not(tmp_path):
    logs = {
        "memcheck": "========= ERROR SUMMARY: 0 errors\n",
        "racecheck": "========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warning)\n",
        "synccheck": "========= ERROR SUMMARY: 5 errors\n",
        "initcheck": "========= COMPUTE-SANITIZER\n",  # cut off before its summary
    }
    for tool, text in logs.items():
        (tmp_path / f"sanitizer_{tool}.log").write_text(text)
    (tmp_path / "sanitizer_status.txt").write_text(
        "".join(f"{tool} ran {124 if tool == 'initcheck' else 0} 10.5 25\n" for tool in logs)
    )
    got = _collect_module()._sanitizer(tmp_path)
    assert {tool: (got[tool]["errors"], got[tool]["completed"]) for tool in logs} == {
        "memcheck": (0, True),
        "racecheck": (2, True),
        "synccheck": (5, True),
        "initcheck": (None, False),
    }
    assert got["racecheck"]["racecheck_hazards"] == {"displayed": 3, "errors": 2, "warnings": 1}
    assert got["initcheck"]["timed_out"] and not got["memcheck"]["timed_out"]
