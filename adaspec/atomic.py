"""Writing a file so that readers see the old content or the new, never half of either."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Opens a staging file beside ``path``; on a clean exit it replaces ``path`` in one step.

    The staging file is flushed to disk before the rename; if the block raises, it is removed
    and ``path`` is left as it was.

    Args:
        path: the file to write; its folder is created if missing.

    Yields:
        The staging file, open for binary writing.

    Raises:
        OSError: if the folder cannot be created or written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: the file to write.
        text: its new content.

    Raises:
        OSError: if it cannot be written.
    """
    with atomic_writer(path) as file:
        file.write(text.encode("utf-8"))
