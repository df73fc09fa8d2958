"""The ``aded`` drafter: ADED (Adaptive Draft-Verification, 2024).

A tri-gram model of what *this* model says next (``TrigramTable``) learns while decoding
from three switchable, weighted sources:

* ``topk``: at every verified tree node the verifier's top-K candidates and their
  probabilities are the model's own successors of (parent token, node token);
* ``accepted``: the tri-grams of the text the model actually produced;
* ``prompt``: the tri-grams of each request's prompt (copying from the context), and an
  optional prior table built offline (``adaspec prior build``) or saved from earlier runs.

Drafts are built from the table by best-first expansion (the default: it won on the
benchmark) or by Monte Carlo tree search (ADED's draft maker); see ``tree_search``. The
table persists across requests and can be saved and loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaspec.drafters.base import Drafter, DraftRequest, StepFeedback, check_range, teaches_shared_tables
from adaspec.drafters.tree_search import best_first_tree, mcts_tree
from adaspec.drafters.trigram import MAX_CAPACITY, TrigramTable, trigrams
from adaspec.tree import DraftTree

BUILDERS = ("best-first", "mcts")


@dataclass(frozen=True)
class AdedConfig:
    """Tunables of the ADED drafter.

    Rates are each source's step size in (0, 1]; 0 switches a source off.
    """

    builder: str = "best-first"  # "best-first" or "mcts"
    capacity: int = 1 << 17  # contexts kept in the table (2^19 slots, ~42 MB); least recently updated evicted
    slots: int = 8  # successors kept per context
    feedback_width: int = 8  # verifier candidates learned per tree node (the K of source "topk")
    topk_rate: float = 0.8  # source "topk"
    accepted_rate: float = 0.5  # source "accepted"
    prompt_rate: float = 0.3  # source "prompt"
    feedback_temperature: float = 1.0  # topk probabilities are re-tempered before learning (<1 sharpens)
    max_depth: int = 10  # deepest draft node
    width: int = 8  # most children per node
    simulations: int = 64  # MCTS simulations per step
    c_base: float = 1.25  # MCTS exploration constant (MuZero's c1)
    c_growth: float = 19652.0  # MCTS exploration growth scale (MuZero's c2)
    rollout_depth: int = 4  # greedy tri-gram steps past an MCTS leaf when valuing it
    prior_path: str | None = None  # a table file to start from (``adaspec prior build`` or ``save``)

    def __post_init__(self) -> None:
        if self.builder not in BUILDERS:
            raise ValueError(f"unknown ADED builder {self.builder!r}; choose one of: {', '.join(BUILDERS)}")
        for name in ("topk_rate", "accepted_rate", "prompt_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {rate}")
        for name, low, high in (("capacity", 1, MAX_CAPACITY), ("slots", 1, 64), ("feedback_width", 0, 64),
                                ("max_depth", 1, 64), ("width", 1, 64), ("simulations", 1, 4096),
                                ("rollout_depth", 0, 64), ("feedback_temperature", 1e-3, 1e3), ("c_base", 0.0, 1e3),
                                ("c_growth", 1.0, 1e9)):
            check_range(name, getattr(self, name), low, high)


class AdedDrafter(Drafter):
    """Drafts from an adaptive tri-gram model with best-first expansion or MCTS.

    Args:
        vocab_size: the model's vocabulary size.
        config: tunables; defaults documented on ``AdedConfig``.

    Raises:
        ValueError: for invalid tunables or an unreadable prior file.
    """

    name = "aded"
    learns = True

    def __init__(self, vocab_size: int, config: AdedConfig | None = None) -> None:
        self.config = config or AdedConfig()
        self.feedback_width = self.config.feedback_width if self.config.topk_rate > 0 else 0
        self.table = TrigramTable(vocab_size, self.config.capacity, self.config.slots)
        if self.config.prior_path is not None:
            self.table.load(self.config.prior_path)
        buffer_size = 1024
        self._tokens = np.empty(buffer_size, dtype=np.int64)  # [buffer] builder output
        self._parents = np.empty(buffer_size, dtype=np.int64)  # [buffer]
        self._probs = np.empty(buffer_size, dtype=np.float64)  # [buffer]

    def begin(self, request: DraftRequest) -> bool:
        """Learns the prompt's tri-grams (source ``prompt``); the table persists across requests.

        The table is shared by every scope, so only requests of the shared scope teach it
        (``teaches_shared_tables``); the others draft from it and teach nothing.

        Args:
            request: the request, whose prompt is learned.

        Returns:
            True when the request teaches the table (``observe`` reads it back).
        """
        teaches = teaches_shared_tables(request)
        if teaches and self.config.prompt_rate > 0:
            self.learn_sequence(request.prompt, self.config.prompt_rate)
        return teaches

    def learn_sequence(self, tokens: np.ndarray, rate: float) -> None:
        """Moves the tri-gram and bigram rows of a token sequence towards what followed.

        Args:
            tokens: ``[m]`` int64 token ids.
            rate: step size in (0, 1].
        """
        first, second, third = trigrams(np.asarray(tokens, dtype=np.int64))
        if first.size == 0:
            return
        followers = third[:, None]  # [m-2, 1]
        ones = np.ones(followers.shape, dtype=np.float32)  # [m-2, 1]
        self.table.update(self.table.context_keys(first, second), followers, ones, rate)
        self.table.update(second, followers, ones, rate)

    def propose(self, context: np.ndarray, budget: int, state: bool | None = None) -> DraftTree:
        """Builds a tree from the tri-gram model (see ``Drafter.propose``); the table persists
        across requests, so the drafter keeps no request state (``state`` only says whether the
        request teaches), and the tree is the root alone when the table knows nothing about the
        context."""
        config = self.config
        if budget > self._tokens.size:
            self._tokens = np.empty(budget, dtype=np.int64)
            self._parents = np.empty(budget, dtype=np.int64)
            self._probs = np.empty(budget, dtype=np.float64)
        before = int(context[-2]) if context.size >= 2 else -1
        table = self.table
        if config.builder == "mcts":
            n = mcts_tree(
                table.keys, table.ids, table.weights, table.vocab_size, before, int(context[-1]), budget,
                config.max_depth, config.width, config.simulations, config.c_base, config.c_growth,
                config.rollout_depth, self._tokens, self._parents, self._probs,
            )
        else:
            n = best_first_tree(
                table.keys, table.ids, table.weights, table.vocab_size, before, int(context[-1]), budget,
                config.max_depth, config.width, self._tokens, self._parents, self._probs,
            )
        return DraftTree(self._tokens[:n].copy(), self._parents[:n].copy(), self._probs[:n].copy())

    def observe(self, step: StepFeedback, state: bool | None = None) -> None:
        """Learns the verifier's top-K at every node and the tri-grams of the accepted text.

        Args:
            step: what the verifier said about the last tree.
            state: what ``begin`` returned: False for a request that does not teach the table
                (None: a caller without ``begin``, which teaches).
        """
        if state is False:
            return
        config = self.config
        tree = step.tree
        if config.topk_rate > 0 and step.topk_ids.shape[1] > 0:
            before = np.where(tree.parents >= 0, tree.tokens[np.maximum(tree.parents, 0)], step.before_root)  # [n]
            probs = step.topk_probs.astype(np.float64)  # [n, K]
            if config.feedback_temperature != 1.0:
                tempered = probs ** (1.0 / config.feedback_temperature)
                probs = tempered * (probs.sum(axis=1, keepdims=True) / tempered.sum(axis=1, keepdims=True))
            known = before >= 0
            self.table.update(
                self.table.context_keys(before[known], tree.tokens[known]), step.topk_ids[known], probs[known],
                config.topk_rate,
            )
            self.table.update(tree.tokens, step.topk_ids, probs, config.topk_rate)
        if config.accepted_rate > 0:
            produced = np.concatenate(([step.before_root], step.accepted_tokens, [step.next_token]))  # [k + 2]
            self.learn_sequence(produced[1:] if step.before_root < 0 else produced, config.accepted_rate)

    def state(self) -> dict[str, np.ndarray]:
        """The learned table as arrays (what a server keeps across restarts).

        Returns:
            The table's arrays (see ``TrigramTable.state``).
        """
        return self.table.state()

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replaces the learned table with arrays from ``state``.

        Args:
            state: from ``state()``.

        Raises:
            ValueError: if they are not a table for this vocabulary.
        """
        self.table.restore(state)
