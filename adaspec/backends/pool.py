"""A bounded pool of backends: one per request in flight, a few kept warm between requests."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from adaspec.backends.base import Backend
from adaspec.errors import AdaspecError


class BackendPool:
    """Hands each request a backend of its own and takes it back when the request ends.

    At most ``max_in_use`` backends are held by requests at once (each holds a KV cache); at
    most ``max_idle`` are kept between requests (their caches allocated, holding their last
    request's positions for a prompt that shares its prefix), the rest are closed, and ``trim``
    closes idle ones on demand (a server does after an idle spell).

    Args:
        factory: makes a new backend.
        max_in_use: the most requests in flight.
        max_idle: the most backends kept while no request holds them.
        first: a backend already made (kept as the first idle one).

    Raises:
        AdaspecError: for limits below 1.
    """

    def __init__(self, factory: Callable[[], Backend], max_in_use: int = 64, max_idle: int = 2,
                 first: Backend | None = None) -> None:
        if max_in_use < 1 or max_idle < 0:
            raise AdaspecError(f"a backend pool needs max_in_use >= 1 and max_idle >= 0, got {max_in_use}, {max_idle}")
        self.factory = factory
        self.max_in_use = max_in_use
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[Backend] = []  # most recently returned last
        self.in_use = 0
        self.prototype = first if first is not None else factory()  # answers what the runtime is (name, defaults)
        self._idle.append(self.prototype)

    @property
    def idle(self) -> int:
        """Backends kept warm now."""
        return len(self._idle)

    @property
    def idle_backends(self) -> tuple[Backend, ...]:
        """The backends kept warm now, least recently used first (to inspect, not to use)."""
        with self._lock:
            return tuple(self._idle)

    def acquire(self, prompt_ids: np.ndarray | None = None) -> Backend:
        """A backend no other request holds: the idle one whose cache holds the longest prefix of
        ``prompt_ids`` (a chat's earlier turns), else the most recently used one.

        Args:
            prompt_ids: ``[p]`` the prompt the backend will run, or None.

        Raises:
            AdaspecError: when ``max_in_use`` requests already hold one.
        """
        with self._lock:
            if self.in_use >= self.max_in_use:
                raise AdaspecError(f"{self.in_use} requests are in flight, the most this generator allows; "
                                   "finish or close one first")
            self.in_use += 1
            if self._idle:
                best = len(self._idle) - 1
                if prompt_ids is not None:
                    held = [backend.cached_prefix(prompt_ids) for backend in self._idle]
                    best = max(range(len(held)), key=lambda i: (held[i], i))
                return self._idle.pop(best)
        try:
            return self.factory()
        except BaseException:
            with self._lock:
                self.in_use -= 1
            raise

    def release(self, backend: Backend) -> None:
        """Takes a backend back: its request's cache is freed, the backend kept or closed.

        Args:
            backend: from ``acquire``.
        """
        backend.release()
        with self._lock:
            self.in_use -= 1
            if len(self._idle) < self.max_idle:
                self._idle.append(backend)
                return
        backend.close()

    def trim(self, keep: int = 0) -> int:
        """Closes idle backends beyond ``keep`` (the least recently used first).

        Args:
            keep: idle backends to keep.

        Returns:
            How many were closed.
        """
        with self._lock:
            surplus = self._idle[: max(0, len(self._idle) - keep)]
            del self._idle[: len(surplus)]
        for backend in surplus:
            backend.close()
        return len(surplus)
