"""Model runtimes and their backends: run one model over a prompt or a draft tree and keep its
KV cache.

``RUNTIMES`` maps each runtime's name (``adaspec.load(backend=...)``, ``--backend``) to its
loader. Adding a runtime is one module (a ``Runtime`` and its ``Backend``, see
``adaspec.backends.base``) and one line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from adaspec.backends.hf import HFBackend
from adaspec.backends.hf_runtime import load_hf
from adaspec.backends.llamacpp_runtime import load_llamacpp
from adaspec.models.loaded import LoadedModel, LoadOptions

RuntimeLoader = Callable[[Path, str, LoadOptions], LoadedModel]  # (model path, name for reports, options)

RUNTIMES: dict[str, RuntimeLoader] = {
    "hf": load_hf,
    "llama.cpp": load_llamacpp,
}

__all__ = ["HFBackend", "RUNTIMES", "RuntimeLoader"]
