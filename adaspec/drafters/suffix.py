"""Suffix decoding: draft what followed the text's last tokens wherever they occurred before, in
the request's own context and in a bounded history of earlier requests.

Each request keeps an index of its own prompt and output; the drafter keeps, per scope, a
history of past outputs (optionally prompts) shared by the requests of that scope and bounded
in tokens (oldest out). A step looks up the context's suffix in both (``SuffixIndex``: longest
match first, up to 64 tokens), merges what followed the matches into a tree whose nodes are
scored by how many matches agree on them, and lets the draft grow with the match: a 4-token
match drafts ~10 tokens, a 30-token match (a verbatim copy under way) up to 64. Per-step cost
does not depend on how many tokens the history holds.

Scopes keep users apart: a request drafts only from its own scope's history and adds only to it
(the server maps scopes to tenants or API keys, or turns history off).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from adaspec.drafters.base import Drafter, DraftRequest, check_range
from adaspec.drafters.suffix_index import SEPARATOR, SuffixIndex
from adaspec.drafters.suffix_tree import GrowthRules, SuffixTreeBuilder
from adaspec.tree import DraftTree, Source

MAX_HISTORY_TOKENS = 1 << 24  # the most tokens one scope's history may keep
FIRST_HISTORY_CELLS = 1 << 12  # a new scope's history starts this small and doubles as it fills
# a history's window table holds about two windows per cell (of the ~5 distinct ones a cell ends), which
# bounds a full history's memory; its look-ups then find its newer half whole and its oldest tokens in
# part (docs/drafters.md, "History scopes")
HISTORY_SLOTS_PER_CELL = 2


@dataclass
class SuffixConfig:
    """Tunables of the suffix drafter.

    Attributes:
        history_tokens: tokens of earlier requests kept per scope (0 turns the shared history off).
        scopes: scopes whose history is kept (least recently used out).
        learn_prompts: add prompts, not only outputs, to the history.
        max_depth: the deepest draft node.
        max_match: the longest match measured.
        min_match: the shortest match drafted from.
        depth_per_match: a draft reaches at most ``2 + depth_per_match * match length`` tokens deep.
        ways: occurrences remembered per window (the most branches one match can offer).
    """

    history_tokens: int = 1 << 20
    scopes: int = 16
    learn_prompts: bool = False
    max_depth: int = 64
    max_match: int = 64
    min_match: int = 1
    depth_per_match: float = 2.0
    ways: int = 4

    def __post_init__(self) -> None:
        for name, low, high in (("history_tokens", 0, MAX_HISTORY_TOKENS), ("scopes", 1, 1024), ("max_depth", 1, 256),
                                ("max_match", 1, 64), ("min_match", 1, 64),
                                ("depth_per_match", 0.0, 64.0), ("ways", 1, 16)):
            check_range(name, getattr(self, name), low, high)

    @property
    def rules(self) -> GrowthRules:
        """How deep and from which matches a draft grows."""
        return GrowthRules(self.max_match, self.min_match, self.max_depth, self.depth_per_match)


@dataclass
class SuffixRequest:
    """One request's side of the suffix drafter.

    Attributes:
        own: an index of the request's context (prompt and output).
        indexed: context tokens already in ``own``.
        scope: the history it drafts from and adds to.
        prompt: its prompt (added to the history at the end when prompts are learned).
    """

    own: SuffixIndex
    scope: str
    prompt: np.ndarray
    indexed: int = 0


@dataclass
class SuffixDrafter(Drafter):
    """Drafts from matches in the request's context and in its scope's history (module doc).

    Args:
        config: the tunables.
        vocab_size: the model's vocabulary size; restored histories must lie inside it (None:
            not checked).
    """

    config: SuffixConfig = field(default_factory=SuffixConfig)
    vocab_size: int | None = None
    name = "suffix"
    learns = True

    def __post_init__(self) -> None:
        self.histories: OrderedDict[str, SuffixIndex] = OrderedDict()  # scope -> history, least recently used first

    def history(self, scope: str) -> SuffixIndex | None:
        """The history of a scope, made when first needed (None when histories are off).

        Args:
            scope: the scope's name.

        Returns:
            Its index.
        """
        if self.config.history_tokens == 0:
            return None
        index = self.histories.pop(scope, None) or SuffixIndex(self.config.history_tokens + 1, self.config.ways,
                                                               initial=FIRST_HISTORY_CELLS,
                                                               slots_per_cell=HISTORY_SLOTS_PER_CELL)
        self.histories[scope] = index
        while len(self.histories) > self.config.scopes:
            self.histories.popitem(last=False)
        return index

    def begin(self, request: DraftRequest) -> SuffixRequest:
        """Indexes the request's prompt.

        Args:
            request: the prompt and scope.

        Returns:
            The request's state.
        """
        capacity = max(4096, 2 * request.prompt.size)
        return SuffixRequest(SuffixIndex(capacity, self.config.ways), request.scope, request.prompt)

    def propose(self, context: np.ndarray, budget: int, state: SuffixRequest | None = None) -> DraftTree:
        """Matches in the request's own context first, then in its scope's history.

        Args:
            context: ``[L]`` int64, all tokens so far; ``context[-1]`` is the root.
            budget: the most nodes, root included.
            state: from ``begin`` (None: the context is indexed for this call alone).

        Returns:
            The draft tree (root only when nothing matches).
        """
        state = state if state is not None else self.begin(DraftRequest(context[:0]))
        state.own.extend(context[state.indexed :])
        state.indexed = context.size
        builder = SuffixTreeBuilder(int(context[-1]), budget)
        query = context[-self.config.max_match :]
        # the own index ends with the query itself: only earlier occurrences count
        builder.grow(state.own, query, self.config.rules, Source.CONTEXT, skip_from=state.own.written - 1)
        history = self.histories.get(state.scope)
        if history is not None:
            builder.grow(history, query, self.config.rules, Source.HISTORY)
        return builder.build()

    def end(self, state: SuffixRequest | None, output: np.ndarray) -> None:
        """Adds the request's output (and prompt, when configured) to its scope's history.

        Args:
            state: from ``begin``.
            output: ``[m]`` int64 the tokens it generated.
        """
        if state is None or output.size == 0:
            return
        history = self.history(state.scope)
        if history is None:
            return
        if self.config.learn_prompts:
            history.add_sequence(state.prompt)
        history.add_sequence(output)

    def state(self) -> dict[str, np.ndarray]:
        """The histories' tokens (their tables are rebuilt on ``restore``).

        Returns:
            ``scopes`` (the names) and ``tokens.<i>`` int32 per scope, oldest first.
        """
        arrays: dict[str, np.ndarray] = {"scopes": np.array(list(self.histories), dtype=str)}
        for index, history in enumerate(self.histories.values()):
            arrays[f"tokens.{index}"] = history.recent_tokens().astype(np.int32)
        return arrays

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Rebuilds the histories from ``state()``.

        Args:
            state: the arrays.

        Raises:
            ValueError: if they are not a suffix drafter's state.
        """
        try:
            scopes = [str(name) for name in state["scopes"]]
            token_arrays = [np.asarray(state[f"tokens.{i}"]) for i in range(len(scopes))]
        except KeyError as missing:
            raise ValueError(f"not a suffix drafter's state: {missing} is missing") from None
        if any(a.dtype.kind not in "iu" for a in token_arrays):
            raise ValueError("a suffix drafter's state holds token arrays that are not integers")
        token_arrays = [a.astype(np.int64) for a in token_arrays]
        if len(set(scopes)) != len(scopes):
            raise ValueError("a suffix drafter's state names a scope twice")
        top = self.vocab_size if self.vocab_size is not None else np.iinfo(np.int32).max
        if any(a.ndim != 1 or (a.size and (int(a.min()) < SEPARATOR or int(a.max()) >= top)) for a in token_arrays):
            raise ValueError("a suffix drafter's state holds malformed token arrays or tokens outside the vocabulary")
        self.histories.clear()
        for scope, tokens in zip(scopes[-self.config.scopes :], token_arrays[-self.config.scopes :]):
            history = self.history(scope)
            if history is not None:
                history.extend(tokens[-self.config.history_tokens :])


__all__ = ["SuffixConfig", "SuffixDrafter", "SuffixRequest"]
