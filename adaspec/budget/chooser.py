"""Per-step tree sizing: keep the part of the drafter's tree that maximises expected tokens per
millisecond, and fall back to plain decoding when no tree pays for itself."""

from __future__ import annotations

import math
import statistics
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numba
import numpy as np

from adaspec.budget.calibration import AcceptanceCalibrator, Reliability
from adaspec.budget.profile import LatencyProfile
from adaspec.tree import DraftTree

LOOK_SHARE = 0.005  # in a plain streak, the drafter looks for a match at most this share of the time
EXPLORE_SHARE = 0.005  # explorations cost at most this share of a plain streak's time (with LOOK_SHARE: 1% in all)
DOUBT = 1.0  # standard deviations a tree's expected tokens are lowered by when choosing (sceptical until evidence)
DRAFT_SAMPLES = 16  # recent drafting times kept per decoding setting
MIN_DRAFT_SAMPLES = 3  # before this many looks are recorded, a look counts as free (so it runs, and is measured)
GAIN_MEMORY = 16  # drafting steps after which an old step's saving weighs 1/e


def choose_nodes(acceptance: np.ndarray, profile: LatencyProfile, draft_ms: float = 0.0,
                 variance: np.ndarray | None = None, doubt: float = 0.0) -> np.ndarray:
    """The nodes worth verifying: the best prefix of the nodes in decreasing acceptance.

    Expected tokens of a step that verifies m draft nodes are 1 (the root's next token)
    plus their acceptance probabilities; its cost is ``profile.cost(m + 1)`` plus, for m > 0,
    ``draft_ms``: what a look (drafting and sizing) costs a step, which plain decoding saves (a request decoding
    plainly skips the drafter until its next exploration). The m with the most expected
    tokens per millisecond wins; m = 0 is plain decoding. With a ``doubt``, the expected
    tokens are taken ``doubt`` standard deviations low, the deviation of their sum from the
    nodes' estimate variances: a tree must then beat plain decoding by more than its
    estimates' uncertainty, which grows with the square root of its node count, not linearly.

    Args:
        acceptance: ``[n]`` float64 per node (root first), each at most its parent's.
        profile: the verify cost curve.
        draft_ms: a look's measured cost per step (drafter and sizer).
        variance: ``[n]`` float64 the variance of each node's estimate (None: all certain).
        doubt: standard deviations taken off the expected tokens.

    Returns:
        ``[m + 1]`` int64 node indices to keep, increasing, root first; each node's parent
        is among them.
    """
    variance = np.zeros_like(acceptance) if variance is None else variance
    return best_prefix_nodes(acceptance, variance, doubt, profile.sizes_array, profile.ms_array, profile.max_size,
                             draft_ms)


@numba.njit(cache=True)
def best_prefix_nodes(acceptance: np.ndarray, variance: np.ndarray, doubt: float, sizes: np.ndarray, ms: np.ndarray,
                      max_size: int, draft_ms: float) -> np.ndarray:
    """``choose_nodes`` compiled: the profile as its ``[k]`` float64 sizes and milliseconds.

    Args:
        acceptance: ``[n]`` float64 per node (root first), each at most its parent's.
        variance: ``[n]`` float64 the variance of each node's estimate.
        doubt: standard deviations taken off the expected tokens.
        sizes: ``[k]`` float64 tree sizes measured.
        ms: ``[k]`` float64 their costs.
        max_size: the most nodes considered.
        draft_ms: a look's measured cost per step (drafter and sizer).

    Returns:
        ``[m + 1]`` int64 node indices to keep, increasing, root first.
    """
    order = np.argsort(-acceptance[1:], kind="mergesort")[: max_size - 1] + 1  # [m] parents (smaller index, >= acceptance) come first
    best, best_rate, expected, spread = 0, 1.0 / np.interp(1.0, sizes, ms), 1.0, 0.0
    for m in range(order.size):
        expected += acceptance[order[m]]
        spread += variance[order[m]]
        rate = (expected - doubt * np.sqrt(spread)) / (np.interp(m + 2.0, sizes, ms) + draft_ms)
        if rate > best_rate:
            best, best_rate = m + 1, rate
    keep = np.empty(best + 1, dtype=np.int64)
    keep[0] = 0
    keep[1:] = np.sort(order[:best])
    return keep


