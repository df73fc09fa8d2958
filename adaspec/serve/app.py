"""The HTTP layer: FastAPI routes in OpenAI's shapes over the scheduler.

Every error a client can cause is a 4xx with OpenAI's body, ``{"error": {"message", "type",
"param", "code"}}``; the scheduler turns a failing request into an error event for that request
only. The event loop never parses or tokenizes: a handler holds a place (``reserve``), reads the
body (the gate has checked the key and the size), and hands the bytes to a preparation thread.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from adaspec.backends.base import BatchSupport
from adaspec.request import Generation
from adaspec.serve.admission import SchedulerDown, ServerBusy, ShuttingDown
from adaspec.serve.auth import ApiKeys, default_scope
from adaspec.serve.errors import error_body, error_response
from adaspec.serve.gate import CALLER, CREDENTIAL, BodyTooLarge, Gate
from adaspec.serve.intake import Caller, Intake, longest_token_bytes
from adaspec.serve.jobs import DoneEvent, ErrorEvent, Event, Job, TextEvent
from adaspec.serve.scheduler import Scheduler

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
POLL_S = 0.25  # how often a waiting handler checks the scheduler and the deadline
DEADLINE_GRACE_S = 30.0  # a handler gives up this long after the request's own timeout
DEFAULT_MAX_BODY_MB = 16.0


def usage(generation: Generation) -> dict:
    """OpenAI's usage block.

    Args:
        generation: a finished request.

    Returns:
        Prompt, completion and total token counts, how many prompt tokens were served from
        positions cached by an earlier request of the same scope (``prompt_tokens_details.
        cached_tokens``), and, with a prediction, how many of its tokens did and did not end up
        in the completion.
    """
    prompt, completion = len(generation.prompt_ids), len(generation.token_ids)
    stats = generation.stats
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0,
                                          "accepted_prediction_tokens": stats.accepted_prediction_tokens,
                                          "rejected_prediction_tokens": stats.rejected_prediction_tokens}}


def sse(payload: dict | str) -> str:
    """One server-sent event.

    Args:
        payload: a JSON-able dict, or a literal such as ``[DONE]``.

    Returns:
        ``data: ...`` and a blank line.
    """
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class OpenAIServer:
    """The routes, bound to one scheduler and model.

    Args:
        scheduler: runs the requests.
        model_name: the name clients use (``GET /v1/models``); requests naming another model get a 404.
        aliases: other names accepted for the model (e.g. the path it was loaded from).
        max_context: the model's context length (default: the generator's).
        batching: whether requests are verified together, and why (not), for ``/health``.
        history_scope: whose requests share learned and cached state: ``server`` (everyone),
            ``user`` (OpenAI's ``user`` field; with keys, within the key) or ``key`` (the API
            key); None: ``key`` with keys, else ``server``.
        keys: the API keys accepted (None: the server is open).
        public_metrics: serve ``/metrics`` without a key.
        max_body_bytes: the largest request body read (413 beyond).
    """

    def __init__(self, scheduler: Scheduler, model_name: str, aliases: tuple[str, ...] = (),
                 max_context: int = 0, batching: BatchSupport | None = None, history_scope: str | None = None,
                 keys: ApiKeys | None = None, public_metrics: bool = False,
                 max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * (1 << 20))) -> None:
        self.history_scope = default_scope(history_scope, keys)
        self.scheduler = scheduler
        self.batching = batching or BatchSupport(None, "not asked")
        self.model_name = model_name
        self.names = {model_name, *aliases}
        generator = scheduler.generator
        self.max_context = max_context or generator.max_context
        self.intake = Intake(generator, model_name, self.names, self.history_scope,
                             max_prompt_bytes=self.max_context * longest_token_bytes(generator.model.tokenizer))
        self.created = int(time.time())
        self.api = FastAPI(title="adaspec", docs_url=None, redoc_url=None, lifespan=self._lifespan)
        self._routes()
        self.app = Gate(self.api, keys, max_body_bytes, public_metrics, scheduler.metrics.request_rejected)

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """Runs the scheduler while the app serves; on shutdown it ends requests and saves the state."""
        self.scheduler.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.scheduler.stop)

    def _routes(self) -> None:
        app = self.api

        @app.exception_handler(RequestValidationError)
        async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
            return error_response("the request is invalid", 400)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
            return error_response(str(error.detail), error.status_code)

        @app.get("/health")
        async def health() -> Response:
            if not self.scheduler.alive:
                return error_response("the scheduler is not running", 503)
            if self.scheduler.draining:
                return error_response("the server is shutting down", 503)
            return JSONResponse({"status": "ok", "batching": {"enabled": self.batching.verifier is not None,
                                                              "detail": self.batching.reason}})

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(self.scheduler.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{
                "id": self.model_name, "object": "model", "created": self.created, "owned_by": "adaspec",
                "max_model_len": self.max_context,
            }]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            return await self._serve(request, chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await self._serve(request, chat=False)

    async def _serve(self, request: Request, chat: bool) -> Response:
        try:
            ticket = self.scheduler.reserve()  # held while the body is read and prepared
        except ServerBusy:
            return error_response("the server is at capacity; retry shortly", 429, headers={"Retry-After": "1"})
        except ShuttingDown:
            return error_response("the server is shutting down", 503)
        except SchedulerDown:
            return error_response("the server cannot take requests: its scheduler is not running", 503)
        try:
            body = await request.body()
        except BodyTooLarge as error:
            ticket.release()
            return error_response(str(error), 413, code="request_too_large")
        except ClientDisconnect:
            ticket.release()
            return Response(status_code=499)
        except BaseException:  # the handler is cancelled
            ticket.release()
            raise
        caller = Caller(request.scope.get(CALLER), request.scope.get(CREDENTIAL, ""))
        job = self.scheduler.submit_prepared(ticket, lambda tokenizer: self.intake.open(body, chat, caller, tokenizer),
                                             asyncio.get_running_loop())
        watcher = asyncio.create_task(watch_disconnect(request, job))
        streaming = False
        try:
            first = await self._next_event(job)
            if first is None:  # the client left while its request was prepared or queued
                return Response(status_code=499)
            if isinstance(first, ErrorEvent):
                return error_response(first.message, first.status, first.param, first.code)
            identity = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                        "model": self.model_name}
            if job.spec.stream:  # from here Starlette watches the connection, and the stream frees the slot
                watcher.cancel()
                streaming = True
                return StreamingResponse(self._stream(job, identity, chat), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            return await self._complete(job, identity, chat)
        finally:
            if not streaming:
                watcher.cancel()
                job.cancelled.set()  # a no-op for a finished request; frees the slot of an abandoned one

    async def _next_event(self, job: Job) -> Event | None:
        """The job's next event; None once the client has gone (the job is then cancelled).

        Every wait has a deadline: the request's timeout plus a grace period, after which (or
        when the scheduler has stopped without a word) the handler answers with an error event.
        """
        deadline = job.arrived + self.scheduler.request_timeout + DEADLINE_GRACE_S
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=POLL_S)
            except asyncio.TimeoutError:
                if job.cancelled.is_set():
                    return None
                if not self.scheduler.alive and job.events.empty():
                    job.cancelled.set()
                    return ErrorEvent(503, "the server's scheduler stopped")
                if time.monotonic() > deadline:
                    job.cancelled.set()
                    return ErrorEvent(504, "the request got no answer within its deadline")
                continue
            return None if event is GONE else event

    async def _complete(self, job: Job, identity: dict, chat: bool) -> Response:
        while True:  # text events are skipped: the result carries the whole text
            event = await self._next_event(job)
            if event is None:
                return Response(status_code=499)
            if isinstance(event, ErrorEvent):
                return error_response(event.message, event.status, event.param, event.code)
            if isinstance(event, DoneEvent):
                generation = event.generation
                reason = FINISH_REASONS[generation.finish_reason]
                if chat:
                    choice = {"index": 0, "message": {"role": "assistant", "content": generation.text},
                              "finish_reason": reason, "logprobs": None}
                    kind = "chat.completion"
                else:
                    choice = {"index": 0, "text": generation.text, "finish_reason": reason, "logprobs": None}
                    kind = "text_completion"
                return JSONResponse({**identity, "object": kind, "choices": [choice], "usage": usage(generation)})

    async def _stream(self, job: Job, identity: dict, chat: bool) -> AsyncIterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, reason: str | None = None, first: bool = False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
                choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
            return {**identity, "object": kind, "choices": [choice]}

        try:
            if chat:
                yield sse(chunk(None, first=True))
            while True:
                event = await self._next_event(job)
                if event is None:
                    break
                if isinstance(event, TextEvent):
                    yield sse(chunk(event.text))
                    if event.delivered is not None:  # resumed once the server took the chunk: it is on its way
                        event.delivered.set()
                elif isinstance(event, ErrorEvent):
                    yield sse(error_body(event.message, event.status, event.param, event.code))
                    break
                elif isinstance(event, DoneEvent):
                    generation = event.generation
                    yield sse(chunk(None, FINISH_REASONS[generation.finish_reason]))
                    if job.spec.include_usage:
                        yield sse({**identity, "object": kind, "choices": [], "usage": usage(generation)})
                    break
            yield sse("[DONE]")
        finally:  # the client went away (the task is cancelled) or the stream ended: free the slot
            job.cancelled.set()


GONE = object()  # put in a job's events when its client disconnects: the waiting handler wakes at once


async def watch_disconnect(request: Request, job: Job) -> None:
    """Cancels a job as soon as its client disconnects (its body already read), so a request
    nobody waits for stops at the scheduler's next step.

    Args:
        request: the HTTP request.
        job: its job.
    """
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except (ClientDisconnect, OSError, RuntimeError):
        pass
    job.cancelled.set()
    job.events.put_nowait(GONE)
