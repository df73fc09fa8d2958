"""DraftTree: the one data structure every drafter produces and the verifier consumes.

A tree is two parallel int64 arrays, ``tokens`` and ``parents``. Node 0 is the root: the
*pending* token (already emitted, not yet in the KV cache). Every other node's parent has a
smaller index, so a prefix ``[0, m)`` of any valid tree is itself a valid tree.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Iterable

import numba
import numpy as np

MAX_TREE_NODES = 256  # the most nodes one verification may hold on any runtime (a runtime may allow fewer)


@numba.njit(cache=True)
def first_chain_nodes(parents: np.ndarray, n: int) -> np.ndarray:
    """The chain that follows each node's first child (the lowest index), in a trie's first ``n`` nodes.

    Args:
        parents: ``[>= n]`` int64 parent indices.
        n: the nodes.

    Returns:
        ``[k]`` int64 node indices from the root.
    """
    chain = np.empty(n, dtype=np.int64)
    chain[0] = 0
    k = 1
    node = 0
    for candidate in range(1, n):
        if parents[candidate] == node:
            chain[k] = candidate
            k += 1
            node = candidate
    return chain[:k]


@numba.njit(cache=True)
def best_chain_nodes(parents: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The root-to-leaf path whose nodes' weights sum highest (the first child wins a tie).

    Args:
        parents: ``[n]`` int64 parent indices (``parents[i] < i``).
        weights: ``[n]`` float64 per node, e.g. its calibrated acceptance.

    Returns:
        ``[k]`` int64 node indices from the root.
    """
    n = parents.size
    best = weights.copy()  # [n] the best sum of a path from the node down to a leaf
    below = np.full(n, -1, dtype=np.int64)  # [n] the child that path goes through
    for node in range(n - 1, 0, -1):  # children come after parents: each node is final when reached
        parent = parents[node]
        through = weights[parent] + best[node]
        if below[parent] < 0 or through >= best[parent]:  # >=: walking down, the lower index wins ties
            best[parent], below[parent] = through, node
    chain = np.empty(n, dtype=np.int64)
    chain[0], k = 0, 1
    while below[chain[k - 1]] >= 0:
        chain[k] = below[chain[k - 1]]
        k += 1
    return chain[:k]


class Source(IntEnum):
    """Where a draft node came from; acceptance is calibrated per source."""

    LEARNED = 0  # a learned model of the LLM (ADED's tri-grams, Token Recycling), or unknown
    CONTEXT = 1  # copied from the request's own prompt and output
    PREDICTION = 2  # copied from the client's predicted output
    HISTORY = 3  # copied from earlier requests' outputs


