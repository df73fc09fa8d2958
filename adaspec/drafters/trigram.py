"""A sparse, bounded, adaptive tri-gram model of what the LLM says next.

For each context bigram ``(a, b)`` the table keeps up to ``slots`` successor tokens ``c`` with
weights that approximate ``P(c | a, b)`` under the model. It also keeps a bigram row per
token ``b`` (the same successors, whatever came before ``b``) to back off to when a
tri-gram context has never been seen.

Every observation moves a row towards what was observed: ``w <- (1 - rate) * w`` and then
``w[c] += rate * p`` for each observed ``(c, p)``, so old evidence decays geometrically and
a row whose observations are probability distributions stays a (sub-)probability
distribution. Rows are kept sorted by weight. When more than ``capacity`` contexts are
stored, the least recently updated half is evicted.

Storage is an open-addressing hash table in flat numpy arrays, with the hot loops compiled
by numba, so updates and look-ups cost microseconds and the search can call them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numba
import numpy as np

EMPTY = -1  # an unused key or successor slot
MAX_CAPACITY = 1 << 20  # the most contexts a table may keep (2^22 slots, ~335 MB at 8 successors)
_MIX = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer (Fibonacci hashing)


@numba.njit(cache=True)
def find_slot(keys: np.ndarray, key: int) -> int:
    """Finds a key in an open-addressing hash table.

    Args:
        keys: ``[T]`` int64 hash table keys (T a power of two, at most half full: ``TrigramTable``
            keeps at most ``capacity`` of ``2 * capacity + 2`` or more slots in use, so a probe
            always ends).
        key: the key to find (>= 0).

    Returns:
        The index of ``key``, or of the empty slot where it would go.
    """
    mask = keys.size - 1
    mixed = key * _MIX
    slot = (mixed ^ (mixed >> 29)) & mask
    while keys[slot] != key and keys[slot] != EMPTY:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True)
def update_rows(
    keys: np.ndarray,
    ids: np.ndarray,
    weights: np.ndarray,
    stamps: np.ndarray,
    clock: int,
    obs_keys: np.ndarray,
    obs_ids: np.ndarray,
    obs_probs: np.ndarray,
    rate: float,
) -> int:
    """Moves one row per observation towards the observed successors.

    Args:
        keys: ``[T]`` int64 table keys.
        ids: ``[T, S]`` int32 successor ids per row, ``EMPTY`` where unused.
        weights: ``[T, S]`` float32 successor weights, sorted in decreasing order per row.
        stamps: ``[T]`` int64 clock of each row's last update.
        clock: the current update clock.
        obs_keys: ``[m]`` int64 context keys.
        obs_ids: ``[m, K]`` int64 observed successor ids (negative = none).
        obs_probs: ``[m, K]`` float32 their probabilities.
        rate: step size in (0, 1].

    Returns:
        The number of new rows inserted.
    """
    slots = ids.shape[1]
    inserted = 0
    for i in range(obs_keys.size):
        slot = find_slot(keys, obs_keys[i])
        if keys[slot] == EMPTY:
            keys[slot] = obs_keys[i]
            ids[slot, :] = EMPTY
            weights[slot, :] = 0.0
            inserted += 1
        stamps[slot] = clock
        for s in range(slots):
            weights[slot, s] *= 1.0 - rate
        for j in range(obs_ids.shape[1]):
            token = obs_ids[i, j]
            gain = rate * obs_probs[i, j]
            if token < 0 or gain <= 0.0:
                continue
            found = -1
            for s in range(slots):
                if ids[slot, s] == token:
                    found = s
                    break
            if found >= 0:
                weights[slot, found] += gain
            elif ids[slot, slots - 1] == EMPTY or weights[slot, slots - 1] < gain:
                ids[slot, slots - 1] = token  # the weakest slot (rows are sorted) gives way
                weights[slot, slots - 1] = gain
                found = slots - 1
            else:
                continue
            while found > 0 and weights[slot, found] > weights[slot, found - 1]:  # keep the row sorted
                ids[slot, found], ids[slot, found - 1] = ids[slot, found - 1], ids[slot, found]
                weights[slot, found], weights[slot, found - 1] = weights[slot, found - 1], weights[slot, found]
                found -= 1
    return inserted


@numba.njit(cache=True)
def successor_row(keys: np.ndarray, vocab_size: int, before: int, token: int) -> int:
    """The row to draft from for the context ``(before, token)``.

    Args:
        keys: ``[T]`` int64 table keys.
        vocab_size: the vocabulary size the keys were made with.
        before: the token before ``token`` (negative when there is none).
        token: the last token.

    Returns:
        The slot of the tri-gram row, else of the bigram row ``token``, else -1.
    """
    if before >= 0:
        slot = find_slot(keys, trigram_key(vocab_size, before, token))
        if keys[slot] != EMPTY:
            return slot
    slot = find_slot(keys, token)
    if keys[slot] != EMPTY:
        return slot
    return -1


@numba.njit(cache=True)
def trigram_key(vocab_size: int, before: int, token: int) -> int:
    """The table key of context ``(before, token)``; bigram rows use the token id itself as key.

    Args:
        vocab_size: the model's vocabulary size.
        before: the earlier token id (>= 0).
        token: the later token id.

    Returns:
        ``(before + 1) * vocab_size + token``, never equal to a bigram key.
    """
    return (before + 1) * vocab_size + token


@numba.njit(cache=True)
def reinsert(keys: np.ndarray, ids: np.ndarray, weights: np.ndarray, stamps: np.ndarray,
             new_keys: np.ndarray, new_ids: np.ndarray, new_weights: np.ndarray, new_stamps: np.ndarray,
             keep: np.ndarray) -> None:
    """Copies the rows at slots ``keep`` of one table into an empty one (used by eviction).

    Args:
        keys, ids, weights, stamps: the old table's arrays (``[T]``, ``[T, S]``, ``[T, S]``, ``[T]``).
        new_keys, new_ids, new_weights, new_stamps: the new, empty table's arrays.
        keep: ``[r]`` int64 old slots to copy.
    """
    for old in keep:
        slot = find_slot(new_keys, keys[old])
        new_keys[slot] = keys[old]
        new_ids[slot, :] = ids[old, :]
        new_weights[slot, :] = weights[old, :]
        new_stamps[slot] = stamps[old]


def trigrams(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The consecutive triples of a sequence.

    Args:
        tokens: ``[m]`` int64.

    Returns:
        ``[m-2]`` first, second and third tokens (empty if m < 3).
    """
    if tokens.size < 3:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return tokens[:-2], tokens[1:-1], tokens[2:]


