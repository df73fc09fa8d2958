"""Stopping a server without cutting anyone off: on SIGTERM (or Ctrl-C) new requests are refused,
running ones get a while to finish, the rest end with an error event, state is saved, and the
process exits 0; a second signal saves and exits at once.

uvicorn alone closes its listener and cuts streams after a few seconds, with no final event or
``[DONE]``; this replaces its signal handling, not its shutdown.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import uvicorn

from adaspec.serve.scheduler import Scheduler

log = logging.getLogger("adaspec")
DEFAULT_DRAIN_S = 30.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server with adaspec's signal handling (see the module doc).

    Args:
        config: uvicorn's configuration (its app an ``OpenAIServer.app``).
        scheduler: the scheduler to drain.
        drain_timeout: seconds running requests get to finish after the first signal.
    """

    def __init__(self, config: uvicorn.Config, scheduler: Scheduler, drain_timeout: float = DEFAULT_DRAIN_S) -> None:
        super().__init__(config)
        self.scheduler = scheduler
        self.drain_timeout = drain_timeout
        self.signals = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Called by uvicorn for SIGINT and SIGTERM: the first drains, a second exits now.

        Args:
            sig: the signal.
            frame: where it arrived.
        """
        self.signals += 1
        name = signal.Signals(sig).name
        if self.signals == 1:
            print(f"adaspec: {name}: refusing new requests; running ones have {self.drain_timeout:g} s to finish "
                  f"(send {name} again to stop at once)", file=sys.stderr, flush=True)
            threading.Thread(target=self._drain, name="adaspec-drain", daemon=True).start()
            return
        print(f"adaspec: {name} again: saving the drafter state and stopping now", file=sys.stderr, flush=True)
        self._save_now()
        os._exit(0)

    def _drain(self) -> None:
        """Drains and stops the scheduler (which saves the state), then lets uvicorn shut down."""
        try:
            self.scheduler.drain(self.drain_timeout)
        except Exception:
            log.exception("adaspec: draining failed")
        finally:
            self.should_exit = True

    def _save_now(self) -> None:
        """Writes the learned state if it changed (never raises: the process is leaving)."""
        saver = self.scheduler.saver
        try:
            if saver is not None:
                saver.save_if_changed()
        except Exception:
            log.exception("adaspec: saving the drafter state failed")
        sys.stderr.flush()