@dataclass(frozen=True, eq=False)
class DraftTree:
    """A tree of draft tokens rooted at the pending token.

    Attributes:
        tokens: ``[n]`` int64, node i's token id; ``tokens[0]`` is the pending (root) token.
        parents: ``[n]`` int64, parent index of node i; ``-1`` for the root, ``parents[i] < i``.
        scores: ``[n]`` float64 or None, the drafter's belief that node i will be accepted
            (its whole path from the root, e.g. a product of probabilities; root 1.0). The
            engine calibrates scores into acceptance probabilities to size the tree.
        sources: ``[n]`` int8 or None, each node's ``Source`` (None: all ``LEARNED``).

    Raises:
        ValueError: if the arrays do not describe a valid rooted tree.
    """

    tokens: np.ndarray
    parents: np.ndarray
    scores: np.ndarray | None = None
    sources: np.ndarray | None = None

    def __post_init__(self) -> None:
        tokens = np.ascontiguousarray(self.tokens, dtype=np.int64)
        parents = np.ascontiguousarray(self.parents, dtype=np.int64)
        if tokens.ndim != 1 or parents.shape != tokens.shape or tokens.size == 0:
            raise ValueError(
                f"tokens and parents must be equal-length non-empty 1-D arrays, got shapes "
                f"{tokens.shape} and {parents.shape}"
            )
        if parents[0] != -1:
            raise ValueError(f"node 0 must be the root (parent -1), got parent {parents[0]}")
        rest = parents[1:]
        if rest.size and (rest.min() < 0 or np.any(rest >= np.arange(1, tokens.size))):
            raise ValueError("every non-root node's parent must be an earlier node (0 <= parents[i] < i)")
        if tokens.min() < 0:
            raise ValueError(f"token ids must be non-negative, got {int(tokens.min())}")
        if self.scores is not None:
            scores = np.ascontiguousarray(self.scores, dtype=np.float64)
            if scores.shape != tokens.shape:
                raise ValueError(f"scores must have one entry per node, got shape {scores.shape} for {tokens.size} nodes")
            object.__setattr__(self, "scores", scores)
        if self.sources is not None:
            sources = np.ascontiguousarray(self.sources, dtype=np.int8)
            if sources.shape != tokens.shape:
                raise ValueError(f"sources must have one entry per node, got shape {sources.shape} for {tokens.size} nodes")
            object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "parents", parents)

    @classmethod
    def root_only(cls, token: int) -> DraftTree:
        """The trivial tree: just the pending token (plain decoding).

        Args:
            token: the pending token id.

        Returns:
            A one-node tree.
        """
        return cls.trusted(np.array([token], dtype=np.int64), np.array([-1], dtype=np.int64))

    @classmethod
    def trusted(cls, tokens: np.ndarray, parents: np.ndarray, scores: np.ndarray | None = None,
                sources: np.ndarray | None = None) -> DraftTree:
        """A tree from arrays that hold the invariant by construction (a compiled drafter's, a
        chain's prefix), made without the checks of ``__post_init__``: a step's hot path.

        Args:
            tokens: ``[n]`` int64 (contiguous), node 0 the root.
            parents: ``[n]`` int64, -1 then earlier nodes only.
            scores: ``[n]`` float64 or None.
            sources: ``[n]`` int8 or None.

        Returns:
            The tree (its arrays not copied).
        """
        tree = cls.__new__(cls)
        object.__setattr__(tree, "tokens", tokens)
        object.__setattr__(tree, "parents", parents)
        object.__setattr__(tree, "scores", scores)
        object.__setattr__(tree, "sources", sources)
        return tree

    @property
    def size(self) -> int:
        """Number of nodes, root included."""
        return int(self.tokens.size)

    @cached_property
    def is_chain(self) -> bool:
        """True when every node's parent is the node before it (one path, no branches)."""
        return self.size == 1 or bool(np.array_equal(self.parents, np.arange(-1, self.size - 1)))

    @cached_property
    def depth(self) -> np.ndarray:
        """``[n]`` int64, distance of each node from the root (root = 0)."""
        if self.is_chain:
            return np.arange(self.size, dtype=np.int64)
        depth = np.zeros(self.size, dtype=np.int64)
        for i in range(1, self.size):  # parents[i] < i, so one forward pass suffices
            depth[i] = depth[self.parents[i]] + 1
        return depth

    @cached_property
    def ancestor_mask(self) -> np.ndarray:
        """``[n, n]`` bool, ``mask[i, j]`` is True when j is i or an ancestor of i."""
        mask = np.eye(self.size, dtype=bool)
        for i in range(1, self.size):
            mask[i] |= mask[self.parents[i]]
        return mask

    @cached_property
    def children(self) -> list[list[int]]:
        """Per node, its children's indices in index order (the order drafters rank them)."""
        children: list[list[int]] = [[] for _ in range(self.size)]
        for i in range(1, self.size):
            children[int(self.parents[i])].append(i)
        return children

    @cached_property
    def child_of(self) -> dict[tuple[int, int], int]:
        """Map ``(parent index, token) -> child index``; the first child wins among duplicates."""
        lookup: dict[tuple[int, int], int] = {}
        for i in range(self.size - 1, 0, -1):  # reversed so that the earliest duplicate is kept
            lookup[(int(self.parents[i]), int(self.tokens[i]))] = i
        return lookup

    def path_to(self, node: int) -> np.ndarray:
        """The node indices from the root to ``node``.

        Args:
            node: a node index.

        Returns:
            ``[depth+1]`` int64 node indices, root first, ``node`` last.
        """
        return np.flatnonzero(self.ancestor_mask[node])

    def prefix(self, size: int) -> DraftTree:
        """The first ``size`` nodes (always a valid tree, since parents precede children).

        Args:
            size: how many nodes to keep (at least 1).

        Returns:
            The smaller tree.
        """
        if size >= self.size:
            return self
        return DraftTree.trusted(self.tokens[:size], self.parents[:size],
                                 None if self.scores is None else self.scores[:size],
                                 None if self.sources is None else self.sources[:size])

    def first_chain(self) -> DraftTree:
        """The chain that follows each node's first child (the drafter's top-ranked one).

        Returns:
            The tree itself when it already is a chain, else the chain's nodes re-indexed.
        """
        if self.is_chain:
            return self
        return self._chain(first_chain_nodes(self.parents, self.size))

    def best_chain(self, weights: np.ndarray | None) -> DraftTree:
        """The chain whose nodes' weights sum highest: with weights that are acceptance
        probabilities, the chain expected to accept the most tokens.

        Args:
            weights: ``[n]`` float64 per node, or None for the first chain.

        Returns:
            The tree itself when it already is a chain, else the chain's nodes re-indexed.
        """
        if self.is_chain:
            return self
        if weights is None:
            return self.first_chain()
        return self._chain(best_chain_nodes(self.parents, np.asarray(weights, dtype=np.float64)))

    def _chain(self, path: np.ndarray) -> DraftTree:
        """The nodes ``path`` (``[k]``, a root-to-node path) as a chain."""
        return DraftTree.trusted(self.tokens[path], np.arange(-1, path.size - 1, dtype=np.int64),
                                 None if self.scores is None else self.scores[path],
                                 None if self.sources is None else self.sources[path])

    def best_nodes(self, weights: np.ndarray, count: int) -> np.ndarray:
        """The root and the ``count - 1`` nodes of highest weight, each with its ancestors: a node
        ranks no higher than its parent (its rank is the lowest weight on its path), and ties go
        to the lower index, so a parent is always taken before its children.

        Args:
            weights: ``[n]`` float64 per node, e.g. scores or calibrated acceptance.
            count: how many nodes to keep, root included.

        Returns:
            ``[min(count, n)]`` int64 node indices, increasing, root first (for ``subtree``).
        """
        rank = np.asarray(weights, dtype=np.float64).copy()  # [n]
        for node in range(1, self.size):  # parents come before their children
            rank[node] = min(rank[node], rank[self.parents[node]])
        best = np.argsort(-rank[1:], kind="stable")[: count - 1] + 1  # [<= count - 1]
        return np.sort(np.concatenate(([0], best))).astype(np.int64)

    def subtree(self, keep: np.ndarray) -> DraftTree:
        """The nodes ``keep``, re-indexed.

        Args:
            keep: ``[m]`` int64 node indices, increasing, 0 first, each node's parent included.

        Returns:
            The smaller tree, scores kept.

        Raises:
            ValueError: if a kept node's parent is not kept.
        """
        if keep.size and int(keep[-1]) == keep.size - 1:  # the first nodes: always a tree
            return self.prefix(keep.size)
        new_index = np.full(self.size, -1, dtype=np.int64)  # [n] old -> new
        new_index[keep] = np.arange(keep.size)
        old_parents = self.parents[keep]  # [m]
        parents = np.where(old_parents >= 0, new_index[np.maximum(old_parents, 0)], -1)
        if np.any(parents[1:] < 0):
            raise ValueError("subtree: every kept node's parent must be kept")
        return DraftTree(self.tokens[keep], parents, None if self.scores is None else self.scores[keep],
                         None if self.sources is None else self.sources[keep])


