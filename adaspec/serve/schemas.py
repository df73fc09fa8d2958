"""OpenAI's request shapes for ``/v1/chat/completions`` and ``/v1/completions``, checked with
pydantic, and their translation to a scheduler ``JobSpec``.

Three kinds of field:

* honoured: the prompt or messages, ``max_tokens`` / ``max_completion_tokens``, ``temperature``,
  ``top_p``, ``top_k`` (vLLM's extension), ``seed``, ``stop``, ``stream``,
  ``stream_options.include_usage``, ``prediction`` (Predicted Outputs; an extension on
  ``/v1/completions``), and ``user`` where the server scopes drafting history by user;
* accepted and ignored, because they do not change what is generated: ``user`` (unless it scopes
  history), ``metadata``,
  ``store``, ``service_tier``, ``parallel_tool_calls``, ``stream_options.continuous_usage_stats``,
  ``response_format`` of type ``text``, ``tool_choice`` ``none``;
* refused with a 400: everything that would change the model's distribution (penalties, logit
  bias) or is not implemented (``n > 1``, logprobs, tools, echo, ``messages[].name``), and any
  unknown field, so a typo never passes silently.

Sizes are bounded (``MAX_MESSAGES``, ``MAX_STOP_CHARACTERS``, ``MAX_PREDICTION_CHARACTERS``), so
preparing a request costs time linear in a bounded input.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from adaspec.errors import AdaspecError
from adaspec.options import MAX_STOP_STRINGS, RequestOptions
from adaspec.serve.auth import cache_salt_name
from adaspec.serve.errors import RequestError
from adaspec.serve.jobs import JobSpec

ROLES = ("system", "developer", "user", "assistant")
MAX_PREDICTION_CHARACTERS = 200_000
MAX_MESSAGES = 4096  # chat messages per request (each costs the template a few tokens: more never fit)
MAX_STOP_CHARACTERS = 1024  # per stop string (text that may begin one is held back from a stream)
MAX_SALT_CHARACTERS = 256


class TextPart(BaseModel):
    """A text part of a message's content."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")
    role: str
    content: Union[str, list[TextPart], None] = None
    name: str | None = None


class Prediction(BaseModel):
    """``prediction``: the output the client expects (OpenAI's Predicted Outputs)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["content"]
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        """The predicted text."""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage``."""

    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class CommonRequest(BaseModel):
    """Fields the two endpoints share."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1)  # an extension (vLLM's): 0 or -1 = all tokens
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    prediction: Prediction | None = None
    cache_salt: str | None = Field(default=None, max_length=MAX_SALT_CHARACTERS)  # vLLM's: separates prefix caches
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    def refuse_unsupported(self) -> None:
        """Raises for options that adaspec cannot honour exactly.

        Raises:
            RequestError: naming the option.
        """
        if self.n != 1:
            raise RequestError("n must be 1: adaspec returns one choice per request", "n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0:
                raise RequestError(f"{name} is not supported: it would change the model's distribution", name)
        if self.logit_bias:
            raise RequestError("logit_bias is not supported: it would change the model's distribution", "logit_bias")
        stops = self.stop_list()
        if len(stops) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARACTERS for s in stops):
            raise RequestError(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings of at most "
                               f"{MAX_STOP_CHARACTERS} characters", "stop")

    def include_usage(self) -> bool:
        """A stream ends with a usage chunk (``stream_options.include_usage``)."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def options(self, chat: bool, max_tokens: int, scope: str) -> RequestOptions:
        """The request's generation options.

        Args:
            chat: apply the chat template (False for completions).
            max_tokens: the most tokens to generate.
            scope: whose drafting history the request shares (chosen by the server).

        Returns:
            The options.

        Raises:
            RequestError: for a value the options refuse.
        """
        if self.prediction is not None and len(self.prediction.text()) > MAX_PREDICTION_CHARACTERS:
            raise RequestError(f"prediction holds more than {MAX_PREDICTION_CHARACTERS} characters", "prediction")
        try:
            return RequestOptions(max_new_tokens=max_tokens, stop=tuple(self.stop_list()), chat=chat,
                                  temperature=self.temperature, top_k=max(0, self.top_k), top_p=self.top_p,
                                  seed=self.seed, prediction=self.prediction.text() if self.prediction else None,
                                  scope=scope, cache_salt=cache_salt_name(self.cache_salt))
        except AdaspecError as error:
            raise RequestError(str(error)) from None


