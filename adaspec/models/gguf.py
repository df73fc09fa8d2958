"""GGUF files read by transformers: the file's own tokenizer, and float32 weights for the ``hf``
runtime, each converted once per file content and cached as a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from adaspec.atomic import atomic_directory
from adaspec.errors import AdaspecError, first_line
from adaspec.models.cache import cache_root, file_digest


def check_gguf(path: Path) -> None:
    """Checks that a file is a GGUF model.

    Args:
        path: the file.

    Raises:
        AdaspecError: unless ``path`` starts with the GGUF magic bytes.
    """
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise AdaspecError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def cached_folder(path: Path, kind: str) -> Path:
    """Where a conversion of a GGUF file is cached (one folder per file content).

    Args:
        path: the ``.gguf`` file.
        kind: ``models`` or ``tokenizers``.

    Returns:
        The folder (which may not exist yet).
    """
    return cache_root() / kind / f"{path.stem}-{file_digest(path)[:16]}"


def convert_gguf(path: Path) -> Path:
    """Dequantises a GGUF file into a cached Hugging Face folder (once per file content).

    Args:
        path: the ``.gguf`` file.

    Returns:
        The cached folder.

    Raises:
        AdaspecError: if the file is not a GGUF model transformers can read.
    """
    check_gguf(path)
    target = cached_folder(path, "models")
    if (target / "config.json").is_file():
        return target
    with atomic_directory(target) as staging:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for unreadable files
            raise AdaspecError(f"cannot read model file {path}: {first_line(exc)}") from None
        # A GGUF-loaded model is flagged as quantised and refuses save_pretrained; rebuild a plain
        # float32 model from the same config and copy the dequantised weights over.
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        plain = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config_dict), dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict(), strict=True)
        plain.generation_config = quantised.generation_config
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def gguf_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer stored in a GGUF file, read by transformers once and cached.

    Args:
        path: the ``.gguf`` file.

    Returns:
        The tokenizer.

    Raises:
        AdaspecError: if transformers cannot read a tokenizer from the file.
    """
    check_gguf(path)
    target = cached_folder(path, "tokenizers")
    if not (target / "tokenizer_config.json").is_file():
        with atomic_directory(target) as staging:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            except Exception as exc:  # transformers raises many types for unreadable files
                raise AdaspecError(f"cannot read a tokenizer from {path}: {first_line(exc)}") from None
            tokenizer.save_pretrained(staging)
    return AutoTokenizer.from_pretrained(target, local_files_only=True)