class TreeSizer:
    """Sizes every step's tree for ``budget="auto"``: calibrate, choose, and explore.

    The sizer holds what all requests share (the cost profile, one acceptance calibration per
    decoding setting, the reliability table); ``begin`` hands each request a ``RequestSizer``
    with its own exploration state.

    Trees are chosen sceptically: a tree's expected tokens are taken ``DOUBT`` standard
    deviations low, from the variances of its nodes' estimates (wide where a calibration cell
    has seen few verified nodes). A tree must then promise clearly more than plain decoding,
    because the nodes that look best are the ones whose estimates are most often too high, and
    on hardware where each extra node costs nearly a plain step, a tree that only breaks even on
    paper loses in fact; where nodes are nearly free, many uncertain nodes still pay, since the
    doubt grows with the square root of their number.

    Once plain decoding wins a step, a request drafts only now and then: every
    ``look_every`` steps, so that looking costs at most ``LOOK_SHARE`` of a plain streak (every
    step where drafting is that cheap; a strong match, such as the start of a verbatim copy, is
    then seen within a few steps), and every step while drafting steps have lately saved more
    than drafting costs. After ``wait`` plain steps, a step that drafts and still finds plain
    decoding best verifies the ``explore_nodes`` likeliest nodes anyway (the calibration would
    never see a draft otherwise). The shortest wait is priced by the cost curve, so that
    explorations take at most ``EXPLORE_SHARE`` of the time: where a second node costs almost
    a plain step (exact CPU kernels) a request explores rarely, where it is nearly free (a GPU)
    often. An exploration that accepts nothing doubles the wait (up to ``explore_max``); one
    that accepts resets it to the shortest, so text that stays unpredictable costs almost
    nothing and text that becomes predictable is noticed soon.

    Calibration and the exploration wait are kept per decoding setting (greedy, or each
    temperature / top-k / top-p), shared by the requests that use it, so a new request starts
    from what earlier ones learned; settings are chosen by clients, so only the
    ``max_settings`` most recently used are kept.

    Args:
        profile: the verify cost curve.
        explore_every: the shortest wait between explorations, in steps, where an exploration
            costs little (the cost curve may ask for a longer one).
        explore_max: the longest wait (at least the shortest).
        explore_nodes: nodes verified by an exploring step, root included (default: the root
            and the likeliest guess, so an exploration costs one extra row of a forward).
        max_settings: decoding settings whose calibration is kept (least recently used out).
        clock: seconds of the calling thread's CPU time, which prices a look (the runtime's own
            threads spinning after a forward do not count); a test may pass a fake one.
    """

    def __init__(self, profile: LatencyProfile, explore_every: int = 16, explore_max: int = 256,
                 explore_nodes: int = 2, max_settings: int = 32,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self.profile = profile
        self.clock = clock
        self.explore_every = explore_every
        self.explore_max = explore_max
        self.explore_nodes = explore_nodes
        self.max_settings = max_settings
        self.calibrators: OrderedDict[Hashable, SettingState] = OrderedDict()  # least recently used first
        self.reliability = Reliability()
        self.plain_steps = 0  # steps that verified the root alone, over all requests
        self.explorations = 0
        self.plain_ms = float(profile.cost(np.array([1]))[0])  # one plain step, in milliseconds
        # what an exploration costs beyond a plain step, as a share of one
        extra = float(profile.cost(np.array([explore_nodes]))[0]) / self.plain_ms - 1.0
        self.shortest_wait = max(explore_every, math.ceil(max(extra, 0.0) / EXPLORE_SHARE - 1e-9))
        self.explore_max = max(explore_max, self.shortest_wait)

    def warm_up(self) -> None:
        """Runs the compiled estimate, choice and chain cut once on a made-up tree, so that loading
        them is not timed as a request's drafting."""
        tree = DraftTree(np.array([1, 2, 3]), np.array([-1, 0, 0]), np.array([1.0, 0.5, 0.4]))  # a root, two children
        acceptance = AcceptanceCalibrator().estimate(tree)  # [3] a calibrator of its own: the shared ones learn nothing
        choose_nodes(acceptance, self.profile)
        tree.best_chain(acceptance)
        tree.first_chain()

    def begin(self, setting: Hashable) -> RequestSizer:
        """Starts a request.

        Args:
            setting: the request's decoding setting (e.g. its temperature, top-k, top-p); each
                setting keeps its own calibration, shared by the requests that use it.

        Returns:
            The request's sizer.
        """
        state = self.calibrators.pop(setting, None) or SettingState(AcceptanceCalibrator(), self.shortest_wait)
        self.calibrators[setting] = state  # now the most recently used
        while len(self.calibrators) > self.max_settings:
            self.calibrators.popitem(last=False)  # a request still using it keeps its own reference
        return RequestSizer(self, state)


@dataclass
class SettingState:
    """What requests of one decoding setting share.

    Attributes:
        calibrator: their acceptance calibration.
        wait: plain steps between explorations now.
        draft_times: the last few looks' costs, in milliseconds: the drafter's time and the
            sizer's own choice, in the drafting thread's CPU time.
        saving_ms: what a drafting step has saved lately, on average over drafting steps
            (those whose tree was cut to its root save 0): the time of the plain steps its
            accepted tokens replaced, less what verifying the tree cost beyond a plain step,
            in milliseconds; None before the first.
        draft_ms: what a look (drafting and sizing) costs a step (``record_draft``).
    """

    calibrator: AcceptanceCalibrator
    wait: int
    draft_times: deque = field(default_factory=lambda: deque(maxlen=DRAFT_SAMPLES))
    saving_ms: float | None = None
    draft_ms: float = 0.0

    def record_draft(self, ms: float) -> None:
        """Adds one look's time and updates ``draft_ms``: what a look costs a step, the median
        of the recent times (a first call that loads compiled code cannot dominate it), 0 until
        ``MIN_DRAFT_SAMPLES`` are known.

        Args:
            ms: this step's look (drafter and sizer), in milliseconds.
        """
        self.draft_times.append(ms)
        if len(self.draft_times) >= MIN_DRAFT_SAMPLES:
            self.draft_ms = statistics.median(self.draft_times)

    def learn_saving(self, saving: float) -> None:
        """Folds one drafting step's saving into ``saving_ms``.

        Args:
            saving: what the step saved, in milliseconds (0 for a tree cut to its root).
        """
        keep = 1.0 - 1.0 / GAIN_MEMORY
        self.saving_ms = saving if self.saving_ms is None else keep * self.saving_ms + (1.0 - keep) * saving


class RequestSizer:
    """One request's side of ``TreeSizer``: its plain streak and the tree in flight.

    Args:
        shared: the sizer whose profile and counters it uses.
        setting: what the requests of its decoding setting share (calibration, wait).
    """

    def __init__(self, shared: TreeSizer, setting: SettingState) -> None:
        self.shared = shared
        self.setting = setting
        self.calibrator = setting.calibrator
        self.since_tree = 0  # plain steps in a row
        self._exploring = False
        self._predicted: np.ndarray | None = None  # [n] estimates of the tree being verified

    def wants_draft(self) -> bool:
        """Whether this step should draft at all.

        Always after a step that verified a tree; every ``look_every`` steps of a plain streak
        (every step where a look costs under ``LOOK_SHARE`` of a plain step); every step while
        drafting steps have lately saved more than a look costs (text where matches come and
        go: the steps that find one pay for those that do not); and when the streak's wait for
        its next exploration is over.
        """
        setting = self.setting
        paying = setting.saving_ms is not None and setting.saving_ms > setting.draft_ms
        looking = self.since_tree % self.look_every() == 0
        return self.since_tree == 0 or looking or paying or self.since_tree >= setting.wait

    def look_every(self) -> int:
        """Steps between looks for a match in a plain streak.

        Returns:
            So many that looking costs at most ``LOOK_SHARE`` of the streak's time (1 while
            a look's cost is not yet known, or where it is that cheap).
        """
        return max(1, math.ceil(self.setting.draft_ms / (LOOK_SHARE * self.shared.plain_ms)))

    def skip(self) -> None:
        """Counts a plain step taken without drafting."""
        self.since_tree += 1
        self.shared.plain_steps += 1
        self._exploring = False
        self._predicted = None

    def size(self, tree: DraftTree, draft_ms: float = 0.0) -> DraftTree:
        """Chooses the part of a drafted tree to verify this step.

        Args:
            tree: the drafter's whole tree.
            draft_ms: what drafting it took, in milliseconds (``Session.propose`` counts the
                drafter, the tree's contract check and the chain cut); the sizer adds its own
                time and records the sum as this look's cost.

        Returns:
            A subtree of ``tree`` (possibly its root alone).
        """
        started = self.shared.clock()
        try:
            return self._choose(tree)
        finally:  # a look costs the drafting and this choice: both are recorded, for later looks
            self.setting.record_draft(draft_ms + 1000.0 * (self.shared.clock() - started))

    def _choose(self, tree: DraftTree) -> DraftTree:
        """``size``'s choice, priced with the looks recorded before this one."""
        shared, setting = self.shared, self.setting
        if tree.size == 1:  # nothing drafted: a plain step, whose saving (0) is all there is to learn
            self.skip()
            setting.learn_saving(0.0)
            return tree
        acceptance, variance = self.calibrator.estimate_with_variance(tree)  # [n] each
        keep = choose_nodes(acceptance, shared.profile, setting.draft_ms, variance, DOUBT)
        streak = 0 if keep.size > 1 else self.since_tree + 1
        self._exploring = keep.size == 1 and self.since_tree >= setting.wait and tree.size > 1
        if self._exploring:
            keep = tree.best_nodes(acceptance, shared.explore_nodes)
            streak = 0
            shared.explorations += 1
        self.since_tree = streak
        shared.plain_steps += keep.size == 1
        self._predicted = acceptance[keep]
        return tree.subtree(keep)

    def update(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Learns from the verification of the tree ``size`` returned.

        Args:
            tree: that tree.
            accepted: ``[k]`` its accepted node indices, root first.
        """
        if self._predicted is None:  # a plain step taken without drafting: nothing to learn here
            return
        setting, plain_ms = self.setting, self.shared.plain_ms
        if tree.size == 1:  # cut to its root: saved nothing, taught nothing
            setting.learn_saving(0.0)
            return
        setting.learn_saving((accepted.size - 1) * plain_ms
                             - (float(self.shared.profile.cost(np.array([tree.size]))[0]) - plain_ms))
        self.calibrator.update(tree, accepted)
        hit = np.zeros(tree.size)  # [n]
        hit[accepted] = 1.0
        if self._predicted.size == tree.size:
            self.shared.reliability.add(self._predicted[1:], hit[1:])
        if self._exploring:
            shared, setting = self.shared, self.setting
            setting.wait = shared.shortest_wait if accepted.size > 1 else min(2 * setting.wait, shared.explore_max)
