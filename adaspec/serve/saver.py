"""Saving the drafter's learned state now and then, off the scheduler's step loop."""

from __future__ import annotations

import logging
import threading

from adaspec.session import Session
from adaspec.state_store import DrafterStateStore

log = logging.getLogger("adaspec")


class StateSaver:
    """A thread that writes the session's learned state every ``every`` seconds while it changes.

    The scheduler only marks that something changed. The saver takes a snapshot under the
    session's lock (array copies, milliseconds) and compresses and writes it on its own
    thread, so no stream waits on the disk. A save that fails (a full disk, a folder that went
    away, a bug) is logged and tried again at the next tick. A last save happens at ``stop``.

    Args:
        session: whose drafter is saved.
        store: where to.
        every: seconds between saves.
    """

    def __init__(self, session: Session, store: DrafterStateStore, every: float = 300.0) -> None:
        self.session = session
        self.store = store
        self.every = every
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._writing = threading.Lock()  # one save at a time (the periodic one, shutdown's, a signal's)
        self._thread: threading.Thread | None = None
        self.saves = 0  # files written

    def mark_changed(self) -> None:
        """Notes that the drafter learned something since the last save."""
        self._changed.set()

    def start(self) -> None:
        """Starts the saving thread."""
        self._thread = threading.Thread(target=self._run, name="adaspec-state-saver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and saves what changed since the last save."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.save_if_changed()

    def save_if_changed(self) -> bool:
        """Writes the state if it changed since the last write; a failed write stays pending.

        Returns:
            True when a file was written.
        """
        with self._writing:
            if not self._changed.is_set():
                return False
            self._changed.clear()
            try:
                arrays = self.session.snapshot()
                if arrays is None:
                    return False
                saved = self.store.save_arrays(arrays)
            except Exception:  # a bug must not end the saving thread: logged, tried again next tick
                log.exception("adaspec: saving the drafter state failed")
                saved = False
            if not saved:
                self._changed.set()
                return False
            self.saves += 1
            return True

    def _run(self) -> None:
        while not self._stopping.wait(self.every):
            self.save_if_changed()
