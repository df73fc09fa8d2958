"""The decode loop: draft -> verify -> accept -> commit -> observe.

``Generator`` is the public facade: it loads nothing itself, but puts a model's backends in a
pool, a drafter and a tree sizer in a shared ``Session``, and opens requests over the two.
It knows a backend only through the protocol in ``adaspec.backends.base``: numpy arrays in and
out, no tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from adaspec.backends.base import Backend
from adaspec.backends.pool import BackendPool
from adaspec.budget import LatencyProfile, TreeSizer, load_or_measure_profile
from adaspec.drafters import Drafter, make_drafter
from adaspec.errors import AdaspecError
from adaspec.models.loaded import LoadedModel
from adaspec.options import RequestOptions
from adaspec.output import OutputTracker
from adaspec.request import Generation, Request
from adaspec.session import Session

# A prompt is text, chat messages ({"role": ..., "content": ...}), or token ids.
Prompt = Union[str, Sequence[Mapping[str, str]], Sequence[int], np.ndarray]

AUTO = "auto"  # the budget that sizes each step's tree from measured cost and calibrated acceptance


class TextStream:
    """Iterates over text pieces as they are accepted; ``result`` is set once it is exhausted."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.result: Generation | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as done:
            if self.result is None:  # a finished generator answers later calls with None
                self.result = done.value
            raise

    def close(self) -> None:
        """Stops generating now and frees the request's cache (for a caller that walks away)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class Generator:
    """Lossless speculative decoding (greedy or sampled) for one model with one drafter.

    The public facade: a ``Session`` (the drafter and the tree sizer's calibration, learned
    from every request and shared by them) and a ``BackendPool`` (one backend, i.e. one KV
    cache, per request in flight). Each request owns its backend while it runs, its context,
    output and random numbers; requests may be interleaved step by step (``open`` /
    ``Request.step``, or several ``stream`` iterators), and from several threads.

    Every generating method takes the request's options as a ``RequestOptions`` and/or as
    keywords naming its fields (``max_new_tokens``, ``stop``, ``chat``, ``temperature``,
    ``top_k``, ``top_p``, ``seed``, ``prediction``, ``scope``); keywords override the object's fields.

    Args:
        model: from ``adaspec.load``.
        drafter: a registry name or spec (``none``, ``lookup``, ``recycling``, ``aded``,
            ``hybrid``...), a Drafter instance, or None for the runtime's default
            (``model.runtime.default_drafter``: the fastest on it in the benchmark).
        budget: the most tree nodes per step, root included (1 = plain decoding; at most
            ``model.runtime.max_tree_nodes``), None for the runtime's own default
            (``model.runtime.default_budget``), or ``"auto"``: each step verifies the part of the
            drafter's tree that maximises expected tokens per second under the measured verify
            cost (possibly only the root).
        max_context: cap on prompt + output tokens; at most the model's own limit.
        profile: for ``"auto"``: a ``LatencyProfile`` or its JSON file; None measures one
            at first use and caches it per backend / model / device / dtype / thread count.
        backend: a backend to start the pool with; None makes one of the kind the model was
            loaded for (``adaspec.load(..., backend=...)``).
        max_requests: the most requests in flight at once (each holds a KV cache).
        max_idle_backends: backends kept warm between requests (the rest are freed).

    Raises:
        AdaspecError: for an unknown drafter, a budget the runtime cannot verify, or bad pool limits.
    """

    def __init__(
        self,
        model: LoadedModel,
        drafter: str | Drafter | None = None,
        budget: int | str | None = None,
        max_context: int | None = None,
        profile: LatencyProfile | str | Path | None = None,
        backend: Backend | None = None,
        max_requests: int = 64,
        max_idle_backends: int = 2,
    ) -> None:
        runtime = model.runtime
        most = runtime.max_tree_nodes
        if budget is not None and budget != AUTO and (isinstance(budget, bool) or not isinstance(budget, int)
                                                      or not 1 <= budget <= most):
            raise AdaspecError(f"budget must be a number of tree nodes in 1..{most} (the most the {runtime.name} "
                               f"runtime verifies at once) or {AUTO!r}, got {budget!r}")
        self.model = model
        self.pool = BackendPool(model.new_backend, max_in_use=max_requests, max_idle=max_idle_backends, first=backend)
        if drafter is None:
            drafter = runtime.default_drafter
        if budget is None:  # plain decoding needs no budget, so no latency profile either
            budget = 1 if drafter == "none" else runtime.default_budget
        drafter = make_drafter(drafter, model.vocab_size) if isinstance(drafter, str) else drafter
        if not isinstance(drafter, Drafter):
            raise AdaspecError(f"a drafter is a spec or an adaspec.Drafter, got {type(drafter).__name__}")
        sizer = None  # sizes each step's tree when the budget is "auto"
        if budget == AUTO:
            sizer = TreeSizer(load_or_measure_profile(self.pool.prototype, profile, most))
            budget = min(sizer.profile.max_size, most)
        self.session = Session(drafter, int(budget), sizer, model.vocab_size)
        self.max_context = min(max_context or model.max_context, model.max_context)

    @property
    def drafter(self) -> Drafter:
        """The shared drafter."""
        return self.session.drafter

    @property
    def sizer(self) -> TreeSizer | None:
        """The shared tree sizer (None unless the budget is ``"auto"``)."""
        return self.session.sizer

    @property
    def budget(self) -> int:
        """The most tree nodes per step, root included."""
        return self.session.budget

    @property
    def backend(self) -> Backend:
        """A backend of this generator's runtime, for what it says about itself (name, profile key)."""
        return self.pool.prototype

    def encode(self, prompt: Prompt, chat: bool | None = None, tokenizer: Any = None) -> np.ndarray:
        """Turns a prompt into token ids.

        Args:
            prompt: text, chat messages, or token ids.
            chat: for text, wrap it as one user message in the chat template; None means
                "when the tokenizer has a chat template".
            tokenizer: the tokenizer to use: the model's (None) or a copy of it, for a thread
                that encodes while another decodes (a fast tokenizer is not safe to share).

        Returns:
            ``[p]`` int64 prompt ids.

        Raises:
            AdaspecError: for an empty prompt or token ids outside the vocabulary.
        """
        tokenizer = tokenizer if tokenizer is not None else self.model.tokenizer
        if isinstance(prompt, str):
            if not prompt.strip():
                raise AdaspecError("the prompt is empty")
            use_chat = chat if chat is not None else tokenizer.chat_template is not None
            if use_chat:
                return self.encode([{"role": "user", "content": prompt}], tokenizer=tokenizer)
            ids = tokenizer(prompt).input_ids
        elif len(prompt) and isinstance(prompt[0], Mapping):
            if tokenizer.chat_template is None:
                raise AdaspecError("chat messages were given but the tokenizer has no chat template")
            text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False).input_ids
        else:
            ids = [int(i) for i in prompt]
            if ids and (min(ids) < 0 or max(ids) >= self.model.vocab_size):
                raise AdaspecError(f"prompt token ids must lie in the vocabulary [0, {self.model.vocab_size})")
        if not ids:
            raise AdaspecError("the prompt is empty")
        return np.asarray(ids, dtype=np.int64)

    def generate(self, prompt: Prompt, options: RequestOptions | None = None, **fields: Any) -> Generation:
        """Generates a completion with exactly the distribution plain decoding has.

        Greedy (temperature 0) output equals plain greedy decoding token for token; sampled
        output is distributed exactly as plain sampling with the same settings.

        Args:
            prompt: text, chat messages, or token ids.
            options: the request's options (default: ``RequestOptions()``).
            fields: ``RequestOptions`` fields to set or override, e.g. ``max_new_tokens=64``.

        Returns:
            The text, token ids and stats.

        Raises:
            AdaspecError: for an empty or over-long prompt or a bad option.
        """
        stream = self.stream(prompt, options, **fields)
        for _ in stream:
            pass
        return stream.result

    def stream(self, prompt: Prompt, options: RequestOptions | None = None, **fields: Any) -> TextStream:
        """Like ``generate``, but yields text as it is accepted.

        Args:
            prompt: text, chat messages, or token ids.
            options: the request's options.
            fields: ``RequestOptions`` fields to set or override.

        Returns:
            An iterator of text pieces whose ``result`` holds the Generation at the end.

        Raises:
            AdaspecError: as ``generate``, before the first piece.
        """
        return TextStream(self._run(self.open(prompt, options, **fields)))

    def open(self, prompt: Prompt, options: RequestOptions | None = None, *, tokenizer: Any = None,
             **fields: Any) -> Request:
        """Checks a request and prepares it (its prompt and prediction tokenized), without running
        the model yet.

        Drive it with ``start()`` and then ``step()`` until ``finished``; ``close()`` frees its
        cache. A server interleaves many of these step by step, and opens them on other threads
        than the one that steps them.

        Args:
            prompt: text, chat messages, or token ids.
            options: the request's options; ``max_new_tokens`` is cut to the room the context leaves.
            tokenizer: the tokenizer that encodes the prompt and prediction (see ``encode``);
                the request decodes its output with the model's own.
            fields: ``RequestOptions`` fields to set or override.

        Returns:
            The request.

        Raises:
            AdaspecError: as ``generate``.
        """
        options = RequestOptions.of(options, **fields)
        tokenizer = tokenizer if tokenizer is not None else self.model.tokenizer
        prompt_ids = self.encode(prompt, options.chat, tokenizer)
        room = self.max_context - prompt_ids.size
        if room < 1:
            raise AdaspecError(
                f"the prompt has {prompt_ids.size} tokens but the context holds {self.max_context}; "
                "no room is left to generate"
            )
        limit = min(options.max_new_tokens, room)
        output = OutputTracker(self.model.tokenizer, self.model.eos_token_ids, options.stop, limit)
        prediction = None
        if options.prediction:
            prediction = np.asarray(tokenizer(options.prediction, add_special_tokens=False).input_ids,
                                    dtype=np.int64)
        return Request(self.session, self.pool, prompt_ids, options, output, prediction)

    @staticmethod
    def _run(request: Request) -> Iterator[str]:
        try:
            yield request.start()
            while not request.finished:
                yield request.step()
            return request.result()
        finally:
            request.close()
