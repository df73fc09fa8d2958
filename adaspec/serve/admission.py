"""How requests get into the scheduler and how it lets them go: a place is held for each from
before its body is read (counted against the limits all along), the request is prepared on a
preparation thread, then queued; a draining server takes no new ones.

``Admission`` is the scheduler's half that other threads call (``reserve``, ``submit_prepared``,
``drain``); the scheduling thread takes queued requests from ``_waiting``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from typing import Any, Callable

from adaspec.engine import Generator
from adaspec.errors import AdaspecError, first_line
from adaspec.request import Request
from adaspec.serve.errors import RequestError
from adaspec.serve.jobs import ErrorEvent, Job, JobSpec
from adaspec.serve.metrics import ServerMetrics
from adaspec.serve.prepare import Preparer

Prepare = Callable[[Any], tuple[JobSpec, Request]]  # given a tokenizer: what was asked, and the opened request


class ServerBusy(Exception):
    """Raised by ``reserve`` when every slot and every queue place is taken."""


class SchedulerDown(Exception):
    """Raised by ``reserve`` when the scheduling thread is not running (stopped or crashed)."""


class ShuttingDown(Exception):
    """Raised by ``reserve`` while the server drains before it stops."""


class Ticket:
    """A place held for one request from before its body is read until it is queued or refused
    (counted against the waiting limit all along).

    Args:
        release: gives the place back.
    """

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self._held = True

    def release(self) -> None:
        """Gives the place back (idempotent)."""
        if self._held:
            self._held = False
            self._release()


class Admission:
    """The places of one scheduler: held, being prepared, queued or decoding (see the module doc).

    Args:
        generator: opens requests (``submit``).
        metrics: where refusals are counted.
        max_active: requests decoded at once.
        max_waiting: requests held beyond those (being read, prepared or queued); more are
            refused with ``ServerBusy``.
        preparer: the threads that prepare requests (default: ``Preparer`` over the model's tokenizer).
    """

    def __init__(self, generator: Generator, metrics: ServerMetrics, max_active: int, max_waiting: int,
                 preparer: Preparer | None = None) -> None:
        self.generator = generator
        self.metrics = metrics
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.preparer = preparer if preparer is not None else Preparer(generator.model.tokenizer)
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._reserved = 0  # places held by requests being read or prepared
        self._wake = threading.Condition()  # guards the above; the scheduling thread waits on it
        self._stopping = False
        self._draining = False
        self._ids = itertools.count(1)

    @property
    def alive(self) -> bool:
        """True while the scheduling thread runs (the scheduler says)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ends every request and stops (the scheduler does)."""
        raise NotImplementedError

    @property
    def draining(self) -> bool:
        """True once ``drain`` began: new requests are refused."""
        return self._draining or self._stopping

    @property
    def in_flight(self) -> int:
        """Requests held now: being read or prepared, queued, or decoding."""
        with self._wake:
            return self._reserved + len(self._waiting) + len(self._active)

    def drain(self, timeout: float) -> bool:
        """Refuses new requests, gives those held up to ``timeout`` seconds to finish, then stops
        (the rest end with a 503: an error event and ``[DONE]`` on a stream).

        Args:
            timeout: seconds to wait.

        Returns:
            True when every request finished in time.
        """
        with self._wake:
            self._draining = True
        deadline = time.monotonic() + timeout
        while self.in_flight and self.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        drained = self.in_flight == 0
        self.stop()
        return drained

    def reserve(self) -> Ticket:
        """Holds a place for a request about to be read (before its body is).

        Returns:
            The ticket; pass it to ``submit_prepared``, or release it.

        Raises:
            ServerBusy: when all slots and queue places are taken.
            ShuttingDown: while the server drains.
            SchedulerDown: when the scheduling thread is not running.
        """
        if not self.alive:
            self.metrics.request_rejected("scheduler_down")
            raise SchedulerDown()
        with self._wake:
            if self._draining or self._stopping:
                self.metrics.request_rejected("shutting_down")
                raise ShuttingDown()
            if self._reserved + len(self._waiting) + len(self._active) >= self.max_active + self.max_waiting:
                self.metrics.request_rejected("queue_full")
                raise ServerBusy()
            self._reserved += 1
            self._count()
        return Ticket(self._unreserve)

    def _unreserve(self) -> None:
        with self._wake:
            self._reserved -= 1
            self._count()

    def submit_prepared(self, ticket: Ticket, prepare: Prepare, loop: asyncio.AbstractEventLoop) -> Job:
        """Hands in a request: ``prepare`` runs on a preparation thread, then the request queues.

        Args:
            ticket: from ``reserve``; released when the request queues or is refused.
            prepare: given that thread's tokenizer, returns what was asked and the opened
                request; a ``RequestError`` or ``AdaspecError`` it raises becomes the job's 4xx.
            loop: the caller's event loop, which receives the job's events.

        Returns:
            The job; read its ``events``.
        """
        job = Job(None, asyncio.Queue(), loop, id=next(self._ids))
        if not self.preparer.run(lambda tokenizer: self._prepare(job, ticket, prepare, tokenizer)):
            ticket.release()
            job.send(ErrorEvent(503, "the server is shutting down"))
        return job

    def submit(self, spec: JobSpec, loop: asyncio.AbstractEventLoop) -> Job:
        """Queues a request already checked for shape (``reserve`` and ``submit_prepared`` in one).

        Args:
            spec: what was asked.
            loop: the caller's event loop, which receives the job's events.

        Returns:
            The job; read its ``events``.

        Raises:
            ServerBusy, ShuttingDown, SchedulerDown: as ``reserve``.
        """
        return self.submit_prepared(self.reserve(), lambda tokenizer: (spec, self.generator.open(
            spec.prompt, spec.options, tokenizer=tokenizer)), loop)

    def _prepare(self, job: Job, ticket: Ticket, prepare: Prepare, tokenizer: Any) -> None:
        """On a preparation thread: opens the request and queues it, or answers with its error."""
        try:
            job.spec, job.request = prepare(tokenizer)
        except RequestError as error:
            self._refuse(job, ticket, ErrorEvent(error.status, error.message, error.param, error.code))
            return
        except AdaspecError as error:
            self._refuse(job, ticket, ErrorEvent(400, str(error)))
            return
        except Exception as error:  # a chat template that rejects the messages, for one
            self._refuse(job, ticket, ErrorEvent(400, f"cannot prepare the prompt: {first_line(error)}"))
            return
        with self._wake:
            ticket.release()  # under the lock: the place passes to the queue with no gap
            if self._stopping:
                job.send(ErrorEvent(503, "the server is shutting down"))
                return
            self._waiting.append(job)
            self._count()
            self._wake.notify()

    def _refuse(self, job: Job, ticket: Ticket, event: ErrorEvent) -> None:
        ticket.release()
        self.metrics.request_failed("bad_request" if event.status < 500 else "internal")
        job.send(event)

    def _count(self) -> None:
        self.metrics.queue_changed(self._reserved + len(self._waiting), len(self._active))

