"""The HTTP layer: FastAPI routes in OpenAI's shapes over the scheduler.

Every error a client can cause is a 4xx with OpenAI's body, ``{"error": {"message", "type",
"param", "code"}}``; the scheduler turns a failing request into an error event for that request
only.
"""

from __future__ import annotations

import asyncio
import hashlib
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

from adaspec.backends.base import BatchSupport
from adaspec.request import Generation
from adaspec.serve.jobs import DoneEvent, ErrorEvent, Event, Job, TextEvent
from adaspec.serve.scheduler import Scheduler, SchedulerDown, ServerBusy
from adaspec.serve.schemas import ChatRequest, CompletionRequest, RequestError

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
DISCONNECT_POLL_S = 0.25  # how often a waiting handler checks its client and the scheduler
DEADLINE_GRACE_S = 30.0  # a handler gives up this long after the request's own timeout
HISTORY_SCOPES = ("server", "user", "key")
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_exceeded",
               500: "internal_error", 503: "service_unavailable", 504: "timeout"}


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error body.

    Args:
        message: one line saying what went wrong.
        status: the HTTP status (picks the error type).
        param: the offending parameter, if one.
        code: an error code, if one.

    Returns:
        ``{"error": {...}}``.
    """
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(message: str, status: int, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    """A JSONResponse carrying ``error_body``."""
    return JSONResponse(error_body(message, status, param, code), status_code=status, headers=headers)


def validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """One line (and the parameter) from pydantic's list of complaints.

    Args:
        error: what FastAPI raised for the body.

    Returns:
        The message and the offending parameter (None when it is the body as a whole).
    """
    problems = error.errors()
    if not problems:
        return "the request body is invalid", None
    first = problems[0]
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    if kind == "extra_forbidden" and where:
        return f"unsupported parameter {'.'.join(where)!r}", ".".join(where)
    param = ".".join(where) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid value')}", param


def usage(generation: Generation) -> dict:
    """OpenAI's usage block.

    Args:
        generation: a finished request.

    Returns:
        Prompt, completion and total token counts, how many prompt tokens were served from
        positions cached by an earlier request (``prompt_tokens_details.cached_tokens``), and, with
        a prediction, how many of its tokens did and did not end up in the completion.
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
        max_context: the model's context length, reported by ``/v1/models``.
        batching: whether requests are verified together, and why (not), for ``/health``.
        history_scope: whose requests share a drafting history: ``server`` (everyone), ``user``
            (OpenAI's ``user`` field) or ``key`` (the API key sent).
    """

    def __init__(self, scheduler: Scheduler, model_name: str, aliases: tuple[str, ...] = (),
                 max_context: int = 0, batching: BatchSupport | None = None, history_scope: str = "server") -> None:
        if history_scope not in HISTORY_SCOPES:
            raise ValueError(f"history_scope must be one of {', '.join(HISTORY_SCOPES)}, got {history_scope!r}")
        self.history_scope = history_scope
        self.scheduler = scheduler
        self.batching = batching or BatchSupport(None, "not asked")
        self.model_name = model_name
        self.names = {model_name, *aliases}
        self.max_context = max_context
        self.created = int(time.time())
        self.app = FastAPI(title="adaspec", docs_url=None, redoc_url=None, lifespan=self._lifespan)
        self._routes()

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """Runs the scheduler while the app serves; on shutdown it ends requests and saves the state."""
        self.scheduler.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.scheduler.stop)

    def _routes(self) -> None:
        app = self.app

        @app.exception_handler(RequestValidationError)
        async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
            message, param = validation_message(error)
            return error_response(message, 400, param)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
            return error_response(str(error.detail), error.status_code)

        @app.exception_handler(RequestError)
        async def bad_request(_: Request, error: RequestError) -> JSONResponse:
            return error_response(error.message, error.status, error.param, error.code)

        @app.get("/health")
        async def health() -> Response:
            if not self.scheduler.alive:
                return error_response("the scheduler is not running", 503)
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
        async def chat(body: ChatRequest, request: Request) -> Response:
            return await self._serve(body, request, chat=True)

        @app.post("/v1/completions")
        async def completions(body: CompletionRequest, request: Request) -> Response:
            return await self._serve(body, request, chat=False)

    async def _serve(self, body: ChatRequest | CompletionRequest, request: Request, chat: bool) -> Response:
        if body.model is not None and body.model not in self.names:
            raise RequestError(f"the model {body.model!r} does not exist; this server serves {self.model_name!r}",
                               "model", status=404, code="model_not_found")
        spec = body.to_job(default_max_tokens=self.max_context, scope=self.scope_of(body, request))
        if spec.options.max_new_tokens > self.max_context:
            raise RequestError(f"max_tokens is {spec.options.max_new_tokens} but the model's context holds "
                               f"{self.max_context} tokens in all", "max_tokens")
        try:
            job = self.scheduler.submit(spec, asyncio.get_running_loop())
        except ServerBusy:
            return error_response("the server is at capacity; retry shortly", 429, headers={"Retry-After": "1"})
        except SchedulerDown:
            return error_response("the server cannot take requests: its scheduler is not running", 503)
        first = await self._next_event(job, request)
        if first is None:  # the client left while queued
            return Response(status_code=499)
        if isinstance(first, ErrorEvent):
            return error_response(first.message, first.status)
        identity = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                    "model": self.model_name}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self._stream(job, request, identity, chat, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await self._complete(job, request, identity, chat)

    def scope_of(self, body: ChatRequest | CompletionRequest, request: Request) -> str:
        """The drafting-history scope of a request (see ``history_scope``); never the raw key.

        Args:
            body: the request body.
            request: the HTTP request (its headers).

        Returns:
            The scope's name.
        """
        if self.history_scope == "user":
            return "user:" + (body.user or "")
        if self.history_scope == "key":
            key = request.headers.get("authorization", "")
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
        return ""

    async def _next_event(self, job: Job, request: Request) -> Event | None:
        """The job's next event; None (and the job cancelled) if the client disconnected.

        Every wait has a deadline: the request's timeout plus a grace period, after which (or
        when the scheduler has stopped without a word) the handler answers with an error event.
        """
        deadline = job.arrived + self.scheduler.request_timeout + DEADLINE_GRACE_S
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), timeout=DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    return None
                if not self.scheduler.alive and job.events.empty():
                    job.cancelled.set()
                    return ErrorEvent(503, "the server's scheduler stopped")
                if time.monotonic() > deadline:
                    job.cancelled.set()
                    return ErrorEvent(504, "the request got no answer within its deadline")

    async def _complete(self, job: Job, request: Request, identity: dict, chat: bool) -> Response:
        while True:  # text events are skipped: the result carries the whole text
            event = await self._next_event(job, request)
            if event is None:
                return Response(status_code=499)
            if isinstance(event, ErrorEvent):
                return error_response(event.message, event.status)
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

    async def _stream(self, job: Job, request: Request, identity: dict, chat: bool,
                      include_usage: bool) -> AsyncIterator[str]:
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
                event = await self._next_event(job, request)
                if event is None:
                    break
                if isinstance(event, TextEvent):
                    yield sse(chunk(event.text))
                    if event.delivered is not None:  # resumed once the server took the chunk: it is on its way
                        event.delivered.set()
                elif isinstance(event, ErrorEvent):
                    yield sse(error_body(event.message, event.status))
                    break
                elif isinstance(event, DoneEvent):
                    generation = event.generation
                    yield sse(chunk(None, FINISH_REASONS[generation.finish_reason]))
                    if include_usage:
                        yield sse({**identity, "object": kind, "choices": [], "usage": usage(generation)})
                    break
            yield sse("[DONE]")
        finally:  # the client went away (the task is cancelled) or the stream ended: free the slot
            job.cancelled.set()
