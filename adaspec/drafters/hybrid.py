"""The ``hybrid`` drafter: one tree merged from several drafters under one budget.

Drafters are asked in priority order; each one's tree is grafted onto the merged trie in
its own node order (best first), shared prefixes are counted once, and each drafter may
use at most its share of the budget, with what it leaves passed on to the next. Or, merged
by score, every drafter drafts with the whole budget and the best-scored nodes are kept (a
request's prediction and the shared drafter). Every drafter sees the same feedback, so each
keeps learning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from adaspec.drafters.base import Drafter, DraftRequest, StepFeedback, check_range
from adaspec.tree import DraftTree, Source, TreeBuilder


@dataclass(frozen=True)
class HybridConfig:
    """What the registry's ``hybrid`` merges."""

    learned: str = "aded"  # the drafter that fills the budget after the context match: aded or recycling
    min_ngram: int = 2  # the shortest context match the copying drafter may use
    copy: str = "lookup"  # the drafter that copies first: lookup (the context) or suffix (context and history)

    def __post_init__(self) -> None:
        if self.learned not in ("recycling", "aded"):
            raise ValueError(f"learned must be recycling or aded, got {self.learned!r}")
        if self.copy not in ("lookup", "suffix"):
            raise ValueError(f"copy must be lookup or suffix, got {self.copy!r}")
        check_range("min_ngram", self.min_ngram, 1, 64)


def graft(builder: TreeBuilder, tree: DraftTree, limit: int) -> None:
    """Adds ``tree``'s nodes in index order under the builder's root until ``limit`` nodes exist.

    Args:
        builder: the merged tree so far (same root token as ``tree``).
        tree: the tree to add.
        limit: the builder's node count at which to stop.
    """
    placed = np.zeros(tree.size, dtype=np.int64)  # [n] node index in the builder; root -> 0
    for node in range(1, tree.size):
        if len(builder.tokens) >= limit:
            return
        score = float(tree.scores[node]) if tree.scores is not None else 0.0
        source = int(tree.sources[node]) if tree.sources is not None else Source.LEARNED
        child = builder.add_child(int(placed[tree.parents[node]]), int(tree.tokens[node]), score, source)
        if child is None:
            return
        placed[node] = child


class HybridDrafter(Drafter):
    """Merges the trees of several drafters: a context match first, then learned branches.

    Args:
        parts: the drafters, highest priority first.
        shares: per drafter, the largest fraction of the budget it may fill (the last
            drafter usually takes 1.0, i.e. whatever is left).
        by_score: instead of filling the budget in priority order, let every part draft with
            the whole budget and keep the ``budget`` nodes with the highest scores (each with
            its ancestors): a part whose match is weak then leaves the room to one whose match
            is strong, whichever comes first. The shares are not used.
    """

    name = "hybrid"

    def __init__(self, parts: Sequence[Drafter], shares: Sequence[float], by_score: bool = False) -> None:
        if len(parts) != len(shares) or not parts:
            raise ValueError(f"need one share per drafter, got {len(parts)} drafters and {len(shares)} shares")
        self.parts = list(parts)
        self.shares = list(shares)
        self.by_score = by_score
        self.feedback_width = max(p.feedback_width for p in self.parts)

    @property
    def learns(self) -> bool:
        """True when any part keeps learned state."""
        return any(part.learns for part in self.parts)

    def warm_up(self, vocab_size: int) -> None:
        """Warms every part's compiled code.

        Args:
            vocab_size: the model's vocabulary size.
        """
        for part in self.parts:
            part.warm_up(vocab_size)

    def begin(self, request: DraftRequest) -> list[Any]:
        """Starts a request in every part.

        Args:
            request: the request, passed to each part.

        Returns:
            Each part's state for the request.
        """
        return [part.begin(request) for part in self.parts]

    def propose(self, context: np.ndarray, budget: int, state: list[Any] | None = None) -> DraftTree:
        """The parts' trees merged in priority order (or by score, with ``by_score``).

        Args:
            context: ``[L]`` int64, all tokens so far; ``context[-1]`` is the root.
            budget: the most nodes, root included.
            state: the parts' states (from ``begin``).

        Returns:
            One tree holding each part's nodes, duplicates merged, until the budget is spent.
        """
        states = state or [None] * len(self.parts)
        if self.by_score:
            return self._propose_by_score(context, budget, states)
        builder = TreeBuilder(int(context[-1]), budget)
        for part, share, part_state in zip(self.parts, self.shares, states):
            if builder.full:
                break
            used = len(builder.tokens)
            limit = min(budget, used + max(1, round(share * (budget - 1))))
            graft(builder, part.propose(context, limit - used + 1, part_state), limit)
        return builder.build()

    def _propose_by_score(self, context: np.ndarray, budget: int, states: list[Any]) -> DraftTree:
        """Every part's tree at the whole budget, merged, cut to the ``budget`` best-scored nodes.

        Args:
            context: ``[L]`` int64, all tokens so far; ``context[-1]`` is the root.
            budget: the most nodes, root included.
            states: the parts' states.

        Returns:
            The merged tree: each kept node ranks no higher than its parent (a node's rank is the
            lowest score on its path), so every kept node's parent is kept.
        """
        builder = TreeBuilder(int(context[-1]), budget * len(self.parts))
        for part, part_state in zip(self.parts, states):
            graft(builder, part.propose(context, budget, part_state), budget * len(self.parts))
        merged = builder.build()
        if merged.size <= budget:
            return merged
        scores = merged.scores if merged.scores is not None else np.zeros(merged.size)  # [n]
        return merged.subtree(merged.best_nodes(scores, budget))

    def observe(self, step: StepFeedback, state: list[Any] | None = None) -> None:
        """Every part learns from the same step (each reads only the top-K it asked for).

        Args:
            step: what the verifier said about the merged tree.
            state: the parts' states.
        """
        for part, part_state in zip(self.parts, state or [None] * len(self.parts)):
            k = part.feedback_width
            part.observe(StepFeedback(step.tree, step.accepted, step.next_token, step.topk_ids[:, :k], step.topk_probs[:, :k],
                                      step.before_root), part_state)

    def end(self, state: list[Any] | None, output: np.ndarray) -> None:
        """Ends the request in every part.

        Args:
            state: the parts' states.
            output: the request's tokens.
        """
        for part, part_state in zip(self.parts, state or [None] * len(self.parts)):
            part.end(part_state, output)

    def state(self) -> dict[str, np.ndarray] | None:
        """The learned state of every part that has one, keyed ``<part index>.<array>``.

        Returns:
            The arrays (None when no part learns).
        """
        if not self.learns:
            return None
        arrays: dict[str, np.ndarray] = {}
        for index, part in enumerate(self.parts):
            if part.learns:
                arrays.update({f"{index}.{name}": value for name, value in part.state().items()})
        return arrays

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Gives every part with learned state its arrays back.

        Args:
            state: from ``state()``.

        Raises:
            ValueError: if a part's arrays are missing or do not fit it.
        """
        for index, part in enumerate(self.parts):
            if part.learns:
                prefix = f"{index}."
                part.restore({name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)})
