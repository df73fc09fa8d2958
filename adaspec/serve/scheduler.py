"""The server's scheduler: one thread that owns the model and advances every active request by
one speculative step in turn (continuous scheduling), so a long request never blocks a short one.

HTTP handlers live on the asyncio loop; they ``reserve`` a place, then hand in the work that
prepares their request, and read the job's events from an ``asyncio.Queue`` that the scheduler
fills thread-safely. The scheduling thread only decodes: parsing, templating and tokenizing run
on preparation threads (``Preparer``), and a finished request's result (its text, its
prediction accounting) is assembled on a finishing thread. Everything a request owns (its KV
cache, context, output, random numbers) is on its ``Request``; the drafter's learned state and
the sizer's calibration are shared within a scope (``Session``), and only this thread teaches them.

A failure costs the request it hit (a 500 for it), never the loop: start, draft, verify (alone
or in a group, a failed group being retried one request at a time after rollback), finish,
result and the release of idle memory are each guarded.

Every step goes one way: the active requests draft in turn, and their trees are verified in
groups by the runtime's verifier (several requests per forward where that is exact, else one:
``SerialVerifier``), then each request accepts, learns and emits.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from adaspec.backends.base import BatchVerifier, NodeOutputs, Pick, SerialVerifier
from adaspec.engine import Generator
from adaspec.errors import AdaspecError
from adaspec.memory import return_freed_memory
from adaspec.serve.admission import Admission
from adaspec.serve.jobs import DoneEvent, ErrorEvent, Job, StartedEvent, TextEvent
from adaspec.serve.metrics import ServerMetrics
from adaspec.serve.prepare import Preparer
from adaspec.serve.saver import StateSaver
from adaspec.tree import DraftTree

log = logging.getLogger("adaspec")
T = TypeVar("T")
FIRST_TEXT_WAIT_S = 0.05  # the longest the scheduler waits for a stream's first text to be written
Drafted = tuple[Job, DraftTree, Pick]  # a request's tree for this step, and how to pick its tokens


class Scheduler(Admission):
    """Runs requests on one Generator, step by step, in a thread of its own.

    Args:
        generator: the model and the shared drafter.
        metrics: where to record what happens.
        max_active: requests decoded at once (each holds a KV cache).
        max_waiting: requests held beyond those (being read, prepared or queued); more are
            refused with ``ServerBusy``.
        request_timeout: seconds from arrival after which a request is ended with an error.
        saver: saves the drafter's learned state now and then, on a thread of its own (None: not kept).
        verifier: verifies the active requests' trees, several per forward where it can (its
            results equal each request's batch-of-one results by construction); None: one
            request per forward.
        idle_release: seconds without any request after which idle caches are freed and freed
            memory is handed back to the system.
        first_text_wait: the most seconds the scheduler waits, before the next forward, for a
            stream's first text to be written to its connection.
        preparer: the threads that prepare requests (default: ``Preparer`` over the model's tokenizer).
    """

    def __init__(self, generator: Generator, metrics: ServerMetrics, max_active: int = 8, max_waiting: int = 64,
                 request_timeout: float = 600.0, saver: StateSaver | None = None,
                 verifier: BatchVerifier | None = None, idle_release: float = 20.0,
                 first_text_wait: float = FIRST_TEXT_WAIT_S, preparer: Preparer | None = None) -> None:
        if max_active < 1 or max_waiting < 0 or request_timeout <= 0 or idle_release <= 0:
            raise AdaspecError("need max_active >= 1, max_waiting >= 0, a positive request timeout and idle release")
        super().__init__(generator, metrics, max_active, max_waiting, preparer)
        self.request_timeout = request_timeout
        self.saver = saver
        self.verifier: BatchVerifier = verifier if verifier is not None else SerialVerifier()
        self.idle_release = idle_release
        self.first_text_wait = first_text_wait
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="adaspec-finish")  # results, off this thread
        self._thread: threading.Thread | None = None
        self._idle_since = time.monotonic()  # when the last request ended (or the scheduler started)
        self._released = True  # idle memory already handed back since then

    @property
    def alive(self) -> bool:
        """True while the scheduling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def batched(self) -> bool:
        """True when several requests may share a forward."""
        return self.verifier.max_requests > 1

    def start(self) -> None:
        """Starts the scheduling thread (and the state saver's)."""
        self._thread = threading.Thread(target=self._run, name="adaspec-scheduler", daemon=True)
        self._thread.start()
        if self.saver is not None:
            self.saver.start()

    def stop(self) -> None:
        """Ends every request (503), stops the threads and saves the learned state (idempotent)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        self.preparer.close()
        self._finisher.shutdown(wait=True)  # the results already due are delivered
        if self.saver is not None:
            self.saver.stop()

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
                self._step_active()
        except Exception as error:  # a bug in the loop itself: logged; every request fails, new ones are refused
            log.exception("adaspec: the scheduler stopped")
            reason = f"the scheduler stopped: {type(error).__name__}: {error}"
        finally:
            with self._wake:
                self._stopping = True
                jobs = self._active + list(self._waiting)
                self._active.clear()
                self._waiting.clear()
                self._count()
            for job in jobs:
                self.metrics.request_failed("shutdown")
                job.send(ErrorEvent(503, reason))
                if job.request is not None:
                    job.request.close()

    def _admit_waiting(self) -> None:
        """Starts queued (already prepared) requests while slots are free: prefill, first token."""
        while len(self._active) < self.max_active:
            with self._wake:
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self._active.append(job)
                self._released = False
                self._count()
            if job.cancelled.is_set():
                self.metrics.request_failed("disconnected")
                self._retire(job)
                continue
            request = job.request
            piece = self._guarded(job, request.start)
            if piece is None:
                continue
            self.metrics.request_started(request.prompt_ids.size, time.monotonic() - job.arrived)
            job.send(StartedEvent(int(request.prompt_ids.size)))
            self._after_output(job, piece)
            job.last_output = time.monotonic()  # after any wait for the first text: the next step's time leaves it out

    def _step_active(self) -> None:
        """One step of every active request: each drafts in turn, and the trees are verified in
        groups as large as the verifier takes (one request per group when it cannot batch, with
        waiting requests admitted between groups)."""
        group: list[Drafted] = []
        rows = 0
        for job in list(self._active):
            if len(group) >= self.verifier.max_requests:
                self._verify(group)
                group, rows = [], 0
                self._admit_waiting()  # a new request waits at most one group
            if not self._still_wanted(job):
                continue
            drafted = self._guarded(job, job.request.draft)
            if drafted is None:
                continue
            tree, pick = drafted
            if group and rows + tree.size > self.verifier.max_rows:
                self._verify(group)
                group, rows = [], 0
            group.append((job, tree, pick))
            rows += tree.size
        if group:
            self._verify(group)

    def _verify(self, group: list[Drafted]) -> None:
        """Verifies a group's trees in one forward (one request's, when serial), then finishes each."""
        tick = time.perf_counter()
        self.metrics.forward_run()
        try:
            outputs = self.verifier.verify([job.request.backend for job, _, _ in group],
                                           [tree for _, tree, _ in group], [pick for _, _, pick in group])
        except Exception as error:  # a bug must cost the requests it hit, never the server
            if len(group) == 1:
                log.exception("adaspec: request %d failed", group[0][0].id)
                self._fail(group[0][0], error)
                return
            log.exception("adaspec: a batched verification failed; its %d requests are verified one at a time",
                          len(group))
            for member in group:
                self._verify_alone(*member)
            return
        seconds = time.perf_counter() - tick
        for (job, tree, _), verified in zip(group, outputs):
            self._finish(job, tree, verified, seconds)

    def _verify_alone(self, job: Job, tree: DraftTree, pick: Pick) -> None:
        """Verifies one request of a failed batch on its own, after dropping what the failed
        forward wrote into its cache (its output is then what it would have been)."""
        tick = time.perf_counter()
        self.metrics.forward_run()
        backend = job.request.backend

        def verify() -> NodeOutputs:
            backend.rollback()
            return backend.verify(tree, pick)

        verified = self._guarded(job, verify)
        if verified is not None:
            self._finish(job, tree, verified, time.perf_counter() - tick)

    def _finish(self, job: Job, tree: DraftTree, verified: NodeOutputs, seconds: float) -> None:
        """Accepts, learns and emits one request's verified step."""
        piece = self._guarded(job, lambda: job.request.finish(tree, verified, seconds))
        if piece is not None:
            self._emit(job, piece)

    def _still_wanted(self, job: Job) -> bool:
        """False (and the job retired) when its client left or its time is up."""
        if job.cancelled.is_set():
            self.metrics.request_failed("disconnected")
            self._retire(job)
            return False
        if time.monotonic() - job.arrived > self.request_timeout:
            self.metrics.request_failed("timeout")
            job.send(ErrorEvent(504, f"the request took longer than the server's {self.request_timeout:g} s timeout"))
            self._retire(job)
            return False
        return True

    def _emit(self, job: Job, piece: str) -> None:
        """Records a finished step and sends its text."""
        now = time.monotonic()
        self.metrics.step_finished(job.request.last_step, now - job.last_output)
        job.last_output = now
        if self.saver is not None:
            self.saver.mark_changed()
        self._after_output(job, piece)

    def _guarded(self, job: Job, action: Callable[[], T]) -> T | None:
        """Runs ``action`` (start, draft, verify or finish); a failure ends only this request and gives None."""
        try:
            return action()
        except Exception as error:  # a bug must cost one request, never the server
            log.exception("adaspec: request %d failed", job.id)
            self._fail(job, error)
            return None

    def _fail(self, job: Job, error: Exception) -> None:
        self.metrics.request_failed("internal")
        job.send(ErrorEvent(500, f"internal error: {type(error).__name__}: {error}"))
        self._retire(job)

    def _after_output(self, job: Job, piece: str) -> None:
        """Sends a step's text, and the result when the request has finished."""
        request = job.request
        if piece and job.spec.stream and job.first_text is None:
            # The handler's thread needs a core to write the first text, and the next forward
            # takes both (llama.cpp's threads spin through it): the text waited for a core (~4 ms
            # on 2 cores, measured). So the scheduler waits until it is written (briefly: a stalled
            # client cannot hold the others up); that is what a stream's time to first token measures.
            job.first_text = threading.Event()
            job.send(TextEvent(piece, job.first_text))
            job.first_text.wait(self.first_text_wait)
        elif piece:
            job.send(TextEvent(piece))
        if request.finished:
            self._retire(job)  # its cache is free for the next request now
            self._finisher.submit(self._deliver, job)

    def _deliver(self, job: Job) -> None:
        """On the finishing thread: a finished request's result (its text and usage, with a
        prediction's accounting) and its done event; a failure costs this request only."""
        try:
            generation = job.request.result()
        except Exception as error:
            log.exception("adaspec: request %d failed", job.id)
            self.metrics.request_failed("internal")
            job.send(ErrorEvent(500, f"internal error: {type(error).__name__}: {error}"))
            return
        self.metrics.request_finished(generation, time.monotonic() - job.arrived)
        job.send(DoneEvent(generation))

    def _retire(self, job: Job) -> None:
        if job.request is not None:
            job.request.close()
        if job in self._active:
            self._active.remove(job)
            if not self._active:
                self._idle_since = time.monotonic()
        self._count()

    def _seconds_to_release(self) -> float | None:
        """How long the idle loop may sleep before idle memory is due back (None: nothing due)."""
        return None if self._released else max(0.05, self._idle_since + self.idle_release - time.monotonic())

    def _release_due(self) -> bool:
        """True once the server has been idle ``idle_release`` seconds and still holds idle memory."""
        return not self._released and time.monotonic() - self._idle_since >= self.idle_release

    def _release_idle_memory(self) -> None:
        """Frees every idle cache but one and hands freed memory back to the system."""
        self._released = True
        try:
            self.generator.pool.trim(keep=1)
            return_freed_memory()
        except Exception:  # memory stays held; the server goes on
            log.exception("adaspec: releasing idle memory failed")
