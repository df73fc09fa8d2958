"""One request in flight: what it owns (a backend with its KV cache, its context, output and
random numbers, its tree sizing) and the draft -> verify -> accept -> commit -> observe step.

The drafter and the tree sizer's calibration are shared with every other request of the same
``Session``; a request only reads and teaches them. So requests may advance step by step in
any interleaving and each gets exactly what it gets alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
import numpy as np

from adaspec.backends.base import Backend, NodeOutputs, Pick
from adaspec.backends.pool import BackendPool
from adaspec.options import RequestOptions
from adaspec.output import OutputTracker
from adaspec.drafters.prediction import PredictionDrafter
from adaspec.errors import AdaspecError
from adaspec.session import RequestDrafting, Session
from adaspec.stats import GenerationStats
from adaspec.tree import DraftTree
from adaspec.verify import accept_path


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


@dataclass(frozen=True)
class StepReport:
    """What one verification step did, for metrics.

    Attributes:
        draft_tokens: tree nodes verified besides the root.
        accepted_depth: draft tokens accepted (the accepted path's length minus the root).
        new_tokens: tokens the step added to the output (after any cut at a stop).
    """

    draft_tokens: int
    accepted_depth: int
    new_tokens: int


class Request:
    """One generation, advanced by ``start`` then ``step`` until ``finished``.

    Made by ``Generator.open``. It is given what it needs and owns what is its own: a backend
    (its KV cache) from the pool while it runs, its context, output and random numbers. What
    it learns from goes through the shared ``Session``. Not thread-safe on its own; different
    requests may be stepped from different threads.

    Args:
        session: the shared drafter and sizer.
        pool: where its backend comes from and goes back to.
        prompt_ids: ``[p]`` int64 prompt ids.
        options: what was asked (sampling, stop strings...).
        output: collects its tokens and decides where generation ends (its limit fits the context).
        prediction_ids: ``[q]`` token ids of the output the client predicted (OpenAI's Predicted
            Outputs), drafted from; None without one.
    """

    def __init__(self, session: Session, pool: BackendPool, prompt_ids: np.ndarray, options: RequestOptions,
                 output: OutputTracker, prediction_ids: np.ndarray | None = None) -> None:
        self.session = session
        self.pool = pool
        self.prompt_ids = prompt_ids
        self.options = options
        self.sampling = options.sampling
        self.limit = output.limit
        self.stats = GenerationStats(prompt_tokens=int(prompt_ids.size))
        self.output = output
        self.context = np.empty(prompt_ids.size + self.limit, dtype=np.int64)  # [p + limit] prompt then output
        self.context[: prompt_ids.size] = prompt_ids
        self.length = prompt_ids.size
        self.pending = -1  # the model's latest token: the next tree's root
        self.last_step: StepReport | None = None
        self.backend: Backend | None = None
        self.prediction_ids = prediction_ids
        self._drafting: RequestDrafting | None = None
        self._prediction: PredictionDrafter | None = None  # kept after close, for the usage counts
        # one uniform number per output position, drawn up front: the text depends on the seed only.
        # The tree budget shrinks to the tokens left, so no node looks past position limit - 1.
        self._uniforms = None if self.sampling.greedy else self.sampling.uniforms(self.limit)  # [limit]
        self._started = 0.0

    @property
    def finished(self) -> bool:
        """True once generation has ended (EOS, a stop string or the length limit)."""
        return self.output.finished

    def start(self) -> str:
        """Takes a backend and runs the prompt: the first token.

        Returns:
            The text that is final so far (possibly empty).

        Raises:
            AdaspecError: when the pool has no backend to spare, or the request was started before.
        """
        if self._started:
            raise AdaspecError("a request starts once")
        self._started = time.perf_counter()
        self.backend = self.pool.acquire(self.prompt_ids, self.options.cache_partition)
        self._drafting = self.session.begin(self.prompt_ids, self.sampling, self.options.scope, self.prediction_ids)
        self._prediction = self._drafting.prediction
        uniforms = None if self._uniforms is None else self._uniforms[:1]  # [1]
        first = self.backend.prefill(self.prompt_ids, Pick(self.sampling, uniforms, 0))
        self.stats.cached_prompt_tokens = self.backend.reused_prefix
        self.stats.prefill_s = time.perf_counter() - self._started
        self._append([int(first.tokens[0])])
        return self.output.text_delta()

    def step(self) -> str:
        """One draft -> verify -> accept -> commit -> observe step.

        Returns:
            The text that became final (possibly empty).
        """
        tree, pick = self.draft()
        tick = time.perf_counter()
        verified = self.backend.verify(tree, pick)
        return self.finish(tree, verified, time.perf_counter() - tick)

    def draft(self) -> tuple[DraftTree, Pick]:
        """The first half of a step: the tree to verify and how to pick its tokens.

        A caller that verifies several requests' trees in one forward (the server) calls
        ``draft`` on each, verifies, then ``finish`` on each.

        Returns:
            The tree (sized for this step) and the pick for ``Backend.verify``.

        Raises:
            AdaspecError: before ``start`` or after ``close``.
        """
        if self.backend is None:
            raise AdaspecError("a request steps only between start() and close()")
        budget = min(self.session.budget, self.limit - len(self.output.ids))
        tick = time.perf_counter()
        tree = self.session.propose(self.context[: self.length], budget, self.pending, self.backend.chain_only,
                                    self._drafting)
        self.stats.draft_s += time.perf_counter() - tick
        position = len(self.output.ids)  # the output index of the token after the root
        node_uniforms = None if self._uniforms is None else self._uniforms[position + tree.depth]  # [n]
        return tree, Pick(self.sampling, node_uniforms, self.session.feedback_width)

    def finish(self, tree: DraftTree, verified: NodeOutputs, verify_s: float) -> str:
        """The second half of a step: accept, commit, teach the drafter, emit.

        Args:
            tree: the tree from ``draft``.
            verified: the backend's outputs for it.
            verify_s: the seconds its verification took (for the stats).

        Returns:
            The text that became final (possibly empty).
        """
        before_root = int(self.context[self.length - 2]) if self.length >= 2 else -1
        accepted = accept_path(tree, verified.tokens)  # [k]
        self.pending = int(verified.tokens[accepted[-1]])
        self.backend.commit(accepted)
        self.stats.verify_s += verify_s
        tick = time.perf_counter()
        self.session.learn(tree, accepted, verified, self.pending, before_root, self._drafting)
        self.stats.draft_s += time.perf_counter() - tick
        self.stats.sizer_s = self._drafting.sizer_s
        self.stats.record_step(tree, accepted)
        tick = time.perf_counter()
        new_tokens = self._append(tree.tokens[accepted[1:]].tolist() + [self.pending])  # k tokens
        self.last_step = StepReport(tree.size - 1, accepted.size - 1, new_tokens)
        text = self.output.text_delta()
        self.stats.emit_s += time.perf_counter() - tick
        return text

    def _append(self, new_ids: np.ndarray | list[int]) -> int:
        """Adds accepted tokens to the output and the context; returns how many were kept."""
        before = len(self.output.ids)
        self.output.extend(new_ids)
        kept = len(self.output.ids) - before
        self.context[self.length : self.length + kept] = self.output.ids[before:]
        self.length += kept
        self.pending = self.output.ids[-1]
        return kept

    def result(self) -> Generation:
        """The generation so far (complete once ``finished``)."""
        self.stats.new_tokens = len(self.output.ids)
        self.stats.total_s = time.perf_counter() - self._started
        if self._prediction is not None:
            self.stats.accepted_prediction_tokens, self.stats.rejected_prediction_tokens = \
                self._prediction.accounting(self.output.ids)
        return Generation(
            text=self.output.text,
            token_ids=list(self.output.ids),
            prompt_ids=self.prompt_ids.tolist(),
            finish_reason=self.output.finish_reason or "length",
            stats=self.stats,
        )

    def close(self) -> None:
        """Frees the request's cache, hands its backend back to the pool and tells the drafter
        the request is over (idempotent)."""
        if self.backend is not None:
            backend, self.backend = self.backend, None
            self.pool.release(backend)
        if self._drafting is not None:
            drafting, self._drafting = self._drafting, None
            self.session.end(drafting, np.asarray(self.output.ids, dtype=np.int64))