class TrigramTable:
    """Successor rows keyed by a context bigram (and backoff rows keyed by one token).

    Args:
        vocab_size: the model's vocabulary size.
        capacity: the most contexts (tri-gram and bigram rows together) kept.
        slots: successors kept per context.

    Raises:
        ValueError: for a capacity or slot count < 1.
    """

    def __init__(self, vocab_size: int, capacity: int = 1 << 17, slots: int = 8) -> None:
        if not 1 <= capacity <= MAX_CAPACITY or slots < 1 or vocab_size < 1:
            raise ValueError(f"need capacity in 1..{MAX_CAPACITY}, vocab_size and slots >= 1; got {capacity}, "
                             f"{vocab_size}, {slots}")
        self.vocab_size = vocab_size
        self.capacity = capacity
        self.slots = slots
        table_size = 1 << int(np.ceil(np.log2(2 * capacity + 2)))  # load factor <= 1/2
        self.keys = np.full(table_size, EMPTY, dtype=np.int64)  # [T]
        self.ids = np.full((table_size, slots), EMPTY, dtype=np.int32)  # [T, S]
        self.weights = np.zeros((table_size, slots), dtype=np.float32)  # [T, S]
        self.stamps = np.zeros(table_size, dtype=np.int64)  # [T]
        self.clock = 0
        self.count = 0

    def __len__(self) -> int:
        """The number of stored contexts."""
        return self.count

    @property
    def nbytes(self) -> int:
        """Memory held by the table's arrays."""
        return self.keys.nbytes + self.ids.nbytes + self.weights.nbytes + self.stamps.nbytes

    def context_keys(self, before: np.ndarray, token: np.ndarray) -> np.ndarray:
        """The keys of many tri-gram contexts at once.

        Args:
            before: ``[m]`` earlier token ids.
            token: ``[m]`` later token ids.

        Returns:
            ``[m]`` int64 keys of the contexts ``(before[i], token[i])``.
        """
        return (before.astype(np.int64) + 1) * self.vocab_size + token.astype(np.int64)

    def update(self, keys: np.ndarray, ids: np.ndarray, probs: np.ndarray, rate: float) -> None:
        """Moves the rows of ``keys`` towards the observed successors.

        Args:
            keys: ``[m]`` int64 context keys (``context_keys`` for tri-grams, token ids for bigrams).
            ids: ``[m, K]`` int64 observed successors (negative entries are skipped).
            probs: ``[m, K]`` float their probabilities.
            rate: step size in (0, 1].
        """
        if keys.size == 0:
            return
        if keys.size > self.capacity:  # only the newest observations could stay: the table holds no more
            keys, ids, probs = keys[-self.capacity :], ids[-self.capacity :], probs[-self.capacity :]
        if self.count + keys.size > self.capacity:  # make room: the table never holds more than capacity
            self.evict(max(0, min(self.capacity // 2, self.capacity - keys.size)))
        self.clock += 1
        self.count += update_rows(
            self.keys, self.ids, self.weights, self.stamps, self.clock,
            np.ascontiguousarray(keys, dtype=np.int64),
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(probs, dtype=np.float32),
            float(rate),
        )

    def evict(self, keep: int) -> None:
        """Keeps only the most recently updated contexts.

        Args:
            keep: how many contexts to keep (0 empties the table).
        """
        used = np.flatnonzero(self.keys != EMPTY)  # [count]
        newest = used[np.argsort(self.stamps[used], kind="stable")[used.size - keep:]] if keep > 0 else used[:0]
        keys = np.full_like(self.keys, EMPTY)
        ids = np.full_like(self.ids, EMPTY)
        weights = np.zeros_like(self.weights)
        stamps = np.zeros_like(self.stamps)
        reinsert(self.keys, self.ids, self.weights, self.stamps, keys, ids, weights, stamps, newest)
        self.keys, self.ids, self.weights, self.stamps = keys, ids, weights, stamps
        self.count = newest.size

    def successors(self, before: int, token: int) -> tuple[np.ndarray, np.ndarray]:
        """The row of ``(before, token)``, backing off to ``token``'s bigram row.

        Args:
            before: the token before ``token``; negative for none (bigram row only).
            token: the last token.

        Returns:
            ``[s]`` int64 successor ids and ``[s]`` float32 weights, strongest first (s <= slots).
        """
        slot = successor_row(self.keys, self.vocab_size, before, token)
        if slot < 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        used = self.ids[slot] >= 0
        return self.ids[slot][used].astype(np.int64), self.weights[slot][used].copy()

    def state(self) -> dict[str, np.ndarray]:
        """The stored rows as arrays (``restore`` reads them back).

        Returns:
            ``vocab_size``, ``keys [r]``, ``ids [r, S]``, ``weights [r, S]``, ``stamps [r]``, ``clock``.
        """
        used = np.flatnonzero(self.keys != EMPTY)  # [r]
        return {
            "vocab_size": np.int64(self.vocab_size), "keys": self.keys[used], "ids": self.ids[used],
            "weights": self.weights[used], "stamps": self.stamps[used], "clock": np.int64(self.clock),
        }

    def save(self, path: str | Path | BinaryIO) -> None:
        """Writes the stored rows to an ``.npz`` file.

        Args:
            path: a path or an open binary file.
        """
        np.savez_compressed(path, **self.state())

    def load(self, path: str | Path) -> None:
        """Replaces the table's rows with those written by ``save`` (newest kept if over capacity).

        Args:
            path: the ``.npz`` file.

        Raises:
            ValueError: if the file is not a tri-gram table for this vocabulary size.
        """
        try:
            with np.load(path) as data:
                state = {name: data[name] for name in data.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a tri-gram table file: {error}") from None
        self.restore(state, str(path))

    def restore(self, state: dict[str, np.ndarray], source: str = "the state") -> None:
        """Replaces the table's rows with those of ``state()`` (newest kept if over capacity).

        Args:
            state: arrays from ``state()``.
            source: what they came from, for error messages.

        Raises:
            ValueError: if they are not a tri-gram table for this vocabulary size.
        """
        path = source
        try:
            vocab_size = int(state["vocab_size"])
            keys, ids, weights, stamps = state["keys"], state["ids"], state["weights"], state["stamps"]
            clock = int(state["clock"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a tri-gram table: missing or bad {error}") from None
        if vocab_size != self.vocab_size:
            raise ValueError(f"{path} was built for a vocabulary of {vocab_size}, this model has {self.vocab_size}")
        if ids.ndim != 2 or ids.shape[0] != keys.size or weights.shape != ids.shape or stamps.shape != keys.shape:
            raise ValueError(f"{path} has inconsistent array shapes")
        if ids.size and (int(ids.max()) >= vocab_size or int(ids.min()) < EMPTY):
            raise ValueError(f"{path} holds token ids outside the vocabulary")
        if keys.size and (int(keys.min()) < 0 or int(keys.max()) >= (vocab_size + 1) * vocab_size
                          or np.unique(keys).size != keys.size):
            raise ValueError(f"{path} holds context keys that no pair of tokens has, or one twice")
        if not np.isfinite(weights).all() or (weights.size and float(weights.min()) < 0.0):
            raise ValueError(f"{path} holds weights that are not finite and >= 0")
        order = np.argsort(stamps, kind="stable")[-self.capacity:]
        slots = min(self.slots, ids.shape[1])
        self.keys[:] = EMPTY
        self.ids[:] = EMPTY
        self.weights[:] = 0.0
        self.stamps[:] = 0
        src_ids = np.full((order.size, self.slots), EMPTY, dtype=np.int32)  # [r, S]
        src_weights = np.zeros((order.size, self.slots), dtype=np.float32)  # [r, S]
        src_ids[:, :slots] = ids[order, :slots]
        src_weights[:, :slots] = weights[order, :slots]
        reinsert(keys[order].astype(np.int64), src_ids, src_weights, stamps[order].astype(np.int64),
                 self.keys, self.ids, self.weights, self.stamps, np.arange(order.size, dtype=np.int64))
        self.count = order.size
        self.clock = clock
