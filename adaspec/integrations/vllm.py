"""adaspec's drafters as a vLLM proposer, through vLLM's documented ``custom_class`` contract.

Usage (vLLM 0.32, ``make vllm`` here; on a GPU ``pip install vllm==0.32.0``)::

    from vllm import LLM
    from adaspec.integrations.vllm import engine_args

    llm = LLM("model/dir", **engine_args("suffix", num_speculative_tokens=8))

which is ``speculative_config={"method": "custom_class", "model":
"adaspec.integrations.vllm.AdaspecProposer", "num_speculative_tokens": 8}`` and
``additional_config={"adaspec": {"drafter": "suffix", "budget": "auto"}}``, checked before vLLM
starts. vLLM builds ``AdaspecProposer(vllm_config)`` in its engine process and, after every step,
calls ``propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu, ...)`` for a chain of draft
tokens per batch row, which it verifies in the next step. Each row is matched to its request by
content (``vllm_rows``), the drafter proposes from the request's context and its own learned state,
the tree's first chain is cut to what pays (``vllm_sizing``), and what vLLM accepted teaches the
calibration. Outputs are vLLM's own: a draft changes speed, never text (vLLM's verification).

What a proposer cannot do here: see request ids, sampling settings or the model's top-k (so the
calibration is shared by all requests and ``aded`` learns from emitted tokens only), or receive a
client's prediction (Predicted Outputs); see ``docs/scale-out.md``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from adaspec.drafters import make_drafter
from adaspec.drafters.base import Drafter, DraftRequest, StepFeedback
from adaspec.integrations.vllm_config import (DEFAULT_DRAFTER, PROPOSER, VLLM_VERSION, ProposerSettings,
                                              check_vllm_version, engine_args, read_settings)
from adaspec.integrations.vllm_rows import RowMatch, RowState, RowTracker
from adaspec.integrations.vllm_sizing import ChainSizer
from adaspec.tree import DraftTree

logger = logging.getLogger(__name__)

TREE_NODES_PER_TOKEN = 4  # tree nodes the drafter may use per chain token (later matches extend the chain)
MAX_DRAFTED_NODES = 64  # the largest tree asked of the drafter, from which a row's chain is cut (not a verification limit: vLLM verifies chains)


def installed_vllm_version() -> str:
    """The version of the vLLM this process runs (the proposer contract is pinned to one)."""
    import vllm

    return str(vllm.__version__)


@dataclass
class RequestDraft:
    """The proposer's side of one request (a ``RowState``'s payload).

    Attributes:
        drafter_state: what the drafter's ``begin`` returned (None once ended).
        chain: the chain returned at the last call, root first (None: nothing to learn from).
        explored: whether that chain was an exploration.
        plain_streak: calls in a row that returned no draft for it.
        recorded: context tokens already handed to the drafter's ``end``.
    """

    drafter_state: Any
    chain: DraftTree | None = None
    explored: bool = False
    plain_streak: int = 0
    recorded: int = 0


@dataclass
class ProposerStats:
    """Counts since the proposer started (read them from a test or a debugger; vLLM's own
    ``vllm:spec_decode_*`` metrics count the same drafts from the scheduler's side).

    Attributes:
        calls: ``propose`` calls.
        rows: live rows seen, over all calls.
        drafted: draft tokens returned.
        accepted: of those, the tokens vLLM accepted.
        new_states: requests begun (new rows, and rows no state continued).
        resumed: states that came back from the park (preempted requests).
        ended: states whose rows vanished.
        propose_ms: time spent inside ``propose``.
    """

    calls: int = 0
    rows: int = 0
    drafted: int = 0
    accepted: int = 0
    new_states: int = 0
    resumed: int = 0
    ended: int = 0
    propose_ms: float = 0.0


@dataclass
class StepClock:
    """The interval between calls and what the step in between verified.

    Attributes:
        started: ``perf_counter`` at the last call's start (None before the first).
        rows: live rows at the last call.
        drafted: draft tokens it returned.
    """

    started: float | None = None
    rows: int = 0
    drafted: int = 0


class AdaspecProposer:
    """A vLLM ``custom_class`` proposer made of an adaspec drafter (module doc).

    Args:
        vllm_config: vLLM's ``VllmConfig`` (read: ``speculative_config.num_speculative_tokens``,
            ``model_config.get_vocab_size()`` and ``max_model_len``, ``additional_config``).

    Raises:
        AdaspecError: for another vLLM version or bad settings (``engine_args`` raises the same
            errors before vLLM starts).
    """

    default_drafter = DEFAULT_DRAFTER

    def __init__(self, vllm_config: Any) -> None:
        check_vllm_version(installed_vllm_version())
        self.k = int(vllm_config.speculative_config.num_speculative_tokens)
        self.settings: ProposerSettings = read_settings(getattr(vllm_config, "additional_config", None), os.environ,
                                                        self.default_drafter)
        self.settings.check(self.k)
        self.cap = self.k if self.settings.budget == "auto" else int(self.settings.budget)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self.vocab_size = int(vllm_config.model_config.get_vocab_size())
        self.drafter: Drafter = make_drafter(self.settings.drafter, self.vocab_size)
        self.sizer: ChainSizer | None = ChainSizer() if self.settings.budget == "auto" else None
        self.tracker = RowTracker(new_payload=self._begin)
        self.stats = ProposerStats()
        self.clock = StepClock()
        self._warm_up()
        logger.info("adaspec proposer: drafter %s, budget %s, chains of at most %d tokens",
                    self.settings.drafter, self.settings.budget, self.cap)

    def _warm_up(self) -> None:
        """Runs the drafter once on a made-up context, so that neither compiling it nor allocating
        its history (``suffix``: ~0.4 s for 2^20 tokens) stalls the first steps that use them. The
        made-up request's output is its last token alone: a history entry nothing can continue."""
        context = np.tile(np.arange(1, 9, dtype=np.int64) % self.vocab_size, 4)  # [32]
        state = self.drafter.begin(DraftRequest(context[:16]))
        self.drafter.propose(context, min(MAX_DRAFTED_NODES, TREE_NODES_PER_TOKEN * self.cap + 1), state)
        self.drafter.end(state, context[-1:].copy())

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """vLLM's runner hands every proposer the target model; this one drafts without it.

        Args:
            *args: ignored.
            **kwargs: ignored.
        """

    def propose(self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, **kwargs: Any) -> list[list[int]]:
        """One chain of draft tokens per live batch row.

        Args:
            sampled_token_ids: per live row, the tokens this step added (accepted drafts and the
                model's next token; empty for a prefill chunk).
            num_tokens_no_spec: ``[max_rows]`` int, tokens per row, those just added included.
            token_ids_cpu: ``[max_rows, max_model_len]`` int, each row's tokens (stale past its count).
            **kwargs: vLLM's other arguments (``slot_mappings``...), unused.

        Returns:
            Per live row, at most ``num_speculative_tokens`` draft tokens (possibly none).
        """
        started = time.perf_counter()
        matches, vanished = self.tracker.match(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        for state in vanished:
            self._end(state)
        for match, added in zip(matches, sampled_token_ids):
            if match.state is not None and match.continued:
                self._learn(match, added)
        self._time_step(started, matches, sampled_token_ids)
        chains = [self._draft(match.state) for match in matches]  # [rows] DraftTree | None
        if self.sizer is None:
            lengths, explored = [0 if c is None else c.size - 1 for c in chains], set()
        else:
            lengths, explored = self.sizer.lengths(chains, [m.state.payload.plain_streak if m.state else 0
                                                            for m in matches])
        out: list[list[int]] = []
        for row, (match, chain, length) in enumerate(zip(matches, chains, lengths)):
            if match.state is None or chain is None:
                out.append([])
                continue
            request: RequestDraft = match.state.payload
            request.chain = chain.prefix(length + 1) if length else None
            request.explored = row in explored
            request.plain_streak = 0 if length else request.plain_streak + 1
            out.append(chain.tokens[1 : length + 1].tolist())
        self._count(matches, out, started)
        return out

    def _begin(self, state: RowState) -> RequestDraft:
        """A new request's payload: the drafter begins on its prompt."""
        self.stats.new_states += 1
        prompt = state.context[: state.prompt_length].copy()
        return RequestDraft(self.drafter.begin(DraftRequest(prompt)), recorded=state.prompt_length)

    def _end(self, state: RowState) -> None:
        """A request's row is gone: what it generated since the last end goes to the drafter."""
        request: RequestDraft = state.payload
        if request.drafter_state is not None:
            self.drafter.end(request.drafter_state, state.context[request.recorded :].copy())
            request.recorded = state.length
        request.drafter_state, request.chain = None, None
        self.stats.ended += 1

    def _learn(self, match: RowMatch, added: Sequence[int]) -> None:
        """Teaches the sizer and the drafter what vLLM did with a continued row's last chain."""
        state = match.state
        request: RequestDraft = state.payload
        if match.resumed:  # a preempted request back: its drafter side was ended when it vanished
            self.stats.resumed += 1
            request.drafter_state = self.drafter.begin(DraftRequest(state.context[: request.recorded].copy()))
        chain, request.chain = request.chain, None
        if match.resumed:
            return
        root_at = state.length - len(added) - 1  # the chain's root: the last token before this step's
        if chain is None:  # nothing drafted: the drafter still sees the token the model chose
            chain = DraftTree.root_only(int(state.tokens[root_at]))
        drafts = chain.tokens[1:]  # [d]
        accepted = 0
        while accepted < min(len(added) - 1, drafts.size) and int(added[accepted]) == int(drafts[accepted]):
            accepted += 1
        self.stats.accepted += accepted
        if self.sizer is not None:
            self.sizer.learn(chain, accepted, request.explored)
        feedback = StepFeedback(chain, np.arange(accepted + 1, dtype=np.int64), int(added[accepted]),
                                np.zeros((chain.size, 0), dtype=np.int64), np.zeros((chain.size, 0), dtype=np.float32),
                                int(state.tokens[root_at - 1]) if root_at > 0 else -1)
        self.drafter.observe(feedback, request.drafter_state)

    def _time_step(self, started: float, matches: list[RowMatch], sampled: Sequence[Sequence[int]]) -> None:
        """Gives the sizer the last step's time when that step only decoded the rows it drafted for."""
        clock = self.clock
        steady = (clock.started is not None and len(matches) == clock.rows
                  and all(m.continued and not m.resumed for m in matches) and all(len(s) for s in sampled))
        if steady and self.sizer is not None:
            self.sizer.cost.observe(len(matches), clock.drafted, 1000.0 * (started - clock.started))
        clock.started = started

    def _draft(self, state: RowState | None) -> DraftTree | None:
        """The drafter's chain for one row (root first), capped to what vLLM and the row can take."""
        if state is None:
            return None
        room = min(self.cap, self.max_model_len - state.length - 1)
        if room < 1:
            return None
        request: RequestDraft = state.payload
        budget = min(MAX_DRAFTED_NODES, TREE_NODES_PER_TOKEN * room + 1)
        chain = self.drafter.propose(state.context, budget, request.drafter_state).first_chain()
        if chain.size < 2 or int(chain.tokens.max()) >= self.vocab_size:
            return None
        return chain.prefix(room + 1)

    def _count(self, matches: list[RowMatch], out: list[list[int]], started: float) -> None:
        """Updates the counters and the step clock after a call."""
        stats = self.stats
        drafted = sum(len(chain) for chain in out)
        stats.calls += 1
        stats.rows += len(matches)
        stats.drafted += drafted
        stats.propose_ms += 1000.0 * (time.perf_counter() - started)
        self.clock.rows, self.clock.drafted = len(matches), drafted


class SuffixProposer(AdaspecProposer):
    """``AdaspecProposer`` whose drafter defaults to ``suffix`` (suffix decoding over the request
    and a bounded history of earlier outputs)."""

    default_drafter = "suffix"


class LookupProposer(AdaspecProposer):
    """``AdaspecProposer`` whose drafter defaults to ``lookup`` (prompt lookup over the request)."""

    default_drafter = "lookup"


__all__ = ["AdaspecProposer", "LookupProposer", "PROPOSER", "ProposerStats", "SuffixProposer", "VLLM_VERSION",
           "engine_args"]
