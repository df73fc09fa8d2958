"""The threads that prepare requests before the scheduler sees them (parse, template, tokenize),
each with a tokenizer of its own: a fast tokenizer is not safe to share, and the scheduler's
thread decodes with the model's."""

from __future__ import annotations

import copy
import logging
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger("adaspec")
PREPARING_THREADS = 2


class Preparer:
    """A bounded pool of preparation threads.

    Work waits in the pool's queue; how much may wait is bounded by the caller (the scheduler
    counts every request being prepared against its waiting limit).

    Args:
        tokenizer: the model's tokenizer; each thread gets a copy.
        threads: how many requests are prepared at once.
    """

    def __init__(self, tokenizer: Any, threads: int = PREPARING_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"a preparer needs at least one thread, got {threads}")
        self._tokenizers: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(threads):  # copied now, not on a first request's time
            self._tokenizers.put(copy.deepcopy(tokenizer))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="adaspec-prepare")

    def run(self, work: Callable[[Any], None]) -> bool:
        """Queues work for a preparation thread.

        Args:
            work: called with that thread's tokenizer; it must handle its own errors (one that
                escapes is logged).

        Returns:
            False when the pool is closed (the work will not run).
        """
        try:
            self._pool.submit(self._call, work)
        except RuntimeError:  # shut down
            return False
        return True

    def _call(self, work: Callable[[Any], None]) -> None:
        tokenizer = self._tokenizers.get()  # never waits: one tokenizer per thread
        try:
            work(tokenizer)
        except Exception:
            log.exception("adaspec: preparing a request failed")
        finally:
            self._tokenizers.put(tokenizer)

    def close(self) -> None:
        """Drops queued work (its requests' handlers see the scheduler stopped) and lets running work end."""
        self._pool.shutdown(wait=False, cancel_futures=True)
