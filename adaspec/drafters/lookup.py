"""The ``lookup`` drafter: prompt lookup decoding (PLD / CopySpec) as a tree.

The longest suffix of the context that occurred earlier (prompt or output) is a good hint
that what followed it then will follow it now. Several earlier occurrences give several
continuations; they are merged into one trie so shared prefixes cost one node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from adaspec.drafters.base import StepFeedback
from adaspec.tree import DraftTree, TreeBuilder


@dataclass(frozen=True)
class LookupConfig:
    """Tunables of the lookup drafter."""

    max_ngram: int = 4  # longest context suffix to search for
    min_ngram: int = 1  # shortest suffix still worth trusting
    max_matches: int = 4  # earlier occurrences used per n-gram length, most recent first
    max_depth: int = 12  # tokens copied after each occurrence

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}")
        if self.max_matches < 1 or self.max_depth < 1:
            raise ValueError(f"max_matches and max_depth must be >= 1, got {self.max_matches}, {self.max_depth}")


def find_continuations(context: np.ndarray, ngram: int, max_matches: int, max_depth: int) -> list[np.ndarray]:
    """Continuations of earlier occurrences of the context's last ``ngram`` tokens.

    Args:
        context: ``[L]`` int64 token ids.
        ngram: suffix length to match.
        max_matches: the most occurrences to return, most recent first.
        max_depth: the most tokens per continuation.

    Returns:
        Up to ``max_matches`` arrays ``[<= max_depth]`` int64, each non-empty.
    """
    length = context.size
    if length <= ngram:
        return []
    suffix = context[-ngram:]
    windows = sliding_window_view(context[: length - 1], ngram)  # [L-ngram, ngram], each has a successor
    starts = np.flatnonzero((windows == suffix).all(axis=1))  # [m] positions of earlier occurrences
    found = []
    for start in starts[::-1][:max_matches]:
        begin = start + ngram
        found.append(context[begin : begin + max_depth])
    return found


class PromptLookupDrafter:
    """Drafts by copying what followed earlier occurrences of the current suffix.

    Args:
        config: tunables; defaults are documented on ``LookupConfig``.
    """

    name = "lookup"
    feedback_width = 0

    def __init__(self, config: LookupConfig | None = None) -> None:
        self.config = config or LookupConfig()

    def begin(self, prompt: np.ndarray) -> None:
        """Nothing to prepare: the context is searched afresh each step.

        Args:
            prompt: ``[p]`` int64 prompt token ids (unused).
        """

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        """Merges the continuations of the longest matching suffixes into one trie.

        Args:
            context: ``[L]`` int64, all tokens so far; ``context[-1]`` is the root.
            budget: the most nodes, root included.

        Returns:
            The draft tree (root only when nothing matches).
        """
        cfg = self.config
        builder = TreeBuilder(int(context[-1]), budget)
        for ngram in range(cfg.max_ngram, cfg.min_ngram - 1, -1):
            reliability = ngram / (ngram + 1)  # longer matches are likelier to continue alike
            for continuation in find_continuations(context, ngram, cfg.max_matches, cfg.max_depth):
                builder.add_path(continuation, scores=reliability ** np.arange(1, continuation.size + 1))
                if builder.full:
                    return builder.build()
        return builder.build()

    def observe(self, step: StepFeedback) -> None:
        """Nothing to learn: the context already holds the accepted tokens.

        Args:
            step: the verification step (unused).
        """
