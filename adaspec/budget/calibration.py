"""Online calibration: from a drafter's node scores to the chance the verifier accepts the node."""

from __future__ import annotations

import numba
import numpy as np

from adaspec.tree import DraftTree, Source

DEFAULT_BINS = (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0001)


@numba.njit(cache=True)
def calibrated_acceptance(scores: np.ndarray, sources: np.ndarray, depth: np.ndarray, parents: np.ndarray,
                          accepted: np.ndarray, proposed: np.ndarray, scored: np.ndarray, edges: np.ndarray,
                          prior_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated acceptance of every node of a tree, and how uncertain it is (see
    ``AcceptanceCalibrator.estimate_with_variance``).

    Args:
        scores: ``[n]`` float64 the drafter's scores.
        sources: ``[n]`` int8 each node's ``Source``.
        depth: ``[n]`` int64 each node's depth.
        parents: ``[n]`` int64 each node's parent (-1 for the root).
        accepted, proposed, scored: ``[S, D, b]`` the calibrator's decayed counts.
        edges: ``[b + 1]`` the score bins' edges.
        prior_strength: pseudo-observations behind a node's prior.

    Returns:
        ``[n]`` float64 acceptance per node (root 1.0), never above its parent's, and ``[n]``
        float64 the variance of each estimate (root 0.0).
    """
    n = scores.size
    max_depth, bins = accepted.shape[1], accepted.shape[2]
    estimate = np.empty(n, dtype=np.float64)
    variance = np.zeros(n, dtype=np.float64)
    estimate[0] = 1.0
    for node in range(1, n):
        source = np.int64(sources[node])
        row = min(max(depth[node], 1), max_depth) - 1
        col = min(max(np.searchsorted(edges, scores[node], side="right") - 1, 0), bins - 1)
        ratio = (accepted[source, row].sum() + prior_strength) / (scored[source, row].sum() + prior_strength)
        prior = min(scores[node] * ratio, 1.0)
        evidence = proposed[source, row, col] + prior_strength
        value = (accepted[source, row, col] + prior_strength * prior) / evidence
        variance[node] = value * (1.0 - value) / (evidence + 1.0)  # a Beta posterior's, over `evidence` observations
        estimate[node] = min(value, estimate[parents[node]])  # a node is accepted only with its parent
    return estimate, variance


class AcceptanceCalibrator:
    """Maps node scores (by source and depth) to acceptance probabilities, learned from verification.

    Kept apart per draft source (``tree.Source``: a learned model of the LLM, a copy from the
    request's context, from the client's prediction, from earlier requests), because a score
    means different things from each; depths up to ``max_depth`` keep cells of their own, so a
    node 40 tokens down a verbatim copy is not judged like the 8th token of a guess. The score
    itself carries the match length where a copy has one (longer matches score higher).

    Two levels of evidence, both forgetting old steps geometrically so the map follows the
    text being generated:

    * per (source, depth), how far the drafter's scores over- or under-state acceptance
      overall (accepted nodes / summed scores, pooled over all scores): a node's prior is its
      score times that ratio;
    * per (source, depth, score bin), accepted / proposed counts, which move the estimate away
      from the prior once the bin has been seen, ``prior_strength`` observations weighing
      as much as the prior.

    Args:
        bins: score bin edges, increasing, from 0 to above 1.
        max_depth: depths beyond this share the last depth's cells.
        prior_strength: pseudo-observations behind a node's prior.
        memory: steps after which old evidence weighs 1/e (the forgetting time constant).
    """

    def __init__(self, bins: tuple[float, ...] = DEFAULT_BINS, max_depth: int = 64,
                 prior_strength: float = 2.0, memory: float = 256.0) -> None:
        self.edges = np.asarray(bins, dtype=np.float64)  # [b + 1]
        self.max_depth = max_depth
        self.prior_strength = prior_strength
        self.keep = 1.0 - 1.0 / memory  # weight of the existing evidence at each update
        shape = (len(Source), max_depth, self.edges.size - 1)
        self.accepted = np.zeros(shape)  # [S, D, b] accepted nodes per cell (decayed)
        self.proposed = np.zeros(shape)  # [S, D, b] verified nodes per cell (decayed)
        self.scored = np.zeros(shape)  # [S, D, b] sum of verified nodes' scores per cell (decayed)

    def _cells(self, tree: DraftTree, scores: np.ndarray, nodes: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sources = tree.sources[nodes] if tree.sources is not None else np.zeros(scores.size, dtype=np.int8)  # [n]
        rows = np.clip(tree.depth[nodes], 1, self.max_depth) - 1  # [n]
        cols = np.clip(np.searchsorted(self.edges, scores, side="right") - 1, 0, self.edges.size - 2)  # [n]
        return sources.astype(np.int64), rows, cols

    @staticmethod
    def _scores(tree: DraftTree) -> np.ndarray:
        """``[n]`` the tree's scores, or 0.5 ** depth for a drafter that gives none."""
        return tree.scores if tree.scores is not None else 0.5 ** tree.depth.astype(np.float64)

    def depth_ratio(self) -> np.ndarray:
        """``[S, D]`` accepted / expected-by-score per source and depth, starting at 1 (the drafter trusted)."""
        k = self.prior_strength
        return (self.accepted.sum(axis=2) + k) / (self.scored.sum(axis=2) + k)

    def estimate(self, tree: DraftTree) -> np.ndarray:
        """Calibrated acceptance of every node of a tree.

        Args:
            tree: the drafter's tree, with or without scores and sources.

        Returns:
            ``[n]`` float64 acceptance per node (root 1.0), never above its parent's.
        """
        return self.estimate_with_variance(tree)[0]

    def estimate_with_variance(self, tree: DraftTree) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated acceptance of every node of a tree, and the variance of each estimate: that
        of a proportion over the verified nodes its cell has seen plus the prior's
        pseudo-observations, so wide where a cell is new and narrowing with evidence.

        Args:
            tree: the drafter's tree, with or without scores and sources.

        Returns:
            ``[n]`` float64 acceptance per node (root 1.0) and ``[n]`` float64 variances (root 0.0).
        """
        sources = tree.sources if tree.sources is not None else np.zeros(tree.size, dtype=np.int8)  # [n]
        return calibrated_acceptance(self._scores(tree), sources, tree.depth, tree.parents, self.accepted,
                                     self.proposed, self.scored, self.edges, self.prior_strength)

    def update(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Counts, for every non-root node of a verified tree, whether it was on the accepted path.

        Args:
            tree: the tree as verified.
            accepted: ``[k]`` accepted node indices, root first.
        """
        if tree.size < 2:
            return
        scores = self._scores(tree)[1:]  # [n-1]
        cells = self._cells(tree, scores, slice(1, None))
        hit = np.zeros(tree.size)  # [n]
        hit[accepted] = 1.0
        for counts in (self.accepted, self.proposed, self.scored):
            counts *= self.keep
        np.add.at(self.proposed, cells, 1.0)
        np.add.at(self.accepted, cells, hit[1:])
        np.add.at(self.scored, cells, scores)


class Reliability:
    """How well predicted acceptance matched what the verifier accepted (a reliability diagram).

    Every verified non-root node adds its predicted acceptance and whether it was accepted
    to one of ``bins`` equal-width bins of predicted probability. Nothing is forgotten.

    Args:
        bins: number of bins over [0, 1].
    """

    def __init__(self, bins: int = 10) -> None:
        self.nodes = np.zeros(bins)  # [B] verified nodes per bin
        self.predicted = np.zeros(bins)  # [B] summed predicted acceptance per bin
        self.accepted = np.zeros(bins)  # [B] accepted nodes per bin

    def add(self, predicted: np.ndarray, hit: np.ndarray) -> None:
        """Adds verified nodes to their bins.

        Args:
            predicted: ``[m]`` float64 acceptance estimates in [0, 1].
            hit: ``[m]`` float64, 1.0 where the node was accepted, else 0.0.
        """
        bins = np.minimum((predicted * self.nodes.size).astype(np.int64), self.nodes.size - 1)  # [m]
        np.add.at(self.nodes, bins, 1.0)
        np.add.at(self.predicted, bins, predicted)
        np.add.at(self.accepted, bins, hit)

    def to_dict(self) -> dict:
        """Per bin: nodes, mean predicted and observed acceptance (None for empty bins), JSON-ready."""
        def per_bin(total: np.ndarray) -> list[float | None]:
            return [round(float(t / n), 4) if n else None for t, n in zip(total, self.nodes)]

        count = self.nodes.sum()
        return {
            "nodes": [int(n) for n in self.nodes],
            "predicted": per_bin(self.predicted),
            "observed": per_bin(self.accepted),
            # expected calibration error: |predicted - accepted| summed over bins, per node
            "calibration_error": round(float(np.abs(self.predicted - self.accepted).sum() / count), 4) if count else None,
        }
