"""The decode loop: draft -> verify -> accept -> commit -> observe.

This is the only module that knows both a drafter and a model backend, and it knows the backend
only through the protocol in ``adaspec.backends.base``: numpy arrays in and out, no tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from adaspec.backends.base import DEFAULT_BUDGET, Backend, Pick
from adaspec.budget import LatencyProfile, TreeSizer, load_or_measure_profile
from adaspec.drafters import Drafter, StepFeedback, make_drafter
from adaspec.errors import AdaspecError
from adaspec.loading import LoadedModel
from adaspec.output import OutputTracker
from adaspec.sampling import SamplingParams
from adaspec.stats import GenerationStats
from adaspec.tree import DraftTree
from adaspec.verify import greedy_accept

# A prompt is text, chat messages ({"role": ..., "content": ...}), or token ids.
Prompt = Union[str, Sequence[Mapping[str, str]], Sequence[int], np.ndarray]

AUTO = "auto"  # the budget that sizes each step's tree from measured cost and calibrated acceptance


@dataclass
class Generation:
    """The result of one request.

    Attributes:
        text: the generated text (special tokens and any stop string left out).
        token_ids: the generated token ids (an ending EOS token included).
        prompt_ids: the prompt's token ids as the model saw them.
        finish_reason: ``eos``, ``stop`` or ``length``.
        stats: what it cost.
    """

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    finish_reason: str
    stats: GenerationStats = field(default_factory=GenerationStats)


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
            self.result = done.value
            raise

    def close(self) -> None:
        """Stops generating now and frees the request's cache (for a caller that walks away)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class Generator:
    """Lossless speculative decoding (greedy or sampled) for one model with one drafter.

    The drafter's learned state persists across the requests made through this object.

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
        return TextStream(self._decode(prompt_ids, min(max_new_tokens, room), list(stop), sampling))

    def _decode(self, prompt_ids: np.ndarray, limit: int, stop: list[str], sampling: SamplingParams) -> Iterator[str]:
        try:
            return (yield from self._steps(prompt_ids, limit, stop, sampling))
        finally:
            self.backend.release()

    def _steps(self, prompt_ids: np.ndarray, limit: int, stop: list[str], sampling: SamplingParams) -> Iterator[str]:
        stats = GenerationStats(prompt_tokens=int(prompt_ids.size))
        output = OutputTracker(self.model.tokenizer, self.model.eos_token_ids, stop, limit)
        context = np.empty(prompt_ids.size + limit, dtype=np.int64)  # [p + limit] prompt then output
        context[: prompt_ids.size] = prompt_ids
        length = prompt_ids.size
        feedback_k = self.drafter.feedback_top_k
        started = time.perf_counter()

        # one uniform number per output position, drawn up front: the text depends on the seed only.
        # The tree budget shrinks to the tokens left, so no node looks past position limit - 1.
        uniforms = None if sampling.greedy else sampling.uniforms(limit)  # [limit]
        self.drafter.begin(prompt_ids)
        if self.sizer is not None:
            self.sizer.begin((sampling.temperature, sampling.top_k, sampling.top_p))
        first = self.backend.prefill(prompt_ids, Pick(sampling, None if uniforms is None else uniforms[:1], 0))
        pending = int(first.tokens[0])
        stats.prefill_s = time.perf_counter() - started
        output.extend([pending])
        context[length] = pending
        length += 1
        yield output.text_delta()

        while not output.finished:
            budget = min(self.budget, limit - len(output.ids))
            tick = time.perf_counter()
            tree = self.drafter.propose(context[:length], budget)
            self._check_tree(tree, pending, budget)
            if self.backend.chain_only:
                tree = tree.first_chain()
            if self.sizer is not None:
                tree = self.sizer.size(tree)
            tock = time.perf_counter()
            stats.draft_s += tock - tick

            position = len(output.ids)  # the output index of the token after the root
            node_uniforms = None if uniforms is None else uniforms[position + tree.depth]  # [n]
            verified = self.backend.verify(tree, Pick(sampling, node_uniforms, feedback_k))
            accepted = greedy_accept(tree, verified.tokens)  # [k]
            pending = int(verified.tokens[accepted[-1]])
            self.backend.commit(accepted)
            tick = time.perf_counter()
            stats.verify_s += tick - tock

            if self.sizer is not None:
                self.sizer.update(tree, accepted)
            self.drafter.observe(StepFeedback(tree, accepted, pending, verified.topk_ids, verified.topk_probs))
            stats.draft_s += time.perf_counter() - tick
            stats.record_step(tree.size, accepted.size)

            new_ids = np.append(tree.tokens[accepted[1:]], pending)  # [k]
            before = len(output.ids)
            output.extend(new_ids)
            emitted = len(output.ids) - before
            context[length : length + emitted] = output.ids[before:]
            length += emitted
            yield output.text_delta()

        stats.new_tokens = len(output.ids)
        stats.total_s = time.perf_counter() - started
        return Generation(
            text=output.text,
            token_ids=list(output.ids),
            prompt_ids=prompt_ids.tolist(),
            finish_reason=output.finish_reason or "length",
            stats=stats,
        )

    def _check_tree(self, tree: DraftTree, pending: int, budget: int) -> None:
        """Rejects a drafter's tree that breaks the contract (a bug in the drafter)."""
        name = getattr(self.drafter, "name", type(self.drafter).__name__)
        if tree.size > budget:
            raise ValueError(f"drafter {name!r} returned {tree.size} nodes for a budget of {budget}")
        if int(tree.tokens[0]) != pending:
            raise ValueError(f"drafter {name!r} rooted its tree at {int(tree.tokens[0])}, not the pending token {pending}")
        if int(tree.tokens.max()) >= self.model.vocab_size:
            raise ValueError(f"drafter {name!r} proposed token {int(tree.tokens.max())} outside the vocabulary")