class ChatRequest(CommonRequest):
    """``POST /v1/chat/completions``."""

    messages: list[Message]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict] | None = None
    tool_choice: Union[str, dict, None] = None
    response_format: dict | None = None
    parallel_tool_calls: bool | None = None

    def to_job(self, default_max_tokens: int, scope: str = "") -> JobSpec:
        """The scheduler's job for this request.

        Args:
            default_max_tokens: used when neither ``max_tokens`` nor ``max_completion_tokens`` is given.
            scope: whose drafting history the request shares.

        Returns:
            The job spec.

        Raises:
            RequestError: for unsupported options or unusable messages.
        """
        if len(self.messages) > MAX_MESSAGES:
            raise RequestError(f"messages holds {len(self.messages)} messages; at most {MAX_MESSAGES} are accepted",
                               "messages")
        self.refuse_unsupported()
        if self.logprobs or self.top_logprobs:
            raise RequestError("logprobs are not supported", "logprobs")
        if self.tools or self.tool_choice not in (None, "none"):
            raise RequestError("tools are not supported", "tools")
        if self.response_format and self.response_format.get("type") != "text":
            raise RequestError("only the text response_format is supported", "response_format")
        if not self.messages:
            raise RequestError("messages must hold at least one message", "messages")
        messages = []
        for index, message in enumerate(self.messages):
            if message.role not in ROLES:
                raise RequestError(f"messages[{index}].role {message.role!r} is not one of {', '.join(ROLES)}",
                                   "messages")
            if message.name is not None:
                raise RequestError(f"messages[{index}].name is not supported: the chat template has no place for it, "
                                   "so the model would not see it", "messages")
            content = message.content
            text = content if isinstance(content, str) else "".join(part.text for part in content or [])
            role = "system" if message.role == "developer" else message.role
            messages.append({"role": role, "content": text})
        if not any(m["content"].strip() for m in messages):
            raise RequestError("the messages hold no text", "messages")
        explicit = self.max_completion_tokens or self.max_tokens
        return JobSpec(messages, self.options(chat=True, max_tokens=explicit or default_max_tokens, scope=scope),
                       self.stream, self.include_usage(), strict_length=explicit is not None)


class CompletionRequest(CommonRequest):
    """``POST /v1/completions``."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None

    def to_job(self, default_max_tokens: int, scope: str = "") -> JobSpec:
        """The scheduler's job for this request.

        Args:
            default_max_tokens: used when ``max_tokens`` is null.
            scope: whose drafting history the request shares.

        Returns:
            The job spec.

        Raises:
            RequestError: for unsupported options or an unusable prompt.
        """
        self.refuse_unsupported()
        if self.echo:
            raise RequestError("echo is not supported", "echo")
        if self.suffix:
            raise RequestError("suffix is not supported", "suffix")
        if self.best_of not in (None, 1):
            raise RequestError("best_of must be 1", "best_of")
        if self.logprobs is not None:
            raise RequestError("logprobs are not supported", "logprobs")
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise RequestError("one prompt per request: send a list of prompts as separate requests", "prompt")
            prompt = prompt[0]
        if isinstance(prompt, str) and not prompt.strip() or isinstance(prompt, list) and not prompt:
            raise RequestError("the prompt is empty", "prompt")
        explicit = self.max_tokens if "max_tokens" in self.model_fields_set else None
        return JobSpec(prompt, self.options(chat=False, max_tokens=self.max_tokens or default_max_tokens, scope=scope),
                       self.stream, self.include_usage(), strict_length=explicit is not None)
