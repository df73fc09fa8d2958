"""The ``none`` drafter: drafts nothing, so the engine decodes one token per step (the baseline)."""

from __future__ import annotations

from adaspec.drafters.base import Drafter


class PlainDrafter(Drafter):
    """Proposes only the root (the base drafter's behaviour): plain autoregressive decoding
    through the same engine."""

    name = "none"

    def warm_up(self, vocab_size: int) -> None:
        """Nothing to compile.

        Args:
            vocab_size: unused.
        """
