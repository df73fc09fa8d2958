"""The ``lookup`` drafter: prompt lookup decoding (PLD / CopySpec) as a tree.

The longest suffix of the context that occurred earlier (prompt or output) is a good hint
that what followed it then will follow it now. Several earlier occurrences give several
continuations; they are merged into one trie so shared prefixes cost one node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from adaspec.drafters.base import Drafter, check_range
from adaspec.tree import DraftTree, Source, TreeBuilder


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
        for name, low, high in (("max_ngram", 1, 64), ("max_matches", 1, 64), ("max_depth", 1, 256)):
            check_range(name, getattr(self, name), low, high)


@numba.njit(cache=True)
def recent_matches(context: np.ndarray, longest: int, most: int) -> np.ndarray:
    """The most recent earlier occurrences of the context's last 1..``longest`` tokens.

    One backward pass with one comparison at most positions (a few microseconds for thousands
    of tokens), so the search stays negligible beside a forward pass at long contexts.

    Args:
        context: ``[L]`` int64 token ids.
        longest: the longest suffix to match.
        most: the most occurrences to keep per suffix length.

    Returns:
        ``[longest + 1, most]`` int64: row ``n`` holds, most recent first, the last positions
        ``j < L - 1`` of earlier occurrences of the last ``n`` tokens (so ``j + 1`` is what
        followed), padded with -1; row 0 is unused.
    """
    length = context.size
    found = np.full((longest + 1, most), -1, dtype=np.int64)
    counts = np.zeros(longest + 1, dtype=np.int64)
    for end in range(length - 2, -1, -1):
        matched = 0
        while matched < longest and matched <= end and context[end - matched] == context[length - 1 - matched]:
            matched += 1
        for ngram in range(1, matched + 1):
            if counts[ngram] < most:
                found[ngram, counts[ngram]] = end
                counts[ngram] += 1
    return found


def continuations(context: np.ndarray, ends: np.ndarray, max_depth: int) -> list[np.ndarray]:
    """What followed earlier occurrences of a suffix.

    Args:
        context: ``[L]`` int64 token ids.
        ends: ``[m]`` a row of ``recent_matches``: last positions of occurrences, -1 for none.
        max_depth: the most tokens per continuation.

    Returns:
        One array ``[<= max_depth]`` int64 per occurrence, in the order of ``ends``, each non-empty.
    """
    return [context[end + 1 : end + 1 + max_depth] for end in ends[ends >= 0]]


class PromptLookupDrafter(Drafter):
    """Drafts by copying what followed earlier occurrences of the current suffix.

    Args:
        config: tunables; defaults are documented on ``LookupConfig``.
    """

    name = "lookup"

    def __init__(self, config: LookupConfig | None = None) -> None:
        self.config = config or LookupConfig()

    def propose(self, context: np.ndarray, budget: int, state: None = None) -> DraftTree:
        """Merges the continuations of the longest matching suffixes into one trie.

        The context is searched afresh each step (one compiled scan), so the drafter keeps no
        request state. See ``Drafter.propose`` for the arguments; the tree is the root alone
        when nothing matches.
        """
        cfg = self.config
        builder = TreeBuilder(int(context[-1]), budget)
        context = np.ascontiguousarray(context, dtype=np.int64)
        found = recent_matches(context, cfg.max_ngram, cfg.max_matches)  # [max_ngram + 1, max_matches] one scan
        for ngram in range(cfg.max_ngram, cfg.min_ngram - 1, -1):
            reliability = ngram / (ngram + 1)  # longer matches are likelier to continue alike
            for continuation in continuations(context, found[ngram], cfg.max_depth):
                builder.add_path(continuation, scores=reliability ** np.arange(1, continuation.size + 1),
                                 source=Source.CONTEXT)
                if builder.full:
                    return builder.build()
        return builder.build()
