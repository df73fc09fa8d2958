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
from typing import Any, Callable, Sequence, TypeVar

from adaspec.backends.hf_batch import BatchRunner
from adaspec.engine import Generator, Prompt
from adaspec.errors import AdaspecError
from adaspec.request import Generation, Request
from adaspec.serve.metrics import ServerMetrics
from adaspec.state_store import DrafterStateStore

log = logging.getLogger("adaspec")
T = TypeVar("T")


class ServerBusy(Exception):
    """Raised by ``submit`` when every slot and every queue place is taken."""


@dataclass(frozen=True)
class JobSpec:
    """What a client asked for, already checked for shape and type.

    Attributes:
        prompt: text, chat messages or token ids.
        chat: apply the chat template to text (False for completions).
        max_tokens: the most tokens to generate (cut to the room the context leaves).
        stop: strings that end generation.
        temperature, top_k, top_p, seed: sampling settings (temperature 0: greedy).
    """

    prompt: Prompt
    chat: bool
    max_tokens: int
    stop: Sequence[str] = ()
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Event:
    """One message from the scheduler to a request's HTTP handler.

    Attributes:
        kind: ``started`` (data: prompt tokens), ``text`` (data: a text piece), ``done``
            (data: the Generation) or ``error`` (data: (HTTP status, message)).
        data: as described for each kind.
    """

    kind: str
    data: Any = None


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
    """

    spec: JobSpec
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    request: Request | None = None
    last_output: float = 0.0
    id: int = 0

    def send(self, kind: str, data: Any = None) -> None:
        """Hands an event to the handler's loop (safe from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, Event(kind, data))
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
        state_store: where the drafter's learned state is saved (None: not kept).
        save_every: seconds between periodic saves of the learned state (when it changed).
        runner: verifies every active request's tree in one forward (None: one request at a
            time). Its results must equal each request's solo ones (``BatchRunner.check_exact``).
    """

    def __init__(self, generator: Generator, metrics: ServerMetrics, max_active: int = 8, max_waiting: int = 64,
                 request_timeout: float = 600.0, state_store: DrafterStateStore | None = None,
                 save_every: float = 300.0, runner: BatchRunner | None = None) -> None:
        if max_active < 1 or max_waiting < 0 or request_timeout <= 0:
            raise AdaspecError("need max_active >= 1, max_waiting >= 0 and a positive request timeout")
        self.generator = generator
        self.metrics = metrics
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.request_timeout = request_timeout
        self.state_store = state_store
        self.save_every = save_every
        self.runner = runner
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._unsaved_steps = 0
        self._last_save = time.monotonic()

    @property
    def alive(self) -> bool:
        """True while the scheduling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Starts the scheduling thread."""
        self._thread = threading.Thread(target=self._run, name="adaspec-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends every request, stops the thread and saves the learned state."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    def submit(self, spec: JobSpec, loop: asyncio.AbstractEventLoop) -> Job:
        """Queues a request.

        Args:
            spec: what was asked.
            loop: the caller's event loop, which receives the job's events.

        Returns:
            The job; read its ``events``.

        Raises:
            ServerBusy: when all slots and queue places are taken, or the server is stopping.
        """
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
        try:
            while True:
                with self._wake:
                    while not self._stopping and not self._waiting and not self._active:
                        self._wake.wait(timeout=self._seconds_to_next_save())
                        self._save_if_due()
                    if self._stopping:
                        break
                self._admit_waiting()
                if self.runner is None:
                    for job in list(self._active):
                        self._admit_waiting()  # between steps, so a new request waits at most one step
                        if self._still_wanted(job):
                            self._advance(job)
                else:
                    self._advance_together([job for job in list(self._active) if self._still_wanted(job)])
                self._save_if_due()
        finally:
            for job in self._active + list(self._waiting):
                job.send("error", (503, "the server is shutting down"))
                if job.request is not None:
                    job.request.close()
            self._active.clear()
            self._waiting.clear()
            self._save_state()

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
            spec = job.spec
            try:
                request = self.generator.open(
                    spec.prompt, max_new_tokens=spec.max_tokens, stop=spec.stop, chat=spec.chat,
                    temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p, seed=spec.seed,
                )
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
            self._set_running()
            piece = self._guarded(job, request.start)
            if piece is None:
                continue
            job.last_output = time.monotonic()
            self.metrics.observe_start(request.prompt_ids.size, job.last_output - job.arrived)
            job.send("started", int(request.prompt_ids.size))
            self._after_output(job, piece)

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
        assert self.runner is not None
        drafted = []
        for job in jobs:
            draft = self._guarded(job, job.request.draft)
            if draft is not None:
                drafted.append((job, *draft))
        for group in self.runner.split([tree.size for _, tree, _ in drafted]):
            members = [drafted[i] for i in group]
            tick = time.perf_counter()
            self.metrics.forwards.labels(self.metrics.model_name).inc()
            try:
                outputs = self.runner.verify([job.request.backend for job, _, _ in members],
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
        self._unsaved_steps += 1
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
        if piece:
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
        self._set_running()

    def _set_running(self) -> None:
        self.metrics.running.labels(self.metrics.model_name).set(len(self._active))

    def _seconds_to_next_save(self) -> float:
        return max(0.05, self._last_save + self.save_every - time.monotonic())

    def _save_if_due(self) -> None:
        if self._unsaved_steps and time.monotonic() - self._last_save >= self.save_every:
            self._save_state()

    def _save_state(self) -> None:
        self._last_save = time.monotonic()
        if self.state_store is not None and self._unsaved_steps:
            self.state_store.save(self.generator.drafter)
        self._unsaved_steps = 0
