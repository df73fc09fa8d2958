"""A bounded index over token streams that finds where the current text's last tokens occurred
before and what followed them: the engine of suffix decoding.

Tokens live in a ring buffer of ``capacity`` cells (oldest out); a separator cell marks where one
sequence ends and the next begins, and one always follows the newest token, so no match or
continuation runs across sequences or across the ring's seam. For each position and each anchor
length k in ``ANCHORS`` (1, 2, 4 ... 64), the hash of the k tokens ending there goes into an
open-addressing table that keeps the ``ways`` most recent positions per hash. A look-up hashes the
query's last k tokens for each anchor, longest first, checks every stored position against the
real tokens (so hash collisions and overwritten cells cost nothing but a miss) and extends each
hit backwards to its true match length. Appending costs O(anchors) per token and a look-up
O(anchors x ways + match length), whatever the number of tokens indexed.

Hashes are polynomial (mod 2^64) over a per-cell prefix hash, so the hash of any window is two
reads and a multiply.
"""

from __future__ import annotations

import numba
import numpy as np

SEPARATOR = -1  # a ring cell that ends a sequence (and the cell after the newest token)
ANCHORS = np.array([64, 32, 16, 8, 4, 2, 1], dtype=np.int64)  # window lengths hashed, longest first
_BASE = np.uint64(0x100000001B3)  # the polynomial hash's multiplier (FNV's 64-bit prime)
_MIX = np.uint64(0x9E3779B97F4A7C15)
PROBES = 8  # table slots tried per hash before the stalest is replaced
# table slots per ring cell: one per anchor window a cell ends, so that a full ring's windows all fit
# (lengths 1 and 2 mostly repeat and share slots, leaving the table about 3/4 full at most); with
# fewer, the stalest windows are replaced before their cells are, and older matches are lost
SLOTS_PER_CELL = int(ANCHORS.size)


@numba.njit(cache=True)
def _fingerprint(window_hash: np.uint64, length: np.int64) -> np.int64:
    """A non-zero table key for a window's hash and length."""
    mixed = (window_hash ^ (np.uint64(length) * _MIX)) * _MIX
    mixed ^= mixed >> np.uint64(31)
    key = np.int64(mixed & np.uint64(0x7FFFFFFFFFFFFFFF))
    return key if key != 0 else np.int64(1)


@numba.njit(cache=True)
def _power(length: np.int64) -> np.uint64:
    value = np.uint64(1)
    for _ in range(length):
        value *= _BASE
    return value


@numba.njit(cache=True)
def _window_hash(prefix: np.ndarray, capacity: np.int64, end: np.int64, length: np.int64,
                 power: np.uint64) -> np.uint64:
    """The hash of the ``length`` cells ending at absolute position ``end`` (from prefix hashes)."""
    last = prefix[end % capacity]
    before = prefix[(end - length) % capacity] if end - length >= 0 else np.uint64(0)
    return last - before * power


@numba.njit(cache=True)
def _slot_for(keys: np.ndarray, newest: np.ndarray, key: np.int64, insert: bool) -> np.int64:
    """The slot holding ``key``; when inserting and it is absent, an empty or the stalest probed slot."""
    mask = keys.size - 1
    spread = np.uint64(key) * _MIX
    start = np.int64((spread ^ (spread >> np.uint64(29))) & np.uint64(mask))
    stalest, stalest_age = np.int64(-1), np.int64(2**62)
    for probe in range(PROBES):
        slot = (start + probe) & mask
        if keys[slot] == key:
            return slot
        if keys[slot] == 0:
            if insert:
                return slot
            return np.int64(-1)
        if newest[slot] < stalest_age:
            stalest, stalest_age = slot, newest[slot]
    return stalest if insert else np.int64(-1)


