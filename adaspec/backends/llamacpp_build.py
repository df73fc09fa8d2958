"""The installed llama.cpp build (llama-cpp-python): importing it, and what it was compiled with."""

from __future__ import annotations

import ctypes
from pathlib import Path

from adaspec.errors import AdaspecError

INSTALL_HINT = "install it with: make llamacpp (builds llama-cpp-python for this CPU, ~12 min once)"


def llama_cpp_module():
    """The ``llama_cpp`` package, imported on first use.

    Returns:
        The module.

    Raises:
        AdaspecError: when llama-cpp-python is not installed.
    """
    try:
        import llama_cpp
    except ImportError:
        raise AdaspecError(f"the llama.cpp backend needs llama-cpp-python; {INSTALL_HINT}") from None
    return llama_cpp


# what ggml's CPU library says it was compiled with (``ggml_cpu_has_<feature>``)
BUILD_FEATURES = ("llamafile", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_int8")


def build_features() -> dict[str, bool] | None:
    """The installed llama.cpp build's compile-time CPU features, asked of the build itself.

    Returns:
        Feature name -> compiled in, or None when the build's CPU library cannot be asked (an
        unknown layout, such as one library per CPU variant).
    """
    folder = Path(llama_cpp_module().__file__).parent / "lib"
    for name in ("libggml-cpu.so", "libggml-cpu.dylib", "ggml-cpu.dll"):
        if (folder / name).is_file():
            try:
                library = ctypes.CDLL(str(folder / name))
                features = {}
                for feature in BUILD_FEATURES:
                    probe = getattr(library, f"ggml_cpu_has_{feature}")
                    probe.restype = ctypes.c_int
                    features[feature] = probe() != 0
            except (OSError, AttributeError):
                return None
            return features
    return None


def build_is_batch_invariant() -> bool | None:
    """Whether the installed llama.cpp computes a token's logits the same in a batch as alone.

    llamafile's sgemm, used for batches of 2+ rows, sums in another order than the one-row
    kernel; a build without it (``-DGGML_LLAMAFILE=OFF``) has one kernel for every batch size.
    The answer comes from the build itself (``build_features``).

    Returns:
        True or False, or None when the build cannot be asked.
    """
    features = build_features()
    return None if features is None else not features["llamafile"]


def build_label() -> str:
    """A short name of the build's instruction set, for profile keys (``avx512``, ``avx2``...)."""
    features = build_features() or {}
    isa = "avx512" if features.get("avx512") else "avx2" if features.get("avx2") else "generic"
    return isa + ("-amx" if features.get("amx_int8") else "") + ("-llamafile" if features.get("llamafile") else "")
