"""From a request body's bytes to an opened request, on a preparation thread, in time linear in a
bounded input: parse, check sizes before anything costly, validate, template, tokenize.

Nothing here runs on the scheduler's thread or the event loop. Checks are ordered so that the
cheapest refusal comes first: list lengths right after ``json.loads`` (before pydantic sees a
300,000-message list), the prompt's bytes before the tokenizer (a prompt whose bytes exceed the
context times the longest token's bytes cannot fit), and the token count against ``max_tokens``
right after tokenizing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic

from adaspec.engine import Generator
from adaspec.request import Request
from adaspec.serve.auth import scope_name
from adaspec.serve.errors import RequestError
from adaspec.serve.jobs import JobSpec
from adaspec.serve.schemas import MAX_MESSAGES, ChatRequest, CompletionRequest

MAX_JSON_VALUES = 8 * MAX_MESSAGES + 4096  # JSON values a body may hold besides a token-id prompt


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the gate saw it.

    Attributes:
        key: the digest of the authenticated API key (None when the server takes no keys).
        credential: the digest of the ``Authorization`` header as sent ("" without one).
    """

    key: str | None = None
    credential: str = ""


def longest_token_bytes(tokenizer: Any) -> int:
    """An upper bound on the UTF-8 bytes of any one token's text.

    Token strings spell a byte as one character (byte-level BPE) or a word start as ``▁``
    (SentencePiece), which take at least as many bytes as the text they stand for, so the
    longest token string bounds the text any token decodes to.

    Args:
        tokenizer: a transformers tokenizer.

    Returns:
        The bound, at least 4.
    """
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return max([4] + [len(piece.encode("utf-8", "surrogatepass")) for piece in pieces if isinstance(piece, str)])


def validation_message(error: pydantic.ValidationError) -> tuple[str, str | None]:
    """One line (and the parameter) from pydantic's list of complaints.

    Args:
        error: what validating the body raised.

    Returns:
        The message and the offending parameter (None when it is the body as a whole).
    """
    problems = error.errors()
    if not problems:
        return "the request body is invalid", None
    first = problems[0]
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type", "") == "extra_forbidden" and where:
        return f"unsupported parameter {'.'.join(where)!r}", ".".join(where)
    param = ".".join(where) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid value')}", param


