"""What one request asks for, in one object passed through the API, the server and the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from adaspec.errors import AdaspecError
from adaspec.sampling import SamplingParams

MAX_STOP_STRINGS = 16  # as OpenAI's API allows at most 4, vLLM any number; 16 keeps the stop check cheap
MAX_SCOPE_LENGTH = 256


@dataclass(frozen=True)
class RequestOptions:
    """How to generate one completion.

    Attributes:
        max_new_tokens: the most tokens to generate (>= 1; cut to the room the context leaves).
        stop: strings that end generation (the text ends just before one).
        chat: wrap text prompts in the chat template; None means "when the tokenizer has one".
        temperature: 0 for greedy, else the sampling temperature.
        top_k: sample only among the k most likely tokens (0: all).
        top_p: sample only from the most likely tokens holding this much probability (1: all).
        seed: seeds the request's random numbers; the same seed gives the same text.
        prediction: text the output is expected to be close to (OpenAI's Predicted Outputs: the
            file being edited, the document being rewritten); it only drafts, so the output is
            the model's own either way.
        scope: whose shared drafting history, learned tables and acceptance calibration the
            request draws on and teaches, and whose cached prompt positions it may reuse
            (``""``: the server's or generator's common ones).
        cache_salt: separates prefix caches further (vLLM's ``cache_salt``): a request reuses
            cached prompt positions only from requests with the same scope and salt.

    Raises:
        AdaspecError: for a value out of range or of the wrong type.
    """

    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    chat: bool | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    prediction: str | None = None
    scope: str = ""
    cache_salt: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise AdaspecError(f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if not all(isinstance(s, str) for s in stop):
            raise AdaspecError("stop must be a string or a list of strings")
        stop = tuple(s for s in stop if s)
        if len(stop) > MAX_STOP_STRINGS:
            raise AdaspecError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}")
        object.__setattr__(self, "stop", stop)
        if self.chat is not None and not isinstance(self.chat, bool):
            raise AdaspecError(f"chat must be true, false or None, got {self.chat!r}")
        if self.prediction is not None and not isinstance(self.prediction, str):
            raise AdaspecError("prediction must be text")
        for name in ("scope", "cache_salt"):
            if not isinstance(getattr(self, name), str) or len(getattr(self, name)) > MAX_SCOPE_LENGTH:
                raise AdaspecError(f"{name} must be text of at most {MAX_SCOPE_LENGTH} characters")
        self.sampling  # validates temperature, top_k, top_p and seed

    @property
    def sampling(self) -> SamplingParams:
        """The sampling settings with the request's seed."""
        return SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)

    @property
    def cache_partition(self) -> str:
        """Whose cached prompt positions the request may reuse: its scope and salt together."""
        return self.scope if not self.cache_salt else f"{self.scope}\x00{self.cache_salt}"

    @classmethod
    def of(cls, options: RequestOptions | None = None, **changes: Any) -> RequestOptions:
        """Options from a base (default: all defaults) with some fields changed.

        Args:
            options: the base options.
            changes: fields to change, by name.

        Returns:
            The options.

        Raises:
            AdaspecError: for an unknown field or a bad value.
        """
        unknown = set(changes) - FIELD_NAMES
        if unknown:
            raise AdaspecError(f"unknown option {sorted(unknown)[0]!r}; the options are: {', '.join(sorted(FIELD_NAMES))}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **changes) if changes else base

    def to_dict(self) -> Mapping[str, Any]:
        """Every field by name (JSON-ready)."""
        return {**dataclasses.asdict(self), "stop": list(self.stop)}


FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(RequestOptions))
