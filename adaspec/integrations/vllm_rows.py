"""Which request owns each row of vLLM's batch, decided from the rows' tokens alone.

vLLM hands a proposer its persistent batch buffers and nothing that names a request: rows are
reused when a request finishes, moved when the batch condenses, and a preempted request comes
back in another row. So every row is matched to a request state by content, each step:

* an empty ``sampled[i]`` is a chunk of a prefill: no state, no draft;
* with ``n = num_tokens_no_spec[i]`` and ``s = sampled[i]``, the row's tokens before this step are
  ``token_ids_cpu[i, :n - len(s)]``; a state continues on the row only if its context is exactly
  those tokens, so a state never drafts for a row whose text does not extend its own;
* each state goes to one row at most, so rows with identical contexts each keep their own;
* any other row starts a new state, built from its tokens. That covers a new request, and a row
  whose request moved on by more than one step since the last call: near ``max_model_len`` the
  runner skips the proposer for the whole batch, so the tracker cannot rely on seeing every step;
* a state whose row is gone has finished, or was preempted: the caller is told (so that what the
  request generated reaches the drafter's history at once), and the state is parked, least
  recently parked out, so that a preempted request that comes back continues it.

Nothing here knows vLLM or a drafter: states are opaque payloads, which makes the logic testable
with plain numpy arrays.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

TAIL = 8  # tokens of a context's end in its lookup key


@dataclass(eq=False)
class RowState:
    """One request as the tracker follows it.

    Attributes:
        tokens: ``[capacity]`` int64 buffer; ``tokens[:length]`` is the context (prompt and
            output) as of the last call that saw the request.
        length: tokens held.
        prompt_length: context length when the state began (its prompt, as far as the tracker
            could tell: a state rebuilt mid-request counts what it found as prompt).
        payload: the caller's per-request data (drafter state, last chain...).
        id: a number unique within the tracker, for logs and tests.
    """

    tokens: np.ndarray
    length: int
    prompt_length: int
    payload: Any = None
    id: int = 0
    _key: tuple[int, bytes] | None = None  # ``key()`` cached while the length stays

    @property
    def context(self) -> np.ndarray:
        """``[length]`` int64 the context (a view: copy it to keep it)."""
        return self.tokens[: self.length]

    def extend_to(self, row: np.ndarray) -> None:
        """Grows the context to a row's tokens (a row that extends it).

        Args:
            row: ``[m]`` the row's tokens, ``m >= length``, starting with the context.
        """
        if row.size > self.tokens.size:
            grown = np.empty(max(row.size, 2 * self.tokens.size), dtype=np.int64)
            grown[: self.length] = self.tokens[: self.length]
            self.tokens = grown
        self.tokens[self.length : row.size] = row[self.length :]
        self.length = int(row.size)

    def key(self) -> tuple[int, bytes]:
        """The lookup key of the context: its length and last ``TAIL`` tokens."""
        if self._key is None or self._key[0] != self.length:
            self._key = key_of(self.context)
        return self._key


def key_of(tokens: np.ndarray) -> tuple[int, bytes]:
    """A context's lookup key: its length and its last ``TAIL`` tokens as bytes.

    Args:
        tokens: ``[m]`` int token ids.

    Returns:
        The key.
    """
    return int(tokens.size), np.ascontiguousarray(tokens[-TAIL:], dtype=np.int64).tobytes()


@dataclass
class RowMatch:
    """What the tracker decided for one live row.

    Attributes:
        state: the row's state (None for a prefill chunk).
        continued: True when ``state`` was on this row's request at the last call that saw it
            (its last chain, if any, was verified on this row), False when it was made now.
        resumed: True when ``state`` came back from the park (its request was preempted).
    """

    state: RowState | None
    continued: bool = False
    resumed: bool = False


@dataclass
class RowTracker:
    """Follows requests through vLLM's reused, reordered batch rows (module doc).

    Args:
        park_size: vanished states kept in case their request was only preempted.
        new_payload: makes a new state's payload from the state (its context is set).
    """

    park_size: int = 256
    new_payload: Callable[[RowState], Any] = lambda state: None
    live: list[RowState] = field(default_factory=list)  # states on a row at the last call, in row order
    row_owner: dict[int, RowState] = field(default_factory=dict)  # row -> its state at the last call
    parked: OrderedDict[int, RowState] = field(default_factory=OrderedDict)  # id -> state, oldest first
    _next_id: int = 0

    def match(self, sampled: Sequence[Sequence[int]], num_tokens: np.ndarray,
              token_ids: np.ndarray) -> tuple[list[RowMatch], list[RowState]]:
        """Assigns a state to every live row of one proposer call.

        Args:
            sampled: per live row, the tokens this step added (empty: a prefill chunk).
            num_tokens: ``[max_rows]`` int, each row's token count (``sampled`` included); rows
                past ``len(sampled)`` are stale and ignored.
            token_ids: ``[max_rows, max_len]`` int, each row's tokens; past a row's count the
                buffer holds stale or draft tokens, ignored.

        Returns:
            One ``RowMatch`` per live row, and the states that were on a row at the last call
            and are on none now (finished or preempted).

        Raises:
            ValueError: when the arrays cannot hold the live rows.
        """
        rows = len(sampled)
        if num_tokens.shape[0] < rows or token_ids.shape[0] < rows:
            raise ValueError(f"{rows} live rows, but the buffers hold {num_tokens.shape[0]} and {token_ids.shape[0]}")
        by_key: dict[tuple[int, bytes], list[RowState]] = {}
        for state in [*self.live, *self.parked.values()]:
            by_key.setdefault(state.key(), []).append(state)
        claimed: set[int] = set()
        matches: list[RowMatch] = [RowMatch(None)] * rows
        befores: list[np.ndarray | None] = [None] * rows  # [n - added] each row as the last call saw it
        for i in range(rows):
            added = len(sampled[i])
            if added == 0:
                continue  # a prefill chunk
            n = int(num_tokens[i])
            if not 0 < added <= n <= token_ids.shape[1]:
                raise ValueError(f"row {i}: {added} sampled tokens do not fit its {n} tokens")
            befores[i] = token_ids[i, : n - added]
        # rows whose state of the last call is still theirs first, so rows with identical contexts
        # keep their own (their chains may have differed); then any state with the row's context
        for same_row_first in (True, False):
            for i, before in enumerate(befores):
                if before is None or matches[i].state is not None:
                    continue
                if same_row_first:
                    candidates = [self.row_owner[i]] if i in self.row_owner else []
                else:
                    candidates = by_key.get(key_of(before), [])
                state = self._claim(candidates, before, claimed)
                if state is not None:
                    matches[i] = RowMatch(state, True, state.id in self.parked)
                    state.extend_to(token_ids[i, : int(num_tokens[i])])
        for i, before in enumerate(befores):
            if before is not None and matches[i].state is None:
                matches[i] = RowMatch(self._new_state(token_ids[i, : int(num_tokens[i])], before.size))
                claimed.add(matches[i].state.id)
        return matches, self._settle(matches, claimed)

    @staticmethod
    def _claim(candidates: list[RowState], before: np.ndarray, claimed: set[int]) -> RowState | None:
        """The first unclaimed candidate whose context equals ``before`` (claimed by this call)."""
        for state in candidates:
            if state.id not in claimed and np.array_equal(state.context, before):
                claimed.add(state.id)
                return state
        return None

    def _new_state(self, row: np.ndarray, prompt_length: int) -> RowState:
        """A state for a row no state continues: its context is the row's tokens, its prompt the
        tokens before this step's."""
        tokens = np.empty(max(64, 2 * row.size), dtype=np.int64)
        tokens[: row.size] = row
        state = RowState(tokens, int(row.size), prompt_length, None, self._next_id)
        self._next_id += 1
        state.payload = self.new_payload(state)
        return state

    def _settle(self, matches: list[RowMatch], claimed: set[int]) -> list[RowState]:
        """Makes the matched states the live ones and parks the ones that vanished.

        Returns:
            The states that were live at the last call and are on no row now.
        """
        vanished = [state for state in self.live if state.id not in claimed]
        self.live = [m.state for m in matches if m.state is not None]
        self.row_owner = {row: m.state for row, m in enumerate(matches) if m.state is not None}
        for state in self.live:
            self.parked.pop(state.id, None)
        for state in vanished:
            self.parked[state.id] = state
        while len(self.parked) > self.park_size:
            self.parked.popitem(last=False)
        return vanished

    def drain(self) -> list[RowState]:
        """Forgets every state (for shutting down).

        Returns:
            The states that were live (parked ones were handed back when they vanished).
        """
        live = self.live
        self.live, self.row_owner, self.parked = [], {}, OrderedDict()
        return live


__all__ = ["RowMatch", "RowState", "RowTracker", "key_of"]
