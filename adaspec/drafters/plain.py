"""The ``none`` drafter: drafts nothing, so the engine decodes one token per step (the baseline)."""

from __future__ import annotations

import numpy as np

from adaspec.drafters.base import StepFeedback
from adaspec.tree import DraftTree


class PlainDrafter:
    """Proposes only the root: plain autoregressive decoding through the same engine."""

    name = "none"
    feedback_top_k = 0

    def begin(self, prompt: np.ndarray) -> None:
        """Nothing to prepare."""

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        """Returns the root-only tree."""
        return DraftTree.root_only(int(context[-1]))

    def observe(self, step: StepFeedback) -> None:
        """Nothing to learn."""
