"""Growing a draft trie from what followed a text's suffix in a ``SuffixIndex``: one compiled call
per index, so a step that finds nothing (most steps on free text) costs a few microseconds.

Matches are taken longest first, then most recent; the draft reaches at most ``2 +
depth_per_match * longest match`` tokens deep; a node's score is the share of matches whose
continuation passes through it, times ``match / (match + 1)`` per token of depth. Paths that
share a prefix share nodes (a trie), and a node found again keeps the higher score and the
source that gave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from adaspec.drafters.suffix_index import SEPARATOR, SuffixIndex, continuations, find_matches
from adaspec.tree import DraftTree, Source


@dataclass(frozen=True)
class GrowthRules:
    """How deep and from which matches a suffix draft grows.

    Attributes:
        max_match: the longest match measured.
        min_match: the shortest match drafted from.
        max_depth: the deepest draft node.
        depth_per_match: a draft reaches at most ``2 + depth_per_match * match length`` tokens deep.
    """

    max_match: int
    min_match: int
    max_depth: int
    depth_per_match: float


@numba.njit(cache=True)
def _child(out_tokens: np.ndarray, out_parents: np.ndarray, n: int, parent: int, token: int) -> int:
    """The node holding ``token`` under ``parent`` among the first ``n``, or -1."""
    for node in range(parent + 1, n):
        if out_parents[node] == parent and out_tokens[node] == token:
            return node
    return -1


@numba.njit(cache=True)
def grow_tree(tokens: np.ndarray, run: np.ndarray, keys: np.ndarray, ways: np.ndarray, newest: np.ndarray,
              powers: np.ndarray, written: np.int64, query: np.ndarray, skip_from: np.int64, max_match: np.int64,
              min_match: np.int64, max_depth: np.int64, depth_per_match: np.float64, source: np.int64,
              out_tokens: np.ndarray, out_parents: np.ndarray, out_scores: np.ndarray, out_sources: np.ndarray,
              n: np.int64, budget: np.int64) -> np.int64:
    """Adds to a trie what followed the query's suffix in one index (see the module doc).

    Args:
        tokens, run, keys, ways, newest, powers, written: the index (``SuffixIndex``).
        query: ``[q]`` int64 the text whose suffix is matched (its last token is the tree's root).
        skip_from: matches ending at or after this position are ignored.
        max_match, min_match, max_depth, depth_per_match: the growth rules.
        source: the ``Source`` recorded on new nodes.
        out_tokens, out_parents: ``[>= budget]`` int64 the trie so far (node 0 the root).
        out_scores: ``[>= budget]`` float64 its scores.
        out_sources: ``[>= budget]`` int8 its sources.
        n: nodes in the trie so far.
        budget: the most nodes, root included.

    Returns:
        Nodes in the trie afterwards.
    """
    ends, lengths = find_matches(tokens, run, keys, ways, newest, powers, written, query, max_match, skip_from)
    order = np.empty(ends.size, dtype=np.int64)  # [m] kept matches, longest first, then most recent
    m = 0
    for i in range(ends.size):
        if lengths[i] < min_match:
            continue
        at = m  # insertion sort: m is at most the index's ways
        while at > 0 and (lengths[order[at - 1]] < lengths[i]
                          or (lengths[order[at - 1]] == lengths[i] and ends[order[at - 1]] < ends[i])):
            order[at] = order[at - 1]
            at -= 1
        order[at] = i
        m += 1
    if m == 0:
        return n
    longest = lengths[order[0]]
    depth = np.int64(min(float(max_depth), float(budget - 1), 2.0 + depth_per_match * longest))
    if depth <= 0:
        return n
    follow = continuations(tokens, written, ends[order[:m]], depth)  # [m, depth]
    for row in range(m):
        size = 0
        while size < depth and follow[row, size] != SEPARATOR:
            size += 1
        if size == 0:
            continue
        reliability = lengths[order[row]] / (lengths[order[row]] + 1.0)
        node = 0
        for d in range(size):
            agree = 0  # matches whose continuation shares this path's first d + 1 tokens
            for other in range(m):
                same = True
                for k in range(d + 1):
                    if follow[other, k] != follow[row, k]:
                        same = False
                        break
                agree += same
            score = agree / m * reliability ** (d + 1)
            token = follow[row, d]
            child = _child(out_tokens, out_parents, n, node, token)
            if child >= 0:
                if score > out_scores[child]:
                    out_scores[child] = score
                    out_sources[child] = source
            elif n >= budget:
                break
            else:
                child = n
                out_tokens[n] = token
                out_parents[n] = node
                out_scores[n] = score
                out_sources[n] = source
                n += 1
            node = child
        if n >= budget:
            return n
    return n


class SuffixTreeBuilder:
    """A draft trie grown from several indexes in turn (a request's own text, then its history).

    Args:
        root: the pending token.
        budget: the most nodes, root included.
    """

    def __init__(self, root: int, budget: int) -> None:
        self.budget = budget
        self.tokens = np.empty(budget, dtype=np.int64)  # [budget]
        self.parents = np.empty(budget, dtype=np.int64)  # [budget]
        self.scores = np.empty(budget, dtype=np.float64)  # [budget]
        self.sources = np.empty(budget, dtype=np.int8)  # [budget]
        self.tokens[0], self.parents[0], self.scores[0], self.sources[0] = root, -1, 1.0, Source.LEARNED
        self.size = 1

    @property
    def full(self) -> bool:
        """True once the budget is spent."""
        return self.size >= self.budget

    def grow(self, index: SuffixIndex, query: np.ndarray, rules: GrowthRules, source: Source,
             skip_from: int | None = None) -> None:
        """Adds what followed the query's suffix in ``index``.

        Args:
            index: where to look.
            query: ``[q]`` int64 the text whose suffix is matched.
            rules: the growth rules.
            source: what the index holds, recorded on new nodes.
            skip_from: ignore matches ending at or after this position (default: none ignored).
        """
        if self.full:
            return
        skip = index.written if skip_from is None else skip_from
        self.size = int(grow_tree(index.tokens, index.run, index.keys, index.ways, index.newest, index.powers,
                                  index.written, np.ascontiguousarray(query, dtype=np.int64), skip, rules.max_match,
                                  rules.min_match, rules.max_depth, float(rules.depth_per_match), int(source),
                                  self.tokens, self.parents, self.scores, self.sources, self.size, self.budget))

    def build(self) -> DraftTree:
        """The trie grown so far."""
        n = self.size
        return DraftTree.trusted(self.tokens[:n], self.parents[:n], self.scores[:n], self.sources[:n])
