"""``genrec info``: versions and which operator backends are built and usable here."""

from __future__ import annotations

import importlib.metadata
import json
import platform

import typer
from rich.console import Console
from rich.table import Table


def environment_info() -> dict:
    """Versions of the stack and, per operator, which backends are built and which can run."""
    import torch

    import genrec
    from genrec.devices import cpu_model
    from genrec.ops import Backend
    from genrec.ops._backends import why_unavailable

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    cuda_ok = torch.cuda.is_available()
    info = {
        "genrec": genrec.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": version("triton"),
        "cuda_available": cuda_ok,
        "device": torch.cuda.get_device_name() if cuda_ok else cpu_model(),
        "extension_loaded": genrec.extension_loaded(),
        "extension_error": genrec.extension_error(),
        "ops": {},
    }
    devices = ["cpu", *(["cuda"] if cuda_ok else [])]
    for op in _OPS:
        built = {
            key: genrec.extension_loaded()
            and torch._C._dispatch_has_kernel_for_dispatch_key(f"genrec::{op}", key)
            for key in ("CPU", "CUDA", "Meta")
        }
        usable = {}
        for dev in devices:
            for b in (Backend.REFERENCE, Backend.CPP, Backend.CUDA, Backend.TRITON):
                reason = why_unavailable(op, b, torch.device(dev))
                usable[f"{b.value}@{dev}"] = reason or "ok"
        info["ops"][op] = {"compiled_kernels": built, "backends": usable}
    return info


_OPS = ("rq_encode", "constrained_beam_step", "build_trie", "dropout_multiplier")


def register(app: typer.Typer) -> None:
    @app.command()
    def info(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
        """Versions of torch, CUDA and Triton, and which backends are built and usable."""
        data = environment_info()
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        console = Console()
        versions = Table(title="genrec environment", show_header=False)
        for key in ("genrec", "python", "torch", "torch_cuda", "triton", "cuda_available", "device"):
            versions.add_row(key, str(data[key]))
        ext = "loaded" if data["extension_loaded"] else f"not loaded: {data['extension_error']}"
        versions.add_row("genrec._C", ext)
        console.print(versions)
        for op, entry in data["ops"].items():
            table = Table(title=f"op {op}")
            table.add_column("backend@device")
            table.add_column("status")
            for name, status in entry["backends"].items():
                table.add_row(name, "[green]ok[/]" if status == "ok" else f"[yellow]{status}[/]")
            kernels = ", ".join(k for k, v in entry["compiled_kernels"].items() if v) or "none"
            table.caption = f"compiled kernels: {kernels}"
            console.print(table)
