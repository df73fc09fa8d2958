"""Writing a file so that readers see the old content or the new, never half of either."""

from __future__ import annotations

import os
import shutil
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


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Stages a folder beside ``target``; on a clean exit it becomes ``target`` in one step.

    A reader never sees a half-written folder. If another process put ``target`` in place
    first, its folder is kept and this one dropped. The staging folder is always removed.

    Args:
        target: the folder to create; its parent is created if missing.

    Yields:
        The staging folder, empty, to fill.

    Raises:
        OSError: if the folder cannot be created or moved into place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():  # not a concurrent writer that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