@numba.njit(cache=True)
def append_tokens(tokens: np.ndarray, prefix: np.ndarray, run: np.ndarray, keys: np.ndarray, ways: np.ndarray,
                  newest: np.ndarray, powers: np.ndarray, written: np.int64, new: np.ndarray) -> np.int64:
    """Appends tokens (``SEPARATOR`` ends a sequence) and indexes every anchor window they end.

    Args:
        tokens: ``[C]`` int32 ring of token ids.
        prefix: ``[C]`` uint64 prefix hash at each cell.
        run: ``[C]`` int64 length of the sequence run ending at each cell (0 at a separator).
        keys: ``[S]`` int64 window fingerprints (0 = empty slot).
        ways: ``[S, W]`` int64 the most recent absolute end positions of each window, -1 empty.
        newest: ``[S]`` int64 the newest position stored in each slot (for replacement).
        powers: ``[A]`` uint64 ``_BASE ** ANCHORS[a]``.
        written: absolute positions written so far.
        new: ``[m]`` int64 tokens to append.

    Returns:
        The new count of absolute positions written (the cell after the last one holds a separator).
    """
    capacity = tokens.size
    for token in new:
        position = written
        cell = position % capacity
        previous = (position - 1) % capacity
        if token == SEPARATOR:
            tokens[cell] = SEPARATOR
            prefix[cell] = prefix[previous] if position > 0 else np.uint64(0)
            run[cell] = 0
        else:
            tokens[cell] = token
            before = prefix[previous] if position > 0 else np.uint64(0)
            prefix[cell] = before * _BASE + np.uint64(token + 1)
            run[cell] = (run[previous] if position > 0 else 0) + 1
            for a in range(ANCHORS.size):
                length = ANCHORS[a]
                if run[cell] < length or length > capacity - 2:
                    continue
                key = _fingerprint(_window_hash(prefix, capacity, position, length, powers[a]), length)
                slot = _slot_for(keys, newest, key, True)
                if keys[slot] != key:  # a new window, or the stalest one replaced
                    keys[slot] = key
                    ways[slot, :] = -1
                for w in range(ways.shape[1] - 1, 0, -1):  # most recent first
                    ways[slot, w] = ways[slot, w - 1]
                ways[slot, 0] = position
                newest[slot] = position
        written = position + 1
    end = written % capacity  # the cell after the newest token is always a separator (the seam)
    tokens[end] = SEPARATOR
    run[end] = 0
    return written


