"""Per-step tree sizing: keep the part of the drafter's tree that maximises expected tokens per
millisecond, and fall back to plain decoding when no tree pays for itself."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

import numpy as np

from adaspec.budget.calibration import AcceptanceCalibrator, Reliability
from adaspec.budget.profile import LatencyProfile
from adaspec.tree import DraftTree

def choose_nodes(acceptance: np.ndarray, profile: LatencyProfile) -> np.ndarray:
    """The nodes worth verifying: the best prefix of the nodes in decreasing acceptance.

    Expected tokens of a step that verifies m draft nodes are 1 (the root's next token)
    plus their acceptance probabilities; its cost is ``profile.cost(m + 1)``. The m with
    the most expected tokens per millisecond wins; m = 0 is plain decoding.

    Args:
        acceptance: ``[n]`` float64 per node (root first), each at most its parent's.
        profile: the verify cost curve.

    Returns:
        ``[m + 1]`` int64 node indices to keep, increasing, root first; each node's parent
        is among them.
    """
    order = np.argsort(-acceptance[1:], kind="stable") + 1  # [n-1] parents (smaller index, >= acceptance) come first
    order = order[: profile.max_size - 1]
    expected = 1.0 + np.concatenate(([0.0], np.cumsum(acceptance[order])))  # [m+1] for m = 0..
    rate = expected / profile.cost(np.arange(1, expected.size + 1))
    best = int(np.argmax(rate))
    return np.sort(np.concatenate(([0], order[:best]))).astype(np.int64)



def best_nodes(acceptance: np.ndarray, count: int) -> np.ndarray:
    """The root and the ``count - 1`` likeliest other nodes.

    Args:
        acceptance: ``[n]`` float64 estimated acceptance per node, root first.
        count: how many nodes to keep, root included.

    Returns:
        ``[min(count, n)]`` int64 node indices, increasing.
    """
    order = np.argsort(-acceptance[1:], kind="stable") + 1  # [n-1] parents come first (see choose_nodes)
    return np.sort(np.concatenate(([0], order[: count - 1]))).astype(np.int64)


class TreeSizer:
    """Sizes every step's tree for ``budget="auto"``: calibrate, choose, and explore.

    The sizer holds what all requests share (the cost profile, one acceptance calibration per
    decoding setting, the reliability table); ``begin`` hands each request a ``RequestSizer``
    with its own exploration state.

    While plain decoding wins, the calibration would never see a draft again; so after
    ``explore_every`` plain steps in a row, one step verifies the ``explore_nodes`` likeliest
    nodes anyway. An exploration that accepts nothing doubles the wait (up to
    ``explore_max``); one that accepts resets it, so text that stays unpredictable costs almost
    nothing and text that becomes predictable is noticed soon.

    Calibration is kept per decoding setting (greedy, or each temperature / top-k / top-p),
    because acceptance depends on it; settings are chosen by clients, so only the
    ``max_settings`` most recently used are kept.

    Args:
        profile: the verify cost curve.
        explore_every: the shortest wait between explorations, in steps.
        explore_max: the longest wait.
        explore_nodes: nodes verified by an exploring step, root included.
        max_settings: decoding settings whose calibration is kept (least recently used out).
    """

    def __init__(self, profile: LatencyProfile, explore_every: int = 16, explore_max: int = 256,
                 explore_nodes: int = 4, max_settings: int = 32) -> None:
        self.profile = profile
        self.explore_every = explore_every
        self.explore_max = explore_max
        self.explore_nodes = explore_nodes
        self.max_settings = max_settings
        self.calibrators: OrderedDict[Hashable, AcceptanceCalibrator] = OrderedDict()  # least recently used first
        self.reliability = Reliability()
        self.plain_steps = 0  # steps that verified the root alone, over all requests
        self.explorations = 0

    def begin(self, setting: Hashable) -> RequestSizer:
        """Starts a request.

        Args:
            setting: the request's decoding setting (e.g. its temperature, top-k, top-p); each
                setting keeps its own calibration, shared by the requests that use it.

        Returns:
            The request's sizer.
        """
        calibrator = self.calibrators.pop(setting, None) or AcceptanceCalibrator()
        self.calibrators[setting] = calibrator  # now the most recently used
        while len(self.calibrators) > self.max_settings:
            self.calibrators.popitem(last=False)  # a request still using it keeps its own reference
        return RequestSizer(self, calibrator)


class RequestSizer:
    """One request's side of ``TreeSizer``: its exploration wait and the tree in flight.

    Args:
        shared: the sizer whose profile, calibration and counters it uses.
        calibrator: the calibration of the request's decoding setting.
    """

    def __init__(self, shared: TreeSizer, calibrator: AcceptanceCalibrator) -> None:
        self.shared = shared
        self.calibrator = calibrator
        self.wait = shared.explore_every  # steps between explorations now
        self.since_tree = 0  # plain steps in a row
        self._exploring = False
        self._predicted: np.ndarray | None = None  # [n] estimates of the tree being verified

    def size(self, tree: DraftTree) -> DraftTree:
        """Chooses the part of a drafted tree to verify this step.

        Args:
            tree: the drafter's whole tree.

        Returns:
            A subtree of ``tree`` (possibly its root alone).
        """
        shared = self.shared
        acceptance = self.calibrator.estimate(tree)  # [n]
        keep = choose_nodes(acceptance, shared.profile)
        self.since_tree = 0 if keep.size > 1 else self.since_tree + 1
        self._exploring = self.since_tree > self.wait and tree.size > 1
        if self._exploring:
            keep = best_nodes(acceptance, shared.explore_nodes)
            self.since_tree = 0
            shared.explorations += 1
        shared.plain_steps += keep.size == 1
        self._predicted = acceptance[keep]
        return tree.subtree(keep)

    def update(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Learns from the verification of the tree ``size`` returned.

        Args:
            tree: that tree.
            accepted: ``[k]`` its accepted node indices, root first.
        """
        self.calibrator.update(tree, accepted)
        hit = np.zeros(tree.size)  # [n]
        hit[accepted] = 1.0
        if self._predicted is not None and self._predicted.size == tree.size:
            self.shared.reliability.add(self._predicted[1:], hit[1:])
        if self._exploring:
            shared = self.shared
            self.wait = shared.explore_every if accepted.size > 1 else min(2 * self.wait, shared.explore_max)
