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

    Each backend is tagged with the *partition* of the request that last held it (a server's
    scope and cache salt). A request reuses cached positions only from its own partition: a
    backend from another one is made to forget what it holds first, so neither the reused
    length (``cached_tokens``) nor the time to the first token tells one partition anything
    about another's prompts.

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
        self._partition: dict[int, str] = {}  # id(backend) -> the partition of the request that last held it
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

    def acquire(self, prompt_ids: np.ndarray | None = None, partition: str = "") -> Backend:
        """A backend no other request holds: of the idle ones in ``partition``, the one whose
        cache holds the longest prefix of ``prompt_ids`` (a chat's earlier turns), else the most
        recently used; without one in the partition, the least recently used of another
        partition, made to forget what it holds; else a new one.

        Args:
            prompt_ids: ``[p]`` the prompt the backend will run, or None.
            partition: whose cached positions the request may reuse (``""``: everyone's that
                also use ``""``).

        Raises:
            AdaspecError: when ``max_in_use`` requests already hold one.
        """
        with self._lock:
            if self.in_use >= self.max_in_use:
                raise AdaspecError(f"{self.in_use} requests are in flight, the most this generator allows; "
                                   "finish or close one first")
            self.in_use += 1
            own = [i for i, backend in enumerate(self._idle) if self._partition.get(id(backend), "") == partition]
            if own:
                best = own[-1]
                if prompt_ids is not None:
                    held = {i: self._idle[i].cached_prefix(prompt_ids) for i in own}
                    best = max(own, key=lambda i: (held[i], i))
                return self._tag(self._idle.pop(best), partition)
            if self._idle:
                backend = self._idle.pop(0)
                backend.forget()
                return self._tag(backend, partition)
        try:
            return self._tag(self.factory(), partition)
        except BaseException:
            with self._lock:
                self.in_use -= 1
            raise

    def _tag(self, backend: Backend, partition: str) -> Backend:
        """Records which partition a backend now serves (and returns it)."""
        self._partition[id(backend)] = partition
        return backend

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
            self._partition.pop(id(backend), None)
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
                self._partition.pop(id(backend), None)
        for backend in surplus:
            backend.close()
        return len(surplus)
