"""The cache folder for files derived from models (conversions, tokenizers, digests, profiles)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from adaspec.atomic import atomic_writer


def cache_root() -> Path:
    """Where converted models and measurements are kept: ``$ADASPEC_CACHE`` or ``~/.cache/adaspec``."""
    return Path(os.environ.get("ADASPEC_CACHE") or Path.home() / ".cache" / "adaspec")


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, computed once per file version.

    The digest is remembered under ``$ADASPEC_CACHE/digests``, keyed by the file's resolved
    path, size and modification time, so loading a multi-GB GGUF does not read it again.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = cache_root() / "digests" / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.json"
    try:
        stored = json.loads(memo.read_text())
        if stored.get("identity") == identity and len(stored.get("sha256", "")) == 64:
            return stored["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    try:
        with atomic_writer(memo) as file:
            file.write(json.dumps({"identity": identity, "sha256": digest.hexdigest()}).encode())
    except OSError:
        pass  # the digest is only remembered to save time
    return digest.hexdigest()