@numba.njit(cache=True)
def find_matches(tokens: np.ndarray, run: np.ndarray, keys: np.ndarray, ways: np.ndarray, newest: np.ndarray,
                 powers: np.ndarray, written: np.int64, query: np.ndarray, max_match: np.int64,
                 skip_from: np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Where the query's last tokens occurred, longest anchor first.

    Args:
        tokens, run, keys, ways, newest, powers: the index (see ``append_tokens``).
        written: absolute positions written.
        query: ``[q]`` int64 the text whose suffix is looked up.
        max_match: the longest match length worth measuring.
        skip_from: positions at or after this are ignored (the query's own tokens, when the
            query is the indexed sequence itself).

    Returns:
        ``[m]`` int64 absolute end positions of the matches (newest first) and ``[m]`` int64
        their match lengths, for the longest anchor that matched anything.
    """
    capacity = tokens.size
    found_positions = np.empty(ways.shape[1], dtype=np.int64)
    found_lengths = np.empty(ways.shape[1], dtype=np.int64)
    q = query.size
    oldest = written - capacity + 1  # positions before this have been overwritten
    for a in range(ANCHORS.size):
        length = ANCHORS[a]
        if length > q:
            continue
        window = np.uint64(0)
        for i in range(q - length, q):
            window = window * _BASE + np.uint64(query[i] + 1)
        slot = _slot_for(keys, newest, _fingerprint(window, length), False)
        if slot < 0:
            continue
        count = 0
        for w in range(ways.shape[1]):
            end = ways[slot, w]
            if end < 0 or end < oldest or end >= skip_from:
                continue
            matched = 0  # compare the real tokens, backwards from the end
            while matched < max_match and matched < q and end - matched >= oldest:
                cell = tokens[(end - matched) % capacity]
                if cell == SEPARATOR or cell != query[q - 1 - matched]:
                    break
                matched += 1
            if matched >= length:
                found_positions[count] = end
                found_lengths[count] = matched
                count += 1
        if count:
            return found_positions[:count], found_lengths[:count]
    return found_positions[:0], found_lengths[:0]


@numba.njit(cache=True)
def continuations(tokens: np.ndarray, written: np.int64, ends: np.ndarray, depth: np.int64) -> np.ndarray:
    """What followed each match, up to ``depth`` tokens, stopping at a sequence's end.

    Args:
        tokens: ``[C]`` the ring.
        written: absolute positions written.
        ends: ``[m]`` absolute end positions of matches.
        depth: tokens per continuation.

    Returns:
        ``[m, depth]`` int64 token ids, ``SEPARATOR`` after a continuation's end.
    """
    capacity = tokens.size
    out = np.full((ends.size, depth), SEPARATOR, dtype=np.int64)
    for m in range(ends.size):
        for d in range(depth):
            position = ends[m] + 1 + d
            if position >= written:
                break
            token = tokens[position % capacity]
            if token == SEPARATOR:
                break
            out[m, d] = token
    return out


class SuffixIndex:
    """A ring of at most ``capacity`` tokens and the window table over it (see the module doc).

    Its arrays may start smaller (``initial`` cells) and double as tokens arrive, up to
    ``capacity``: an index holding few tokens costs memory for few tokens.

    Args:
        capacity: the most cells (tokens kept, plus the seam); older tokens are then overwritten; at least 4.
        ways: match positions kept per window.
        initial: cells allocated at first (default: ``capacity``, all at once).
        slots_per_cell: window-table slots per cell (``SLOTS_PER_CELL``: every window kept); fewer
            bound the memory of a large index, at the price of its oldest windows (a look-up then
            reaches only its more recent tokens).

    Raises:
        ValueError: for a capacity below 4, or ways or slots_per_cell below 1.
    """

    def __init__(self, capacity: int, ways: int = 4, initial: int | None = None,
                 slots_per_cell: int = SLOTS_PER_CELL) -> None:
        if capacity < 4 or ways < 1 or slots_per_cell < 1:
            raise ValueError(f"a suffix index needs capacity >= 4, ways >= 1 and slots_per_cell >= 1, got "
                             f"{capacity}, {ways}, {slots_per_cell}")
        self.max_capacity = int(capacity)
        self.ways_kept = int(ways)
        self.slots_per_cell = int(slots_per_cell)
        self.powers = np.array([_power(int(k)) for k in ANCHORS], dtype=np.uint64)  # [A]
        self._allocate(min(self.max_capacity, max(4, int(initial or capacity))))

    def _allocate(self, capacity: int) -> None:
        """Empty arrays for ``capacity`` cells (nothing written)."""
        self.capacity = capacity
        self.tokens = np.full(self.capacity, SEPARATOR, dtype=np.int32)  # [C]
        self.prefix = np.zeros(self.capacity, dtype=np.uint64)  # [C]
        self.run = np.zeros(self.capacity, dtype=np.int64)  # [C]
        slots = 1 << int(np.ceil(np.log2(self.slots_per_cell * self.capacity)))
        self.keys = np.zeros(slots, dtype=np.int64)  # [S]
        self.ways = np.full((slots, self.ways_kept), -1, dtype=np.int64)  # [S, W]
        self.newest = np.full(slots, -1, dtype=np.int64)  # [S]
        self.written = 0

    def _reserve(self, cells: int) -> None:
        """Grows the arrays (at least doubling, at most to ``max_capacity``) so that ``cells``
        cells fit without overwriting, re-indexing the tokens held (amortised O(1) per token)."""
        if cells <= self.capacity or self.capacity >= self.max_capacity:
            return
        held = self.recent_tokens()  # [size] nothing was overwritten yet: every token since the start
        self._allocate(min(self.max_capacity, max(cells, 2 * self.capacity)))
        if held.size:
            self.written = int(append_tokens(self.tokens, self.prefix, self.run, self.keys, self.ways, self.newest,
                                             self.powers, 0, held))

    @property
    def size(self) -> int:
        """Positions currently held (at most ``capacity - 1``: one cell is the seam)."""
        return min(self.written, self.capacity - 1)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(a.nbytes for a in (self.tokens, self.prefix, self.run, self.keys, self.ways, self.newest))

    def extend(self, new_tokens: np.ndarray) -> None:
        """Appends tokens to the current sequence.

        Args:
            new_tokens: ``[m]`` int token ids (``SEPARATOR`` ends the sequence).
        """
        if len(new_tokens):
            self._reserve(self.written + len(new_tokens) + 1)
            self.written = int(append_tokens(self.tokens, self.prefix, self.run, self.keys, self.ways, self.newest,
                                             self.powers, self.written, np.asarray(new_tokens, dtype=np.int64)))

    def add_sequence(self, sequence: np.ndarray) -> None:
        """Appends a whole sequence and ends it.

        Args:
            sequence: ``[m]`` int token ids.
        """
        self.extend(np.append(np.asarray(sequence, dtype=np.int64), SEPARATOR))

    def matches(self, query: np.ndarray, max_match: int = 64, skip_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Where the query's suffix occurred (see ``find_matches``).

        Args:
            query: ``[q]`` int token ids; its last tokens are matched.
            max_match: the longest match measured.
            skip_from: ignore matches ending at or after this position (default: none ignored).

        Returns:
            ``[m]`` end positions and ``[m]`` match lengths.
        """
        skip = self.written if skip_from is None else skip_from
        return find_matches(self.tokens, self.run, self.keys, self.ways, self.newest, self.powers, self.written,
                            np.ascontiguousarray(query, dtype=np.int64), max_match, skip)

    def following(self, ends: np.ndarray, depth: int) -> np.ndarray:
        """What followed each match (see ``continuations``).

        Args:
            ends: ``[m]`` end positions from ``matches``.
            depth: tokens per continuation.

        Returns:
            ``[m, depth]`` token ids, ``SEPARATOR`` past each continuation's end.
        """
        return continuations(self.tokens, self.written, ends, depth)

    def recent_tokens(self) -> np.ndarray:
        """The tokens held, oldest first, separators included (``add`` them back to rebuild)."""
        held = self.size
        cells = (np.arange(self.written - held, self.written)) % self.capacity
        return self.tokens[cells].astype(np.int64)
