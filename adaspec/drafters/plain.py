"""The ``none`` drafter: drafts nothing, so the engine decodes one token per step (the baseline)."""

from __future__ import annotations

import numpy as np

from adaspec.drafters.base import DraftRequest, StepFeedback
from adaspec.tree import DraftTree


class PlainDrafter:
    """Proposes only the root: plain autoregressive decoding through the same engine."""

    name = "none"
    feedback_width = 0

    def begin(self, request: DraftRequest) -> None:
        """Nothing to prepare.

        Args:
            request: the request (unused).
        """

    def propose(self, context: np.ndarray, budget: int, state: None = None) -> DraftTree:
        """The root-only tree: plain decoding.

        Args:
            context: ``[L]`` int64 tokens so far; ``context[-1]`` is the root.
            budget: ignored; one node always fits.
            state: None.

        Returns:
            The one-node tree.
        """
        return DraftTree.root_only(int(context[-1]))

    def observe(self, step: StepFeedback, state: None = None) -> None:
        """Nothing to learn.

        Args:
            step: the verification step (unused).
            state: None.
        """

    def end(self, state: None, output: np.ndarray) -> None:
        """Nothing to do when a request ends.

        Args:
            state: None.
            output: the request's tokens (unused).
        """

