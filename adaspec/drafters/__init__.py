"""Drafters: pure token-id logic that guesses the model's next tokens as a tree."""

from __future__ import annotations

from typing import Callable

from adaspec.drafters.base import Drafter, StepFeedback
from adaspec.drafters.hybrid import HybridDrafter
from adaspec.drafters.lookup import LookupConfig, PromptLookupDrafter
from adaspec.drafters.plain import PlainDrafter
from adaspec.drafters.recycling import RecyclingConfig, TokenRecyclingDrafter
from adaspec.errors import AdaspecError

# name -> factory taking the model's vocabulary size
DRAFTER_FACTORIES: dict[str, Callable[[int], Drafter]] = {
    "none": lambda vocab_size: PlainDrafter(),
    "lookup": lambda vocab_size: PromptLookupDrafter(),
    "recycling": lambda vocab_size: TokenRecyclingDrafter(vocab_size),
    # a context match of 2+ tokens takes what it finds, recycled candidates fill the rest
    # (measured better than a half/half split or 1-token matches; README, Benchmark)
    "hybrid": lambda vocab_size: HybridDrafter(
        [PromptLookupDrafter(LookupConfig(min_ngram=2)), TokenRecyclingDrafter(vocab_size)], shares=[1.0, 1.0]
    ),
}


def drafter_names() -> list[str]:
    """The names ``make_drafter`` accepts."""
    return list(DRAFTER_FACTORIES)


def make_drafter(name: str, vocab_size: int) -> Drafter:
    """Builds a drafter by registry name with its default settings.

    Args:
        name: one of ``drafter_names()``.
        vocab_size: the model's vocabulary size.

    Returns:
        A fresh drafter.

    Raises:
        AdaspecError: for an unknown name.
    """
    factory = DRAFTER_FACTORIES.get(name)
    if factory is None:
        raise AdaspecError(f"unknown drafter {name!r}; choose one of: {', '.join(DRAFTER_FACTORIES)}")
    return factory(vocab_size)


__all__ = [
    "Drafter",
    "StepFeedback",
    "PlainDrafter",
    "HybridDrafter",
    "PromptLookupDrafter",
    "LookupConfig",
    "TokenRecyclingDrafter",
    "RecyclingConfig",
    "make_drafter",
    "drafter_names",
]
