"""Which request owns each row of vLLM's batch, decided from the rows' tokens alone.

vLLM hands a proposer its persistent batch buffers and nothing that names a request: rows are
reused when a request finishes, moved when the batch condenses, and a preempted request comes
back in another row. So every row is matched to a request state by content, each step:

* an empty ``sampled[i]`` is a chunk of a prefill: no state, no draft;
* with ``n = num_tokens_no_spec[i]`` and ``s = sampled[i]``, the row's tokens before this step are
  ``token_ids_cpu[i, :n - len(s)]``; a state continues on the row only if its context is exactly
  those tokens (the common case), or, for a state that was on a row at the previous call, a
  prefix of them (the runner skips the proposer for the whole batch near ``max_model_len``, so a
  row may have moved on by several steps);
* each state goes to one row at most, so rows with identical contexts each keep their own;
* any other row starts a new state, built from its tokens;
* a state whose row is gone may only be preempted: it is parked (least recently parked out), and
  the tracker hands the ones that fall out of the park back to the caller to end.

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
        return key_of(self.context)


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
        continued: True when ``state`` was matched (its last chain, if any, was verified on this
            row), False when it was made for this row now.
        gap: tokens the row holds beyond ``state``'s previous context (``len(sampled[i])`` for a
            state followed step by step; more after a call the runner skipped).
    """

    state: RowState | None
    continued: bool = False
    gap: int = 0


@dataclass
class RowTracker:
    """Follows requests through vLLM's reused, reordered batch rows (module doc).

    Args:
        park_size: vanished states kept in case their request was only preempted.
        new_payload: makes a new state's payload from the state (its context is set).
    """

    park_size: int = 256
    new_payload: Callable[[RowState], Any] = lambda state: None
    live: list[RowState] = field(default_factory=list)  # states on a row at the last call
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
            One ``RowMatch`` per live row, and the states that fell out of the park (their
            requests are over: end them).

        Raises:
            ValueError: when the arrays cannot hold the live rows.
        """
        rows = len(sampled)
        if num_tokens.shape[0] < rows or token_ids.shape[0] < rows:
            raise ValueError(f"{rows} live rows, but the buffers hold {num_tokens.shape[0]} and {token_ids.shape[0]}")
        previous = {state.id: state for state in self.live}
        by_key: dict[tuple[int, bytes], list[RowState]] = {}
        for state in [*self.live, *self.parked.values()]:
            by_key.setdefault(state.key(), []).append(state)
        claimed: set[int] = set()
        matches: list[RowMatch] = [RowMatch(None)] * rows
        pending: list[int] = []  # rows with no exact match yet
        for i in range(rows):
            gap = len(sampled[i])
            if gap == 0:
                continue  # a prefill chunk
            n = int(num_tokens[i])
            if gap > n:
                raise ValueError(f"row {i}: {gap} sampled tokens but only {n} tokens in the row")
            before = token_ids[i, : n - gap]  # [n - gap] the row as the last call saw it
            state = self._claim(by_key.get(key_of(before), []), before, claimed)
            if state is None:
                pending.append(i)
                continue
            state.extend_to(token_ids[i, :n])
            matches[i] = RowMatch(state, True, gap)
        for i in pending:  # a state from the last call whose row moved on by more than one step
            n = int(num_tokens[i])
            row = token_ids[i, :n]
            state = self._claim_prefix(previous, row, claimed)
            if state is None:
                state = self._new_state(row)
                matches[i] = RowMatch(state, False, 0)
            else:
                gap = n - state.length
                state.extend_to(row)
                matches[i] = RowMatch(state, True, gap)
            claimed.add(state.id)
        return matches, self._settle(matches, claimed)

    @staticmethod
    def _claim(candidates: list[RowState], before: np.ndarray, claimed: set[int]) -> RowState | None:
        """The first unclaimed candidate whose context equals ``before`` (claimed by this call)."""
        for state in candidates:
            if state.id not in claimed and np.array_equal(state.context, before):
                claimed.add(state.id)
                return state
        return None

    @staticmethod
    def _claim_prefix(previous: dict[int, RowState], row: np.ndarray, claimed: set[int]) -> RowState | None:
        """The unclaimed state of the last call with the longest context that starts ``row``."""
        best: RowState | None = None
        for state in previous.values():
            if state.id in claimed or state.length >= row.size or (best is not None and state.length <= best.length):
                continue
            if np.array_equal(row[: state.length], state.context):
                best = state
        return best

    def _new_state(self, row: np.ndarray) -> RowState:
        """A state for a row no state continues; its context is the row's tokens."""
        tokens = np.empty(max(64, 2 * row.size), dtype=np.int64)
        tokens[: row.size] = row
        state = RowState(tokens, int(row.size), int(row.size), None, self._next_id)
        self._next_id += 1
        state.payload = self.new_payload(state)
        return state

    def _settle(self, matches: list[RowMatch], claimed: set[int]) -> list[RowState]:
        """Makes the matched states the live ones, parks the rest, and returns those parked out."""
        vanished = [state for state in self.live if state.id not in claimed]
        self.live = [m.state for m in matches if m.state is not None]
        for state in self.live:
            self.parked.pop(state.id, None)
        for state in vanished:
            self.parked[state.id] = state
        ended = []
        while len(self.parked) > self.park_size:
            ended.append(self.parked.popitem(last=False)[1])
        return ended

    def drain(self) -> list[RowState]:
        """Every state the tracker holds, live or parked, which it forgets (for shutting down).

        Returns:
            The states, to end.
        """
        states = [*self.live, *self.parked.values()]
        self.live, self.parked = [], OrderedDict()
        return states


__all__ = ["RowMatch", "RowState", "RowTracker", "key_of"]