class Intake:
    """Prepares the requests of one server (see the module doc).

    Args:
        generator: opens the requests.
        model_name: the name clients use; requests naming another model get a 404.
        names: every accepted model name.
        history_scope: ``server``, ``user`` or ``key`` (see ``auth.scope_name``).
        max_prompt_bytes: the most bytes of prompt text that could fit the context.
    """

    def __init__(self, generator: Generator, model_name: str, names: set[str], history_scope: str,
                 max_prompt_bytes: int) -> None:
        self.generator = generator
        self.model_name = model_name
        self.names = names
        self.history_scope = history_scope
        self.max_context = generator.max_context
        self.max_prompt_bytes = max_prompt_bytes

    def open(self, body: bytes, chat: bool, caller: Caller, tokenizer: Any) -> tuple[JobSpec, Request]:
        """Parses, checks and tokenizes one request, and opens it.

        Args:
            body: the request body as received (at most the gate's limit).
            chat: ``/v1/chat/completions`` (else ``/v1/completions``).
            caller: who sent it.
            tokenizer: this thread's own tokenizer.

        Returns:
            What was asked, and the request ready to start.

        Raises:
            RequestError: for anything the client must change (400 or 404).
        """
        spec = self.job(body, chat, caller)
        request = self.generator.open(spec.prompt, spec.options, tokenizer=tokenizer)
        wanted = spec.options.max_new_tokens
        if spec.strict_length and request.prompt_ids.size + wanted > self.max_context:
            prompt = int(request.prompt_ids.size)
            raise RequestError(f"this model's maximum context length is {self.max_context} tokens; you requested "
                               f"{prompt + wanted} tokens ({prompt} in the prompt, {wanted} in the completion): "
                               "shorten the prompt or lower max_tokens", "max_tokens",
                               code="context_length_exceeded")
        return spec, request

    def job(self, body: bytes, chat: bool, caller: Caller) -> JobSpec:
        """What a body asks for, checked (no tokenizer involved).

        Args:
            body: the request body.
            chat: the chat endpoint.
            caller: who sent it.

        Returns:
            The job spec.

        Raises:
            RequestError: for a body that is malformed, too big in any dimension, or asks for
                something this server does not do.
        """
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RequestError("the request body is not valid JSON") from None
        if not isinstance(raw, dict):
            raise RequestError("the request body must be a JSON object")
        self.check_sizes(raw)
        try:
            parsed = (ChatRequest if chat else CompletionRequest).model_validate(raw)
        except pydantic.ValidationError as error:
            message, param = validation_message(error)
            raise RequestError(message, param) from None
        if parsed.model is not None and parsed.model not in self.names:
            raise RequestError(f"the model {parsed.model!r} does not exist; this server serves {self.model_name!r}",
                               "model", status=404, code="model_not_found")
        scope = scope_name(self.history_scope, caller.key, caller.credential, parsed.user)
        spec = parsed.to_job(default_max_tokens=self.max_context, scope=scope)
        if spec.options.max_new_tokens > self.max_context:
            raise RequestError(f"max_tokens is {spec.options.max_new_tokens} but the model's context holds "
                               f"{self.max_context} tokens in all", "max_tokens")
        self.check_prompt_bytes(spec)
        return spec

    def check_sizes(self, raw: dict) -> None:
        """Refuses a parsed body too big to validate cheaply: more messages than accepted, more
        token ids than the context, or more JSON values in all than any honest request holds.

        Args:
            raw: the parsed body.

        Raises:
            RequestError: naming the field.
        """
        messages = raw.get("messages")
        if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
            raise RequestError(f"messages holds {len(messages)} messages; at most {MAX_MESSAGES} are accepted",
                               "messages")
        prompt = raw.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
            prompt = prompt[0] if len(prompt) == 1 else prompt
        ids = len(prompt) if isinstance(prompt, list) else 0
        if ids > self.max_context:
            raise RequestError(f"the prompt has {ids} tokens but the context holds {self.max_context}", "prompt")
        if count_values(raw, MAX_JSON_VALUES + ids) > MAX_JSON_VALUES + ids:
            raise RequestError("the request body holds more JSON values than any request this server accepts")

    def check_prompt_bytes(self, spec: JobSpec) -> None:
        """Refuses text that could not fit the context whatever it tokenizes to, before tokenizing.

        Args:
            spec: the job.

        Raises:
            RequestError: when the prompt's text has more bytes than the context times the longest token.
        """
        prompt = spec.prompt
        if isinstance(prompt, str):
            size = len(prompt.encode("utf-8", "surrogatepass"))
        elif prompt and isinstance(prompt[0], dict):
            size = sum(len(m["content"].encode("utf-8", "surrogatepass")) for m in prompt)
        else:
            return
        if size > self.max_prompt_bytes:
            raise RequestError(f"the prompt's text has {size} bytes; no more than {self.max_prompt_bytes} can fit "
                               f"this model's {self.max_context}-token context",
                               "messages" if spec.options.chat else "prompt", code="context_length_exceeded")


def count_values(value: Any, budget: int) -> int:
    """How many JSON values a parsed body holds, counting no further than just past ``budget``.

    Args:
        value: the parsed JSON.
        budget: stop once more than this many are seen.

    Returns:
        The count (at most ``budget + 1``).
    """
    seen, pending = 0, [value]
    while pending and seen <= budget:
        item = pending.pop()
        seen += 1
        if isinstance(item, dict):
            pending.extend(item.values())
            seen += len(item)  # the keys
        elif isinstance(item, list):
            pending.extend(item)
    return seen
