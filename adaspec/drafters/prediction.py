"""Drafting from a client's prediction of the answer (OpenAI's Predicted Outputs): when most of
the output is known in advance (a file being edited, a document being rewritten), the text that
follows the output's last tokens in the prediction is drafted, as deep as the budget allows.

The prediction only drafts: every token is still the model's own, so the output is unchanged.
A prediction belongs to one request, so this drafter is made per request and merged with the
shared drafter by score (``with_prediction``).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Sequence

import numpy as np

from adaspec.drafters.base import Drafter
from adaspec.drafters.hybrid import HybridDrafter
from adaspec.drafters.suffix import SuffixConfig
from adaspec.drafters.suffix_index import SuffixIndex
from adaspec.drafters.suffix_tree import SuffixTreeBuilder
from adaspec.tree import DraftTree, Source

# a prediction drafts as deep as the budget, whatever the match length: its scores (higher for longer
# matches) decide, beside the shared drafter's, which nodes are kept (``with_prediction``)
PREDICTION_DRAFTS = SuffixConfig(history_tokens=0, max_depth=256, depth_per_match=64.0)


class PredictionDrafter(Drafter):
    """Drafts what follows the output's last tokens in one request's predicted output.

    Args:
        prediction: ``[q]`` int64 token ids of the text the client expects.
        prompt_size: tokens of the request's prompt at the start of every context it is given
            (the prediction is matched against the output only).
    """

    name = "prediction"

    def __init__(self, prediction: np.ndarray, prompt_size: int) -> None:
        self.tokens = np.asarray(prediction, dtype=np.int64)  # [q]
        self.prompt_size = prompt_size
        self.index = SuffixIndex(self.tokens.size + 4, PREDICTION_DRAFTS.ways)
        self.index.add_sequence(self.tokens)

    def propose(self, context: np.ndarray, budget: int, state: None = None) -> DraftTree:
        """What follows the output's last tokens in the prediction (see ``Drafter.propose``); the
        root alone while the output's suffix is nowhere in the prediction."""
        output = context[self.prompt_size :]  # [m] m >= 1: the last is the pending root
        builder = SuffixTreeBuilder(int(context[-1]), budget)
        builder.grow(self.index, output[-PREDICTION_DRAFTS.max_match :], PREDICTION_DRAFTS.rules, Source.PREDICTION)
        return builder.build()

    def accounting(self, output: list[int]) -> tuple[int, int]:
        """How many prediction tokens did and did not end up in the completion (OpenAI's
        ``accepted_prediction_tokens`` / ``rejected_prediction_tokens``), by aligning the two
        (``aligned_tokens``: near-linear time, whatever the text).

        Args:
            output: the completion's token ids.

        Returns:
            (accepted, rejected), summing to the prediction's length.
        """
        accepted = aligned_tokens(self.tokens.tolist(), list(output))
        return accepted, int(self.tokens.size) - accepted


ANCHOR = 4  # tokens that must agree for a stretch of one sequence to be aligned with the other


def aligned_tokens(first: Sequence[int], second: Sequence[int], anchor: int = ANCHOR) -> int:
    """How many tokens of ``first`` an order-keeping alignment pairs with equal tokens of
    ``second``, in O((n + m) log n) time whatever the text (``difflib``'s matcher is quadratic
    on repetitive text).

    The two are walked together. Equal tokens pair up; at a difference the walk resumes at the
    nearer of the next place in ``first`` where ``second``'s next ``anchor`` tokens occur, and
    the next place in ``second`` where ``first``'s occur (a deletion or an insertion); when
    neither occurs, both tokens are skipped (a replacement). Within the last ``anchor`` tokens
    of either, each remaining token pairs with its next occurrence in the other. On edits (a
    prediction with some lines changed, added or removed) this is the longest common
    subsequence or close to it; it never exceeds it.

    Args:
        first: ``[n]`` token ids (the prediction).
        second: ``[m]`` token ids (the completion).
        anchor: tokens that must agree to resume after a difference.

    Returns:
        The number of paired tokens (<= min(n, m)).
    """
    n, m = len(first), len(second)
    grams_first, grams_second = _positions(first, anchor), _positions(second, anchor)
    singles_first, singles_second = _positions(first, 1), _positions(second, 1)
    i = j = paired = 0
    while i < n and j < m:
        if first[i] == second[j]:
            paired, i, j = paired + 1, i + 1, j + 1
        elif n - i < anchor or m - j < anchor:  # the tail: pair each token with its next occurrence
            if n - i <= m - j:
                found = _next(singles_second, (first[i],), j)
                paired, j = (paired + 1, found + 1) if found is not None else (paired, j)
                i += 1
            else:
                found = _next(singles_first, (second[j],), i)
                paired, i = (paired + 1, found + 1) if found is not None else (paired, i)
                j += 1
        else:
            in_first = _next(grams_first, tuple(second[j : j + anchor]), i)  # second[j:] resumes there
            in_second = _next(grams_second, tuple(first[i : i + anchor]), j)
            skip_first = None if in_first is None else in_first - i
            skip_second = None if in_second is None else in_second - j
            if skip_first is None and skip_second is None:
                i, j = i + 1, j + 1
            elif skip_second is None or (skip_first is not None and skip_first <= skip_second):
                i = in_first
            else:
                j = in_second
    return paired


def _positions(tokens: Sequence[int], length: int) -> dict[tuple[int, ...], list[int]]:
    """Where each run of ``length`` tokens starts, in increasing order."""
    where: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for start in range(len(tokens) - length + 1):
        where[tuple(tokens[start : start + length])].append(start)
    return where


def _next(where: dict[tuple[int, ...], list[int]], gram: tuple[int, ...], start: int) -> int | None:
    """The first position at or after ``start`` where ``gram`` begins, or None."""
    positions = where.get(gram)
    if not positions:
        return None
    at = bisect.bisect_left(positions, start)
    return positions[at] if at < len(positions) else None


def with_prediction(drafter: Drafter, prediction: PredictionDrafter) -> HybridDrafter:
    """One request's drafter: its prediction and the shared drafter, merged by score.

    Both draft with the whole budget and the nodes with the highest scores are kept: a long
    match in the prediction may fill the whole budget, and where the prediction matches weakly
    (after an edit, before the output has re-aligned with it) a stronger match of the shared
    drafter, in the prompt or earlier outputs, is not crowded out.

    Args:
        drafter: the session's shared drafter.
        prediction: the request's prediction.

    Returns:
        The merged drafter (learning and ending reach the shared one as before).
    """
    return HybridDrafter([prediction, drafter], shares=[1.0, 1.0], by_score=True)
