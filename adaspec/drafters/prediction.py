"""Drafting from a client's prediction of the answer (OpenAI's Predicted Outputs): when most of
the output is known in advance (a file being edited, a document being rewritten), the text that
follows the output's last tokens in the prediction is drafted, as deep as the budget allows.

The prediction only drafts: every token is still the model's own, so the output is unchanged.
A prediction belongs to one request, so this drafter is made per request and merged in front of
the shared drafter (``with_prediction``).
"""

from __future__ import annotations

import difflib

import numpy as np

from adaspec.drafters.base import Drafter
from adaspec.drafters.hybrid import HybridDrafter
from adaspec.drafters.suffix import SuffixConfig
from adaspec.drafters.suffix_index import SuffixIndex
from adaspec.drafters.suffix_tree import SuffixTreeBuilder
from adaspec.tree import DraftTree, Source

# a prediction is trusted at once: drafts run as deep as the budget, whatever the match length
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
        ``accepted_prediction_tokens`` / ``rejected_prediction_tokens``), by aligning the two.

        Args:
            output: the completion's token ids.

        Returns:
            (accepted, rejected), summing to the prediction's length.
        """
        matcher = difflib.SequenceMatcher(None, self.tokens.tolist(), list(output), autojunk=False)
        accepted = sum(block.size for block in matcher.get_matching_blocks())
        return accepted, int(self.tokens.size) - accepted


def with_prediction(drafter: Drafter, prediction: PredictionDrafter) -> HybridDrafter:
    """One request's drafter: its prediction first, then the shared drafter in the room left.

    Neither part's share is capped: the prediction may fill the whole budget (it is trusted at
    once), and the shared drafter fills whatever it leaves.

    Args:
        drafter: the session's shared drafter.
        prediction: the request's prediction.

    Returns:
        The merged drafter (learning and ending reach the shared one as before).
    """
    return HybridDrafter([prediction, drafter], shares=[1.0, 1.0])
