"""A drafter's learned state kept on disk, so that a server or a repeated ``adaspec generate``
starts where the last one stopped instead of cold.

One ``.npz`` file per (model, drafter spec) under ``$ADASPEC_CACHE/drafter-state``. It is
written atomically (a crash leaves the previous file), its size is bounded by the drafter's
own capacity (the ADED table keeps at most ``capacity`` contexts; Token Recycling's table is
vocabulary x top-K), and a file that is corrupt, too big, or made for another model or drafter
is reported in one line and ignored: learned state only changes speed, never output.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from adaspec.atomic import atomic_writer
from adaspec.backends.base import safe_name
from adaspec.drafters import Drafter
from adaspec.models.cache import cache_root

FORMAT = "adaspec-drafter-state-1"
DEFAULT_MAX_BYTES = 256 << 20  # a state file larger than this is refused at load

log = logging.getLogger("adaspec")


def default_state_dir() -> Path:
    """``$ADASPEC_STATE_DIR``, else ``$ADASPEC_CACHE/drafter-state`` (``~/.cache/adaspec/drafter-state``)."""
    explicit = os.environ.get("ADASPEC_STATE_DIR")
    return Path(explicit) if explicit else cache_root() / "drafter-state"


class DrafterStateStore:
    """Loads and saves one drafter's learned state for one model.

    Args:
        directory: where state files live.
        model_name: the model the state was learned from (part of the file name and checked).
        drafter_spec: the drafter's spec (``hybrid``, ``aded:capacity=4096``...), also checked.
        max_bytes: files larger than this are refused at load.
    """

    def __init__(self, directory: str | Path, model_name: str, drafter_spec: str,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.model_name = model_name
        self.drafter_spec = drafter_spec
        self.max_bytes = max_bytes
        self.path = Path(directory) / safe_name(model_name) / f"{safe_name(drafter_spec)}.npz"

    def load_into(self, drafter: Drafter) -> bool:
        """Gives the drafter the saved state, if there is a usable one.

        Any problem (a file that is corrupt, truncated, oversized, foreign, or whose arrays have
        the wrong shapes or hold tokens outside the vocabulary) is logged as one warning line
        and the drafter is left as it was: learned state only changes speed, so a server starts
        cold rather than not at all.

        Args:
            drafter: the drafter to warm up.

        Returns:
            True when state was loaded.
        """
        if not drafter.learns or not self.path.is_file():
            return False
        before = drafter.state()  # put back if a restore fails part-way
        try:
            size = self.path.stat().st_size
            if size > self.max_bytes:
                raise ValueError(f"it is {size / 1e6:.0f} MB, over the {self.max_bytes / 1e6:.0f} MB cap")
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            meta = {key: str(arrays.pop(f"meta.{key}", "")) for key in ("format", "model", "drafter")}
            if meta["format"] != FORMAT:
                raise ValueError("it is not an adaspec drafter state file")
            if (meta["model"], meta["drafter"]) != (self.model_name, self.drafter_spec):
                raise ValueError(f"it was learned by drafter {meta['drafter']!r} on model {meta['model']!r}")
            drafter.restore(arrays)
        except Exception as error:  # whatever a damaged file makes numpy, zlib or a drafter raise
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("adaspec: ignoring drafter state %s: %s", self.path, reason[:200])
            if before is not None:
                drafter.restore(before)
            return False
        return True

    def save(self, drafter: Drafter) -> bool:
        """Writes the drafter's learned state atomically.

        Args:
            drafter: the drafter to save.

        Returns:
            True when a file was written (False for a drafter that learns nothing, or when the
            folder cannot be written, which is logged in one line).
        """
        if not drafter.learns:
            return False
        return self.save_arrays(drafter.state())

    def save_arrays(self, state: dict[str, np.ndarray]) -> bool:
        """Writes a drafter's learned state (as ``drafter.state()`` gives it) atomically.

        Args:
            state: the arrays.

        Returns:
            True when the file was written (a folder that cannot be written is logged in one line).
        """
        arrays = dict(state)
        arrays.update({"meta.format": np.array(FORMAT), "meta.model": np.array(self.model_name),
                       "meta.drafter": np.array(self.drafter_spec)})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        try:
            with atomic_writer(self.path) as file:
                file.write(buffer.getbuffer())
        except OSError as error:
            log.warning("adaspec: cannot save drafter state to %s: %s", self.path, error.strerror or error)
            return False
        return True


def open_state(drafter: Drafter, directory: str | Path | None, model_name: str,
               drafter_spec: str) -> DrafterStateStore | None:
    """The store that keeps a drafter's learned state between runs, with what it holds already
    loaded into the drafter (a bad file is reported in one line and ignored).

    Args:
        drafter: the drafter to warm up.
        directory: where state files live (None: nothing is kept).
        model_name: the model the state is learned from.
        drafter_spec: the drafter's spec.

    Returns:
        The store (None when nothing is kept).
    """
    if directory is None:
        return None
    store = DrafterStateStore(directory, model_name, drafter_spec)
    if store.load_into(drafter):
        log.info("adaspec: drafter state loaded from %s", store.path)
    return store