class TreeBuilder:
    """Builds a DraftTree as a trie of token paths under a node budget.

    Paths that share a prefix share nodes, so adding the same continuation twice costs nothing.

    Args:
        root_token: the pending token at node 0.
        budget: the most nodes the tree may have, root included (>= 1).
    """

    def __init__(self, root_token: int, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.budget = budget
        self.tokens: list[int] = [int(root_token)]
        self.parents: list[int] = [-1]
        self.scores: list[float] = [1.0]
        self.sources: list[int] = [int(Source.LEARNED)]
        self._children: dict[tuple[int, int], int] = {}

    @property
    def full(self) -> bool:
        """True once the budget is spent."""
        return len(self.tokens) >= self.budget

    def add_child(self, parent: int, token: int, score: float = 0.0, source: int = Source.LEARNED) -> int | None:
        """Adds (or finds) ``token`` under ``parent``; a node found again keeps the higher score
        (and the source that gave it).

        Args:
            parent: the parent's node index.
            token: the child's token id.
            score: the drafter's belief that the child's whole path is accepted.
            source: where the child came from (``Source``).

        Returns:
            The child's node index, or None when the budget is spent.
        """
        key = (parent, int(token))
        node = self._children.get(key)
        if node is not None:
            if score > self.scores[node]:
                self.scores[node], self.sources[node] = score, int(source)
            return node
        if self.full:
            return None
        node = len(self.tokens)
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.scores.append(score)
        self.sources.append(int(source))
        self._children[key] = node
        return node

    def add_path(self, tokens: Iterable[int], start: int = 0, scores: Iterable[float] | None = None,
                 source: int = Source.LEARNED) -> int:
        """Add a chain of tokens below node ``start``, stopping when the budget is spent.

        Args:
            tokens: the chain.
            start: the node it hangs from.
            scores: per token, its node's score (default 0).
            source: where the chain came from (``Source``).

        Returns:
            How many of the tokens are in the tree afterwards.
        """
        node = start
        added = 0
        for token, score in zip(tokens, scores if scores is not None else itertools.repeat(0.0)):
            child = self.add_child(node, token, score, source)
            if child is None:
                break
            node = child
            added += 1
        return added

    def build(self) -> DraftTree:
        """The tree built so far."""
        return DraftTree(np.array(self.tokens, dtype=np.int64), np.array(self.parents, dtype=np.int64),
                         np.array(self.scores, dtype=np.float64), np.array(self.sources, dtype=np.int8))
