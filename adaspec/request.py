"""One request in flight: what it owns (a backend with its KV cache, its context, output and
random numbers, its tree sizing) and the draft -> verify -> accept -> commit -> observe step.

The drafter and the tree sizer's calibration are shared with every other request of the same
``Generator``; a request only reads and teaches them. So requests may advance step by step in
any interleaving and each gets exactly what it gets alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from adaspec.backends.base import Backend, NodeOutputs, Pick
from adaspec.drafters import StepFeedback
from adaspec.output import OutputTracker
from adaspec.sampling import SamplingParams
from adaspec.stats import GenerationStats
from adaspec.tree import DraftTree
from adaspec.verify import greedy_accept

if TYPE_CHECKING:
    from adaspec.engine import Generator


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

    Made by ``Generator.open``; not thread-safe on its own (the Generator serialises access
    to what requests share).

    Args:
        generator: the generator whose model, drafter and sizer it uses.
        prompt_ids: ``[p]`` int64 prompt ids.
        limit: the most tokens to generate (fits the context).
        stop: strings that end generation.
        sampling: greedy or sampling settings, with the request's seed.
    """

    def __init__(self, generator: Generator, prompt_ids: np.ndarray, limit: int, stop: list[str],
                 sampling: SamplingParams) -> None:
        self.generator = generator
        self.prompt_ids = prompt_ids
        self.limit = limit
        self.sampling = sampling
        self.stats = GenerationStats(prompt_tokens=int(prompt_ids.size))
        self.output = OutputTracker(generator.model.tokenizer, generator.model.eos_token_ids, stop, limit)
        self.context = np.empty(prompt_ids.size + limit, dtype=np.int64)  # [p + limit] prompt then output
        self.context[: prompt_ids.size] = prompt_ids
        self.length = prompt_ids.size
        self.pending = -1  # the model's latest token: the next tree's root
        self.last_step: StepReport | None = None
        self.backend: Backend | None = None
        self._sizer = None
        # one uniform number per output position, drawn up front: the text depends on the seed only.
        # The tree budget shrinks to the tokens left, so no node looks past position limit - 1.
        self._uniforms = None if sampling.greedy else sampling.uniforms(limit)  # [limit]
        self._started = 0.0

    @property
    def finished(self) -> bool:
        """True once generation has ended (EOS, a stop string or the length limit)."""
        return self.output.finished

    def start(self) -> str:
        """Takes a backend and runs the prompt: the first token.

        Returns:
            The text that is final so far (possibly empty).
        """
        generator = self.generator
        self._started = time.perf_counter()
        self.backend = generator.acquire_backend()
        with generator.shared_lock:
            generator.drafter.begin(self.prompt_ids)
            if generator.sizer is not None:
                sampling = self.sampling
                self._sizer = generator.sizer.begin((sampling.temperature, sampling.top_k, sampling.top_p))
        uniforms = None if self._uniforms is None else self._uniforms[:1]  # [1]
        first = self.backend.prefill(self.prompt_ids, Pick(self.sampling, uniforms, 0))
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
        """
        generator = self.generator
        assert self.backend is not None, "start() first"
        budget = min(generator.budget, self.limit - len(self.output.ids))
        context = self.context[: self.length]  # [L]
        tick = time.perf_counter()
        with generator.shared_lock:
            tree = generator.drafter.propose(context, budget)
            check_tree_contract(tree, self.pending, budget, generator.model.vocab_size, generator.drafter.name)
            if self.backend.chain_only:
                tree = tree.first_chain()
            if self._sizer is not None:
                tree = self._sizer.size(tree)
        self.stats.draft_s += time.perf_counter() - tick
        position = len(self.output.ids)  # the output index of the token after the root
        node_uniforms = None if self._uniforms is None else self._uniforms[position + tree.depth]  # [n]
        return tree, Pick(self.sampling, node_uniforms, generator.drafter.feedback_width)

    def finish(self, tree: DraftTree, verified: NodeOutputs, verify_s: float) -> str:
        """The second half of a step: accept, commit, teach the drafter, emit.

        Args:
            tree: the tree from ``draft``.
            verified: the backend's outputs for it.
            verify_s: the seconds its verification took (for the stats).

        Returns:
            The text that became final (possibly empty).
        """
        generator = self.generator
        before_root = int(self.context[self.length - 2]) if self.length >= 2 else -1
        accepted = greedy_accept(tree, verified.tokens)  # [k]
        self.pending = int(verified.tokens[accepted[-1]])
        self.backend.commit(accepted)
        self.stats.verify_s += verify_s
        tick = time.perf_counter()
        with generator.shared_lock:
            if self._sizer is not None:
                self._sizer.update(tree, accepted)
            generator.drafter.observe(StepFeedback(tree, accepted, self.pending, verified.topk_ids,
                                                   verified.topk_probs, before_root))
        self.stats.draft_s += time.perf_counter() - tick
        self.stats.record_step(tree.size, accepted.size)
        new_tokens = self._append(np.append(tree.tokens[accepted[1:]], self.pending))  # [k]
        self.last_step = StepReport(tree.size - 1, accepted.size - 1, new_tokens)
        return self.output.text_delta()

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
        return Generation(
            text=self.output.text,
            token_ids=list(self.output.ids),
            prompt_ids=self.prompt_ids.tolist(),
            finish_reason=self.output.finish_reason or "length",
            stats=self.stats,
        )

    def close(self) -> None:
        """Frees the request's cache and hands its backend back to the generator (idempotent)."""
        if self.backend is not None:
            backend, self.backend = self.backend, None
            self.generator.return_backend(backend)


def check_tree_contract(tree: DraftTree, pending: int, budget: int, vocab_size: int, name: str) -> None:
    """Rejects a drafter's tree that breaks the contract (a bug in the drafter).

    Args:
        tree: the proposed tree.
        pending: the token the tree must be rooted at.
        budget: the most nodes allowed.
        vocab_size: the model's vocabulary size.
        name: the drafter's name, for the message.

    Raises:
        ValueError: if the tree is too big, wrongly rooted, or holds a token outside the vocabulary.
    """
    if tree.size > budget:
        raise ValueError(f"drafter {name!r} returned {tree.size} nodes for a budget of {budget}")
    if int(tree.tokens[0]) != pending:
        raise ValueError(f"drafter {name!r} rooted its tree at {int(tree.tokens[0])}, not the pending token {pending}")
    if int(tree.tokens.max()) >= vocab_size:
        raise ValueError(f"drafter {name!r} proposed token {int(tree.tokens.max())} outside the vocabulary")
