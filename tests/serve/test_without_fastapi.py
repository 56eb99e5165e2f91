"""The GPU machine has no FastAPI: genrec, the recommend path and the CLI import without it, and
``genrec serve`` says what is missing instead of failing with a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "httpx", "schemathesis"}:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
import genrec, genrec.serve.run, genrec.batch_recommend, genrec.serve.service, genrec.serve.batching
from genrec.cli import app
assert not {"fastapi", "uvicorn"} & {m.split(".")[0] for m in sys.modules}
app(sys.argv[1:])
"""


def test_genrec_imports_and_serve_explains_without_fastapi(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED, "serve", "--run", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "genrec serve needs FastAPI and uvicorn" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
