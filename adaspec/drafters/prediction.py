"""Drafting from a client's prediction of the answer (OpenAI's Predicted Outputs): when most of
the output is known in advance (a file being edited, a document being rewritten), the text that
follows the output's last tokens in the prediction is drafted, as deep as the budget allows.

The prediction only drafts: every token is still the model's own, so the output is unchanged.
"""

from __future__ import annotations

import difflib

import numpy as np

from adaspec.drafters.suffix import SuffixConfig, draft_from
from adaspec.drafters.suffix_index import SuffixIndex
from adaspec.tree import DraftTree, Source

# a prediction is trusted at once: drafts run as deep as the budget, whatever the match length
PREDICTION_DRAFTS = SuffixConfig(history_tokens=0, max_depth=256, depth_per_match=64.0)


class PredictionSource:
    """One request's predicted output, indexed for suffix matches.

    Args:
        prediction: ``[q]`` int64 token ids of the text the client expects.
    """

    def __init__(self, prediction: np.ndarray) -> None:
        self.tokens = np.asarray(prediction, dtype=np.int64)
        self.index = SuffixIndex(self.tokens.size + 4, PREDICTION_DRAFTS.ways)
        self.index.add_sequence(self.tokens)

    def propose(self, output: np.ndarray, budget: int) -> DraftTree:
        """What follows the output's last tokens in the prediction.

        Args:
            output: ``[m]`` int64 the tokens generated so far (m >= 1; the last is the pending root).
            budget: the most nodes, root included.

        Returns:
            The draft tree (root only when the output's suffix is nowhere in the prediction).
        """
        return draft_from(self.index, output[-PREDICTION_DRAFTS.max_match :], int(output[-1]), budget,
                          PREDICTION_DRAFTS, Source.PREDICTION)

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
