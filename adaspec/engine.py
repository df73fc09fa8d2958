"""The decode loop: draft -> verify -> accept -> commit -> observe.

This is the only module that knows both a drafter and a model backend, and it knows the backend
only through the protocol in ``adaspec.backends.base``: numpy arrays in and out, no tensors.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from adaspec.backends.base import Backend
from adaspec.budget import LatencyProfile, TreeSizer, load_or_measure_profile
from adaspec.drafters import Drafter, make_drafter
from adaspec.errors import AdaspecError
from adaspec.loading import LoadedModel
from adaspec.request import Generation, Request
from adaspec.sampling import SamplingParams

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

    The drafter's learned state and the tree sizer's calibration persist across the requests
    made through this object and are shared by them; each request owns a backend (its KV
    cache) taken from a pool, its context, output and random numbers. Requests may therefore
    be interleaved step by step (``open`` / ``Request.step``, or several ``stream`` iterators),
    and from several threads.

    Args:
        model: from ``adaspec.load``.
        drafter: a registry name or spec (``none``, ``lookup``, ``recycling``, ``aded``,
            ``hybrid``...), a Drafter instance, or None for the backend's default (``hybrid`` on
            hf, ``lookup`` on llama.cpp: the fastest on each in the benchmark).
        budget: the most tree nodes per step, root included (1 = plain decoding), None for
            the backend's own default (``DEFAULT_BUDGET`` on hf, ``"auto"`` on llama.cpp), or
            ``"auto"``: each step verifies the part of the drafter's tree that maximises
            expected tokens per second under the measured verify cost (possibly only the root).
        max_context: cap on prompt + output tokens; at most the model's own limit.
        profile: for ``"auto"``: a ``LatencyProfile`` or its JSON file; None measures one
            at first use and caches it per backend / model / device / dtype / thread count.
        backend: the runtime to decode with; None makes a new one of the kind the model was
            loaded for (``adaspec.load(..., backend=...)``).

    Raises:
        AdaspecError: for an unknown drafter or a budget < 1.
    """

    def __init__(
        self,
        model: LoadedModel,
        drafter: str | Drafter | None = None,
        budget: int | str | None = None,
        max_context: int | None = None,
        profile: LatencyProfile | str | Path | None = None,
        backend: Backend | None = None,
    ) -> None:
        if budget is not None and budget != AUTO and (not isinstance(budget, int) or budget < 1):
            raise AdaspecError(f"budget must be a number of tree nodes >= 1 or {AUTO!r}, got {budget!r}")
        self.model = model
        self.backend = backend if backend is not None else model.new_backend()
        self._idle_backends: list[Backend] = [self.backend]  # backends no request holds now
        self._pool_lock = threading.Lock()
        self.shared_lock = threading.RLock()  # guards the drafter and the sizer's calibration
        if drafter is None:
            drafter = self.backend.default_drafter
        if budget is None:  # plain decoding needs no budget, so no latency profile either
            budget = 1 if drafter == "none" else self.backend.default_budget
        self.drafter = make_drafter(drafter, model.vocab_size) if isinstance(drafter, str) else drafter
        self.sizer: TreeSizer | None = None  # sizes each step's tree when the budget is "auto"
        if budget == AUTO:
            self.sizer = TreeSizer(load_or_measure_profile(self.backend, profile))
            budget = self.sizer.profile.max_size
        self.budget = int(budget)
        self.max_context = min(max_context or model.max_context, model.max_context)

    def encode(self, prompt: Prompt, chat: bool | None = None) -> np.ndarray:
        """Turns a prompt into token ids.

        Args:
            prompt: text, chat messages, or token ids.
            chat: for text, wrap it as one user message in the chat template; None means
                "when the tokenizer has a chat template".

        Returns:
            ``[p]`` int64 prompt ids.

        Raises:
            AdaspecError: for an empty prompt or token ids outside the vocabulary.
        """
        tokenizer = self.model.tokenizer
        if isinstance(prompt, str):
            if not prompt.strip():
                raise AdaspecError("the prompt is empty")
            use_chat = chat if chat is not None else tokenizer.chat_template is not None
            if use_chat:
                return self.encode([{"role": "user", "content": prompt}])
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

    def generate(
        self,
        prompt: Prompt,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        chat: bool | None = None,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Generation:
        """Generates a completion with exactly the distribution plain decoding has.

        Greedy (temperature 0) output equals plain greedy decoding token for token; sampled
        output is distributed exactly as plain sampling with the same settings.

        Args:
            prompt: text, chat messages, or token ids.
            max_new_tokens: the most tokens to generate (>= 1).
            stop: strings that end generation.
            chat: see ``encode``.
            temperature: 0 for greedy, else the sampling temperature.
            top_k: sample only among the k most likely tokens (0: all).
            top_p: sample only from the most likely tokens holding this much probability (1: all).
            seed: seeds this request's random generator; the same seed gives the same text.

        Returns:
            The text, token ids and stats.

        Raises:
            AdaspecError: for an empty or over-long prompt, max_new_tokens < 1, or bad
                sampling settings.
        """
        stream = self.stream(prompt, max_new_tokens=max_new_tokens, stop=stop, chat=chat,
                             temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(
        self,
        prompt: Prompt,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        chat: bool | None = None,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> TextStream:
        """Like ``generate``, but yields text as it is accepted.

        Args:
            prompt, max_new_tokens, stop, chat, temperature, top_k, top_p, seed: as for ``generate``.

        Returns:
            An iterator of text pieces whose ``result`` holds the Generation at the end.

        Raises:
            AdaspecError: as ``generate``, before the first piece.
        """
        request = self.open(prompt, max_new_tokens=max_new_tokens, stop=stop, chat=chat,
                            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return TextStream(self._run(request))

    def open(
        self,
        prompt: Prompt,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        chat: bool | None = None,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Request:
        """Checks a request and prepares it, without running the model yet.

        Drive it with ``start()`` and then ``step()`` until ``finished``; ``close()`` frees its
        cache. A server interleaves many of these step by step.

        Args:
            prompt, max_new_tokens, stop, chat, temperature, top_k, top_p, seed: as for
                ``generate``; ``max_new_tokens`` is cut to the room the context leaves.

        Returns:
            The request.

        Raises:
            AdaspecError: as ``generate``.
        """
        if max_new_tokens < 1:
            raise AdaspecError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        sampling = SamplingParams(temperature, top_k, top_p, seed)
        if isinstance(stop, str):
            stop = [stop]
        prompt_ids = self.encode(prompt, chat)
        room = self.max_context - prompt_ids.size
        if room < 1:
            raise AdaspecError(
                f"the prompt has {prompt_ids.size} tokens but the context holds {self.max_context}; "
                "no room is left to generate"
            )
        return Request(self, prompt_ids, min(max_new_tokens, room), list(stop), sampling)

    @staticmethod
    def _run(request: Request) -> Iterator[str]:
        try:
            yield request.start()
            while not request.finished:
                yield request.step()
            return request.result()
        finally:
            request.close()

    def acquire_backend(self) -> Backend:
        """A backend no other request holds (a new one when all are busy).

        Returns:
            The backend, with an empty cache.
        """
        with self._pool_lock:
            if self._idle_backends:
                return self._idle_backends.pop()
        return self.model.new_backend()

    def return_backend(self, backend: Backend) -> None:
        """Frees a request's cache and keeps its backend for the next request.

        Args:
            backend: from ``acquire_backend``.
        """
        backend.release()
        with self._pool_lock:
            self._idle_backends.append(backend)
