"""The server's scheduler: one thread that owns the model and advances every active request by
one speculative step in turn (continuous scheduling), so a long request never blocks a short one.

HTTP handlers live on the asyncio loop; they ``submit`` a ``Job`` and read its events from an
``asyncio.Queue`` that the scheduler fills thread-safely. Everything a request owns (its KV
cache, context, output, random numbers) is on its ``Request``; the drafter's learned tables and
the sizer's calibration are shared, and only this thread touches them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from adaspec.backends.base import BatchVerifier
from adaspec.engine import Generator, Prompt
from adaspec.errors import AdaspecError
from adaspec.memory import return_freed_memory
from adaspec.options import RequestOptions
from adaspec.request import Generation, Request
from adaspec.serve.metrics import ServerMetrics
from adaspec.serve.saver import StateSaver

log = logging.getLogger("adaspec")
T = TypeVar("T")
FIRST_TEXT_WAIT_S = 0.05  # the longest the scheduler waits for a stream's first text to be written


class ServerBusy(Exception):
    """Raised by ``submit`` when every slot and every queue place is taken."""


class SchedulerDown(Exception):
    """Raised by ``submit`` when the scheduling thread is not running (stopped or crashed)."""


@dataclass(frozen=True)
class JobSpec:
    """What a client asked for, already checked for shape and type.

    Attributes:
        prompt: text, chat messages or token ids.
        options: how to generate (``chat`` False for completions).
        stream: the client reads text as it comes (its first piece is a time to first token).
    """

    prompt: Prompt
    options: RequestOptions
    stream: bool = False


@dataclass(frozen=True)
class Event:
    """One message from the scheduler to a request's HTTP handler.

    Attributes:
        kind: ``started`` (data: prompt tokens), ``text`` (data: a text piece), ``done``
            (data: the Generation) or ``error`` (data: (HTTP status, message)).
        data: as described for each kind.
        delivered: set by the handler once it has written this event's text to the connection
            (None: nobody waits for that).
    """

    kind: str
    data: Any = None
    delivered: threading.Event | None = None


@dataclass
class Job:
    """A submitted request as both sides see it.

    Attributes:
        spec: what was asked.
        events: filled by the scheduler, read by the handler.
        loop: the handler's event loop.
        arrived: ``time.monotonic()`` at submission.
        cancelled: set by the handler when the client goes away.
        request: the decoding request once admitted.
        last_output: ``time.monotonic()`` of its latest output.
        id: its number, for logs.
        first_text: for a stream, set by the handler once the first text is written (None until sent).
    """

    spec: JobSpec
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    request: Request | None = None
    last_output: float = 0.0
    id: int = 0
    first_text: threading.Event | None = None

    def send(self, kind: str, data: Any = None, delivered: threading.Event | None = None) -> None:
        """Hands an event to the handler's loop (safe from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, Event(kind, data, delivered))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class Scheduler:
    """Runs requests on one Generator, step by step, in a thread of its own.

    Args:
        generator: the model and the shared drafter.
        metrics: where to record what happens.
        max_active: requests decoded at once (each holds a KV cache).
        max_waiting: requests queued beyond those; more are refused with ``ServerBusy``.
        request_timeout: seconds from arrival after which a request is ended with an error.
        saver: saves the drafter's learned state now and then, on a thread of its own (None: not kept).
        batch: verifies every active request's tree in one forward (None: one request at a
            time); its results equal each request's batch-of-one results by construction.
        idle_release: seconds without any request after which idle caches are freed and freed
            memory is handed back to the system.
        first_text_wait: the most seconds the scheduler waits, before the next forward, for a
            stream's first text to be written to its connection.
    """

    def __init__(self, generator: Generator, metrics: ServerMetrics, max_active: int = 8, max_waiting: int = 64,
                 request_timeout: float = 600.0, saver: StateSaver | None = None,
                 batch: BatchVerifier | None = None, idle_release: float = 20.0,
                 first_text_wait: float = FIRST_TEXT_WAIT_S) -> None:
        if max_active < 1 or max_waiting < 0 or request_timeout <= 0 or idle_release <= 0:
            raise AdaspecError("need max_active >= 1, max_waiting >= 0, a positive request timeout and idle release")
        self.generator = generator
        self.metrics = metrics
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.request_timeout = request_timeout
        self.saver = saver
        self.batch = batch
        self.idle_release = idle_release
        self.first_text_wait = first_text_wait
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._idle_since = time.monotonic()  # when the last request ended (or the scheduler started)
        self._released = True  # idle memory already handed back since then

    @property
    def alive(self) -> bool:
        """True while the scheduling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Starts the scheduling thread (and the state saver's)."""
        self._thread = threading.Thread(target=self._run, name="adaspec-scheduler", daemon=True)
        self._thread.start()
        if self.saver is not None:
            self.saver.start()

    def stop(self) -> None:
        """Ends every request, stops the thread and saves the learned state."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        if self.saver is not None:
            self.saver.stop()

    def submit(self, spec: JobSpec, loop: asyncio.AbstractEventLoop) -> Job:
        """Queues a request.

        Args:
            spec: what was asked.
            loop: the caller's event loop, which receives the job's events.

        Returns:
            The job; read its ``events``.

        Raises:
            ServerBusy: when all slots and queue places are taken, or the server is stopping.
            SchedulerDown: when the scheduling thread is not running.
        """
        if not self.alive:
            self.metrics.rejected.labels(self.metrics.model_name, "scheduler_down").inc()
            raise SchedulerDown()
        job = Job(spec, asyncio.Queue(), loop, id=next(self._ids))
        with self._wake:
            if self._stopping or len(self._waiting) + len(self._active) >= self.max_active + self.max_waiting:
                reason = "stopping" if self._stopping else "queue_full"
                self.metrics.rejected.labels(self.metrics.model_name, reason).inc()
                raise ServerBusy()
            self._waiting.append(job)
            self.metrics.waiting.labels(self.metrics.model_name).set(len(self._waiting))
            self._wake.notify()
        return job

    def _run(self) -> None:
        reason = "the server is shutting down"
        try:
            while True:
                with self._wake:
                    while not self._stopping and not self._waiting and not self._active and not self._release_due():
                        self._wake.wait(timeout=self._seconds_to_release())
                    if self._stopping:
                        break
                    idle = not self._waiting and not self._active
                if idle:  # outside the lock: submit() is never held up by it
                    self._release_idle_memory()
                    continue
                self._admit_waiting()
                if self.batch is None:
                    for job in list(self._active):
                        self._admit_waiting()  # between steps, so a new request waits at most one step
                        if self._still_wanted(job):
                            self._advance(job)
                else:
                    self._advance_together([job for job in list(self._active) if self._still_wanted(job)])
        except Exception as error:  # a bug in the loop itself: logged; every request fails, new ones are refused
            log.exception("adaspec: the scheduler stopped")
            reason = f"the scheduler stopped: {type(error).__name__}: {error}"
        finally:
            with self._wake:
                self._stopping = True
                jobs = self._active + list(self._waiting)
                self._active.clear()
                self._waiting.clear()
            for job in jobs:
                job.send("error", (503, reason))
                if job.request is not None:
                    job.request.close()

    def _admit_waiting(self) -> None:
        """Starts queued requests while slots are free: encode, check, prefill, first token."""
        while len(self._active) < self.max_active:
            with self._wake:
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self.metrics.waiting.labels(self.metrics.model_name).set(len(self._waiting))
            if job.cancelled.is_set():
                self.metrics.failed.labels(self.metrics.model_name, "disconnected").inc()
                continue
            try:
                request = self.generator.open(job.spec.prompt, job.spec.options)
            except AdaspecError as error:
                self.metrics.failed.labels(self.metrics.model_name, "bad_request").inc()
                job.send("error", (400, str(error)))
                continue
            except Exception as error:  # a chat template that rejects the messages, for one
                self.metrics.failed.labels(self.metrics.model_name, "bad_request").inc()
                job.send("error", (400, f"cannot prepare the prompt: {str(error).splitlines()[0] if str(error) else type(error).__name__}"))
                continue
            job.request = request
            self._active.append(job)
            self._released = False
            self._set_running()
            piece = self._guarded(job, request.start)
            if piece is None:
                continue
            self.metrics.observe_start(request.prompt_ids.size, time.monotonic() - job.arrived)
            job.send("started", int(request.prompt_ids.size))
            self._after_output(job, piece)
            job.last_output = time.monotonic()  # after any wait for the first text: the next step's time leaves it out

    def _still_wanted(self, job: Job) -> bool:
        """False (and the job retired) when its client left or its time is up."""
        if job.cancelled.is_set():
            self.metrics.failed.labels(self.metrics.model_name, "disconnected").inc()
            self._retire(job)
            return False
        if time.monotonic() - job.arrived > self.request_timeout:
            self.metrics.failed.labels(self.metrics.model_name, "timeout").inc()
            job.send("error", (504, f"the request took longer than the server's {self.request_timeout:g} s timeout"))
            self._retire(job)
            return False
        return True

    def _advance(self, job: Job) -> None:
        """One step of one active request, verified alone."""
        request = job.request
        assert request is not None
        self.metrics.forwards.labels(self.metrics.model_name).inc()
        self._emit(job, self._guarded(job, request.step))

    def _advance_together(self, jobs: list[Job]) -> None:
        """One step of every given request, their trees verified in as few forwards as fit."""
        assert self.batch is not None
        drafted = []
        for job in jobs:
            draft = self._guarded(job, job.request.draft)
            if draft is not None:
                drafted.append((job, *draft))
        for group in self.batch.split([tree.size for _, tree, _ in drafted]):
            members = [drafted[i] for i in group]
            tick = time.perf_counter()
            self.metrics.forwards.labels(self.metrics.model_name).inc()
            try:
                outputs = self.batch.verify([job.request.backend for job, _, _ in members],
                                             [tree for _, tree, _ in members], [pick for _, _, pick in members])
            except Exception as error:  # a bug must cost these requests, never the server
                log.exception("adaspec: a batched verification failed")
                for job, _, _ in members:
                    self.metrics.failed.labels(self.metrics.model_name, "internal").inc()
                    job.send("error", (500, f"internal error: {type(error).__name__}: {error}"))
                    self._retire(job)
                continue
            seconds = time.perf_counter() - tick
            for (job, tree, _), verified in zip(members, outputs):
                self._emit(job, self._guarded(job, lambda: job.request.finish(tree, verified, seconds)))

    def _emit(self, job: Job, piece: str | None) -> None:
        """Records a finished step and sends its text (nothing when the step failed)."""
        if piece is None:
            return
        request = job.request
        now = time.monotonic()
        assert request is not None and request.last_step is not None
        self.metrics.observe_step(request.last_step, now - job.last_output)
        job.last_output = now
        if self.saver is not None:
            self.saver.mark_changed()
        self._after_output(job, piece)

    def _guarded(self, job: Job, action: Callable[[], T]) -> T | None:
        """Runs ``action`` (start, step, draft or finish); a failure ends only this request and gives None."""
        try:
            return action()
        except Exception as error:  # a bug must cost one request, never the server
            log.exception("adaspec: request %d failed", job.id)
            self.metrics.failed.labels(self.metrics.model_name, "internal").inc()
            job.send("error", (500, f"internal error: {type(error).__name__}: {error}"))
            self._retire(job)
            return None

    def _after_output(self, job: Job, piece: str) -> None:
        """Sends a step's text, and the result when the request has finished."""
        request = job.request
        assert request is not None
        if piece and job.spec.stream and job.first_text is None:
            # The handler's thread needs a core to write the first text, and the next forward
            # takes both (llama.cpp's threads spin through it): the text waited for a core (~4 ms
            # on 2 cores, measured). So the scheduler waits until it is written (briefly: a stalled
            # client cannot hold the others up); that is what a stream's time to first token measures.
            job.first_text = threading.Event()
            job.send("text", piece, job.first_text)
            job.first_text.wait(self.first_text_wait)
        elif piece:
            job.send("text", piece)
        if request.finished:
            generation: Generation = request.result()
            self.metrics.observe_finish(generation, time.monotonic() - job.arrived)
            job.send("done", generation)
            self._retire(job)

    def _retire(self, job: Job) -> None:
        if job.request is not None:
            job.request.close()
        if job in self._active:
            self._active.remove(job)
            if not self._active:
                self._idle_since = time.monotonic()
        self._set_running()

    def _set_running(self) -> None:
        self.metrics.running.labels(self.metrics.model_name).set(len(self._active))

    def _seconds_to_release(self) -> float | None:
        """How long the idle loop may sleep before idle memory is due back (None: nothing due)."""
        return None if self._released else max(0.05, self._idle_since + self.idle_release - time.monotonic())

    def _release_due(self) -> bool:
        """True once the server has been idle ``idle_release`` seconds and still holds idle memory."""
        return not self._released and time.monotonic() - self._idle_since >= self.idle_release

    def _release_idle_memory(self) -> None:
        """Frees every idle cache but one and hands freed memory back to the system."""
        self.generator.pool.trim(keep=1)
        return_freed_memory()
        self._released = True
