"""What a benchmark ran on: machine and library versions, for the report."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Sequence

import torch
import transformers

from adaspec.bench.prompts import BenchPrompt
from adaspec.bench.runner import peak_rss_mb


def cpuinfo_field(name: str) -> str | None:
    """The first value of a field of ``/proc/cpuinfo`` (Linux), None elsewhere or when absent."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` says."""
    return cpuinfo_field("model name") or platform.processor() or "unknown"


def vector_isa() -> str:
    """The widest vector instructions the CPU offers (Linux flags): ``amx``, ``avx512``, ``avx2`` or ``other``."""
    flags = set((cpuinfo_field("flags") or "").split())
    for name, flag in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return name
    return "other"


def machine_description() -> dict:
    """Platform, CPU, threads, accelerator and this process's peak memory."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "isa": vector_isa(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def versions() -> dict:
    """Versions of Python, torch, transformers, adaspec and, when installed, llama-cpp-python."""
    from adaspec import __version__

    found = {"python": platform.python_version(), "torch": torch.__version__,
             "transformers": transformers.__version__, "adaspec": __version__}
    try:
        found["llama-cpp-python"] = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def report_meta(command: str, model_name: str, prompts: Sequence[BenchPrompt], method_names: Sequence[str],
                new_tokens: int, budget: int, dtype: str, device: str, temperature: float = 0.0,
                backend: str = "hf") -> dict:
    """Everything a report records besides the runs.

    Args:
        command: the command line that made the report.
        model_name: the model's name or path.
        prompts: the prompt turns run.
        method_names: the methods run, baseline first.
        new_tokens, budget, dtype, device, temperature: the run's settings.
        backend: the runtime (``hf``, ``llama.cpp exact`` or ``llama.cpp fast``).

    Returns:
        A JSON-ready dict: command, model, config, machine and library versions.
    """
    return {
        "command": command,
        "model": model_name,
        "config": {"new_tokens": new_tokens, "budget": budget, "dtype": dtype, "device": device, "temperature": temperature, "backend": backend,
                   "categories": sorted({p.category for p in prompts}), "methods": list(method_names),
                   "prompts": len(prompts), "generations": sum(len(p.turns) for p in prompts)},
        "machine": machine_description(),
        "versions": versions(),
    }
