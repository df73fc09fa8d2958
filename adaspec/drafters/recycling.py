"""The ``recycling`` drafter: Token Recycling (Luo et al., 2024).

Every verification step computes the model's top-K next tokens at every tree node and
usually throws most of them away. Token Recycling keeps them: a ``[vocab, K]`` table holds,
for each token, the candidates the model last predicted after it. A draft is read out of
that table breadth-first along a tree template: the root's rank-0..K-1 candidates, then
their candidates, and so on.

The template here is not hand-written. It is the best-first tree for the observed
probability that the rank-r candidate is the model's next token (the most probable paths
under a per-rank acceptance model), and it is rebuilt as those rank statistics accumulate,
so the tree's shape adapts to the model and the workload.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from adaspec.drafters.base import Drafter, DraftRequest, StepFeedback, check_range, teaches_shared_tables
from adaspec.tree import DraftTree


@dataclass(frozen=True)
class RecyclingConfig:
    """Tunables of the Token Recycling drafter."""

    feedback_width: int = 8  # candidates kept per token (columns of the table)
    template_nodes: int = 128  # size of the tree template; a step uses its first `budget` nodes
    max_depth: int = 12  # deepest template node
    # prior probability that the rank-r candidate is the model's next token, before any evidence
    rank_prior: tuple[float, ...] = (0.5, 0.15, 0.07, 0.04, 0.03, 0.02, 0.015, 0.01)
    prior_strength: float = 32.0  # pseudo-observations behind the prior
    refresh_every: int = 16  # steps between template rebuilds

    def __post_init__(self) -> None:
        for name, low, high in (("feedback_width", 1, 64), ("template_nodes", 1, 1024), ("max_depth", 1, 64),
                                ("prior_strength", 0.0, 1e6), ("refresh_every", 1, 1 << 20)):
            check_range(name, getattr(self, name), low, high)


@dataclass(frozen=True, eq=False)
class TreeTemplate:
    """A tree shape whose nodes say "take the rank-r candidate of my parent's token".

    Attributes:
        parents: ``[m]`` int64, parent index per node (-1 for the root); ordered best first.
        ranks: ``[m]`` int64, candidate rank per node (unused for the root).
        path_probs: ``[m]`` float64, the chance the node's whole path is accepted under the rank model.
        levels: per depth d >= 1, the ``[m_d]`` int64 node indices at that depth.
    """

    parents: np.ndarray
    ranks: np.ndarray
    path_probs: np.ndarray
    levels: list[np.ndarray] = field(default_factory=list)


def build_template(rank_probs: np.ndarray, size: int, max_depth: int) -> TreeTemplate:
    """The ``size`` most probable paths when rank r is accepted with probability ``rank_probs[r]``.

    Nodes come out in decreasing path probability, so any prefix of the template is a tree
    and the best tree of that size.

    Args:
        rank_probs: ``[K]`` float, acceptance probability per candidate rank.
        size: number of nodes, root included.
        max_depth: deepest allowed node.

    Returns:
        The template.
    """
    parents, ranks, depths, path_probs = [-1], [0], [0], [1.0]
    frontier: list[tuple[float, int, int, int]] = []  # (-path prob, insertion order, parent, rank)
    order = 0

    def push_children(node: int, prob: float) -> None:
        nonlocal order
        if depths[node] >= max_depth:
            return
        for rank, p in enumerate(rank_probs):
            heapq.heappush(frontier, (-prob * float(p), order, node, rank))
            order += 1

    push_children(0, 1.0)
    while len(parents) < size and frontier:
        neg_prob, _, parent, rank = heapq.heappop(frontier)
        parents.append(parent)
        ranks.append(rank)
        depths.append(depths[parent] + 1)
        path_probs.append(-neg_prob)
        push_children(len(parents) - 1, -neg_prob)
    parents_arr = np.array(parents, dtype=np.int64)
    depth_arr = np.array(depths, dtype=np.int64)
    levels = [np.flatnonzero(depth_arr == d) for d in range(1, int(depth_arr.max()) + 1)]
    return TreeTemplate(parents_arr, np.array(ranks, dtype=np.int64), np.array(path_probs), levels)


class TokenRecyclingDrafter(Drafter):
    """Drafts from the verifier's recycled top-K candidates.

    Args:
        vocab_size: the model's vocabulary size (rows of the candidate table).
        config: tunables; defaults are documented on ``RecyclingConfig``.
    """

    name = "recycling"
    learns = True

    def __init__(self, vocab_size: int, config: RecyclingConfig | None = None) -> None:
        self.config = config or RecyclingConfig()
        self.feedback_width = self.config.feedback_width
        self.vocab_size = vocab_size
        k = self.config.feedback_width
        self.candidates = np.full((vocab_size, k), -1, dtype=np.int64)  # [V, K], -1 = never seen
        self.rank_hits = np.zeros(k, dtype=np.int64)  # [K] times rank r was the model's next token
        self.rank_trials = 0  # accepted nodes whose token had candidates
        self.steps_since_refresh = 0
        self.template = build_template(self.rank_probabilities(), self.config.template_nodes, self.config.max_depth)

    def rank_probabilities(self) -> np.ndarray:
        """``[K]`` float64, posterior mean chance that the rank-r candidate is accepted."""
        k = self.config.feedback_width
        prior = np.zeros(k)
        given = np.array(self.config.rank_prior[:k], dtype=np.float64)
        prior[: given.size] = given
        strength = self.config.prior_strength
        return (self.rank_hits + strength * prior) / (self.rank_trials + strength)

    def begin(self, request: DraftRequest) -> bool:
        """Starts a request: the table is shared by every scope, so only requests of the shared
        scope teach it (``teaches_shared_tables``).

        Args:
            request: its prompt and scope.

        Returns:
            True when the request teaches the table.
        """
        return teaches_shared_tables(request)

    def propose(self, context: np.ndarray, budget: int, state: bool | None = None) -> DraftTree:
        """Reads a tree out of the candidate table along the template.

        The table persists across requests, so the drafter keeps no request state. See
        ``Drafter.propose`` for the arguments; branches under tokens never seen are left out.
        """
        template = self.template
        tokens = np.full(template.parents.size, -1, dtype=np.int64)  # [m], -1 = no candidate
        tokens[0] = context[-1]
        for level in template.levels:
            parent_tokens = tokens[template.parents[level]]  # [m_d]
            known = parent_tokens >= 0
            picked = self.candidates[np.where(known, parent_tokens, 0), template.ranks[level]]  # [m_d]
            tokens[level] = np.where(known, picked, -1)
        keep = np.flatnonzero(tokens >= 0)[:budget]  # ancestors of a kept node are kept: prefix-closed
        whole = DraftTree(np.maximum(tokens, 0), template.parents, template.path_probs)  # [m] unknowns as token 0
        return whole.subtree(keep)

    def observe(self, step: StepFeedback, state: bool | None = None) -> None:
        """Updates rank statistics, then recycles every node's top-K into the table.

        Args:
            step: the verified tree, the accepted path and every node's top-K candidates.
            state: what ``begin`` returned: False for a request that does not teach the table
                (None: a caller without ``begin``, which teaches).
        """
        if state is False:
            return
        path_tokens = step.accepted_tokens  # [k]
        truth = np.append(path_tokens[1:], step.next_token)  # [k], what the model said after each
        rows = self.candidates[path_tokens]  # [k, K]
        known = rows[:, 0] >= 0
        self.rank_hits += (rows[known] == truth[known, None]).sum(axis=0)
        self.rank_trials += int(known.sum())
        self.candidates[step.tree.tokens] = step.topk_ids
        self.steps_since_refresh += 1
        if self.steps_since_refresh >= self.config.refresh_every:
            self.steps_since_refresh = 0
            self.template = build_template(
                self.rank_probabilities(), self.config.template_nodes, self.config.max_depth
            )

    def state(self) -> dict[str, np.ndarray]:
        """The candidate table and rank statistics as arrays.

        Returns:
            ``candidates [V, K]``, ``rank_hits [K]``, ``rank_trials``.
        """
        return {"candidates": self.candidates, "rank_hits": self.rank_hits, "rank_trials": np.int64(self.rank_trials)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replaces the learned state with arrays from ``state``.

        Args:
            state: from ``state()``.

        Raises:
            ValueError: if they were made for another vocabulary size or top-K.
        """
        try:
            candidates, rank_hits, rank_trials = state["candidates"], state["rank_hits"], int(state["rank_trials"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a recycling state: missing or bad {error}") from None
        if candidates.shape != self.candidates.shape or rank_hits.shape != self.rank_hits.shape:
            raise ValueError(
                f"recycling state has table shape {candidates.shape}, this drafter needs {self.candidates.shape}"
            )
        if candidates.size and (int(candidates.max()) >= self.vocab_size or int(candidates.min()) < -1):
            raise ValueError("recycling state holds token ids outside the vocabulary")
        self.candidates = candidates.astype(np.int64)
        self.rank_hits = rank_hits.astype(np.int64)
        self.rank_trials = rank_trials
        self.template = build_template(self.rank_probabilities(), self.config.template_nodes, self.config.max_depth)
