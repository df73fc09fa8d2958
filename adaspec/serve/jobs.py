"""What passes between an HTTP handler and the scheduler: the job a handler submits, and the
typed events the scheduler sends back for it."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Union

from adaspec.engine import Prompt
from adaspec.options import RequestOptions
from adaspec.request import Generation, Request


@dataclass(frozen=True)
class JobSpec:
    """What a client asked for, already checked for shape and type.

    Attributes:
        prompt: text, chat messages or token ids.
        options: how to generate (``chat`` False for completions).
        stream: the client reads text as it comes (its first piece is a time to first token).
        include_usage: a stream ends with a usage chunk.
        strict_length: ``max_tokens`` was given, so a prompt that leaves less room is refused
            (400) rather than cut short; an omitted one means "what is left" on chat.
    """

    prompt: Prompt
    options: RequestOptions
    stream: bool = False
    include_usage: bool = False
    strict_length: bool = False


@dataclass(frozen=True)
class StartedEvent:
    """The prompt ran: the request holds a slot and its first token.

    Attributes:
        prompt_tokens: the prompt's length in tokens.
    """

    prompt_tokens: int


@dataclass(frozen=True)
class TextEvent:
    """Text that became final.

    Attributes:
        text: the piece.
        delivered: set by the handler once it has written the piece to the connection (None:
            nobody waits for that).
    """

    text: str
    delivered: threading.Event | None = None


@dataclass(frozen=True)
class DoneEvent:
    """The request finished.

    Attributes:
        generation: its result.
    """

    generation: Generation


@dataclass(frozen=True)
class ErrorEvent:
    """The request ended without a result.

    Attributes:
        status: the HTTP status to answer with.
        message: one line for the client.
        param: the offending request parameter, if one.
        code: OpenAI's error code, if one.
    """

    status: int
    message: str
    param: str | None = None
    code: str | None = None


Event = Union[StartedEvent, TextEvent, DoneEvent, ErrorEvent]


@dataclass
class Job:
    """A submitted request as both sides see it.

    Attributes:
        spec: what was asked (None while the body is being prepared).
        events: filled by the scheduler, read by the handler.
        loop: the handler's event loop.
        arrived: ``time.monotonic()`` at submission.
        cancelled: set by the handler when the client goes away.
        request: the decoding request once admitted.
        last_output: ``time.monotonic()`` of its latest output.
        id: its number, for logs.
        first_text: for a stream, set by the handler once the first text is written (None until sent).
    """

    spec: JobSpec | None
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    request: Request | None = None
    last_output: float = 0.0
    id: int = 0
    first_text: threading.Event | None = None

    def send(self, event: Event) -> None:
        """Hands an event to the handler's loop (safe from any thread).

        Args:
            event: what happened.
        """
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass
