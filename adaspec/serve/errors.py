"""The errors a client sees, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_exceeded", 500: "internal_error",
               503: "service_unavailable", 504: "timeout"}


class RequestError(Exception):
    """A request that cannot be served as sent; becomes an OpenAI-style 4xx.

    Args:
        message: one line saying what is wrong.
        param: the offending parameter, if one.
        status: the HTTP status.
        code: OpenAI's error code, if one applies.
    """

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


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
    """A JSONResponse carrying ``error_body``.

    Args:
        message: one line saying what went wrong.
        status: the HTTP status.
        param: the offending parameter, if one.
        code: an error code, if one.
        headers: extra response headers.

    Returns:
        The response.
    """
    return JSONResponse(error_body(message, status, param, code), status_code=status, headers=headers)
