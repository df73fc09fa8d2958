"""What every HTTP request passes before a handler runs and before its body is read: the API key,
and the body's size (a plain ASGI middleware, so nothing is parsed first)."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from adaspec.serve.auth import ApiKeys, digest
from adaspec.serve.errors import error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CALLER = "adaspec.caller"  # the scope entry holding the digest of the authenticated key
CREDENTIAL = "adaspec.credential"  # the digest of the Authorization header as sent ("" without one)
OPEN_PATHS = ("/health",)  # answered without a key


class BodyTooLarge(Exception):
    """Raised by the gate's ``receive`` once a body runs past the limit (it is not read further)."""


class Gate:
    """An ASGI middleware in front of the app.

    * With keys, every path but ``/health`` (and ``/metrics`` with ``public_metrics``) needs
      ``Authorization: Bearer KEY``; without a known key the answer is 401 in OpenAI's shape.
      The key's digest goes into the request's ASGI scope (``CALLER``) for the handlers.
    * A body whose ``Content-Length`` exceeds ``max_body_bytes`` gets 413 before the app reads a
      byte of it (the server discards the rest as it arrives, so the client reads its answer);
      a body sent without a length is read through a counting ``receive`` that raises
      ``BodyTooLarge`` as soon as it runs past the limit (the handler answers 413).

    Args:
        app: the application.
        keys: the accepted keys (None: the server is open).
        max_body_bytes: the largest body read.
        public_metrics: serve ``/metrics`` without a key.
        on_reject: told the reason (``unauthorized``, ``too_large``) of every request turned away here.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys | None, max_body_bytes: int, public_metrics: bool = False,
                 on_reject: Callable[[str], None] = lambda reason: None) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.open_paths = OPEN_PATHS + (("/metrics",) if public_metrics else ())
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        authorization = header(scope, b"authorization")
        scope[CREDENTIAL] = digest("credential", authorization.decode("latin-1")) if authorization else ""
        if self.keys is not None and scope["path"] not in self.open_paths:
            caller = self.keys.identify(authorization)
            if caller is None:
                self.on_reject("unauthorized")
                await respond(send, 401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'",
                              "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
            scope[CALLER] = caller
        length = header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await respond(send, 400, "the Content-Length header is not a number", None)
                return
            if int(length) > self.max_body_bytes:
                self.on_reject("too_large")
                await respond(send, 413, too_large_message(self.max_body_bytes), "request_too_large")
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that raises ``BodyTooLarge`` once the body read so far exceeds the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    self.on_reject("too_large")
                    raise BodyTooLarge(too_large_message(self.max_body_bytes))
            return message

        return counted


def too_large_message(limit: int) -> str:
    """The one line a 413 carries.

    Args:
        limit: the largest body accepted, in bytes.

    Returns:
        The message.
    """
    return f"the request body is larger than this server's {limit / (1 << 20):g} MiB limit (--max-body-mb)"


def header(scope: Scope, name: bytes) -> bytes | None:
    """One request header's raw value (the first, when sent several times).

    Args:
        scope: the ASGI scope.
        name: the header's name, lower case.

    Returns:
        Its value, or None.
    """
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


async def respond(send: Send, status: int, message: str, code: str | None,
                  headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Sends a whole error response in OpenAI's shape.

    Args:
        send: the ASGI send.
        status: the HTTP status.
        message: one line.
        code: OpenAI's error code, if one.
        headers: extra headers.
    """
    body = json.dumps(error_body(message, status, None, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
