"""Offline priors for the ``aded`` drafter: a tri-gram table counted from a token corpus.

``adaspec prior build FILES... -o prior.npz`` tokenises text files with the model's
tokenizer, counts every tri-gram and bigram, and stores each context's most frequent
successors with their relative frequencies, in the format ``TrigramTable.load`` reads
(``aded:prior_path=prior.npz``). A table saved by ``AdedDrafter.save`` after decoding is
the other kind of prior: one learned from the model's own outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from adaspec.drafters.trigram import TrigramTable, trigrams
from adaspec.atomic import atomic_writer
from adaspec.errors import AdaspecError


def successor_distributions(contexts: np.ndarray, followers: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct context, its ``slots`` most frequent followers and their relative frequencies.

    Args:
        contexts: ``[m]`` int64 context keys, one per observed pair.
        followers: ``[m]`` int64 the token that followed.
        slots: successors kept per context.

    Returns:
        ``[u]`` int64 distinct contexts, ``[u, slots]`` int64 successor ids (-1 where fewer),
        ``[u, slots]`` float32 frequencies, and ``[u]`` int64 occurrence counts.
    """
    pairs, pair_counts = np.unique(np.stack([contexts, followers], axis=1), axis=0, return_counts=True)  # [q, 2], [q]
    order = np.lexsort((-pair_counts, pairs[:, 0]))  # by context, then most frequent first
    pairs, pair_counts = pairs[order], pair_counts[order]
    keys, first = np.unique(pairs[:, 0], return_index=True)  # [u], [u] where each context's pairs start
    run_lengths = np.diff(np.append(first, pairs.shape[0]))  # [u]
    rank = np.arange(pairs.shape[0]) - np.repeat(first, run_lengths)  # [q] rank within its context
    context_index = np.repeat(np.arange(keys.size), run_lengths)  # [q]
    totals = np.bincount(context_index, weights=pair_counts).astype(np.int64)  # [u]
    ids = np.full((keys.size, slots), -1, dtype=np.int64)
    freqs = np.zeros((keys.size, slots), dtype=np.float32)
    kept = rank < slots
    ids[context_index[kept], rank[kept]] = pairs[kept, 1]
    freqs[context_index[kept], rank[kept]] = pair_counts[kept] / totals[context_index[kept]]
    return keys, ids, freqs, totals


def build_prior(sequences: Iterable[np.ndarray], vocab_size: int, capacity: int = 1 << 17, slots: int = 8) -> TrigramTable:
    """Counts tri-grams and bigrams over token sequences into a table.

    When there are more contexts than ``capacity``, the most frequent are kept.

    Args:
        sequences: token id arrays ``[m_i]`` (one per document).
        vocab_size: the model's vocabulary size.
        capacity: the most contexts stored.
        slots: successors kept per context.

    Returns:
        The table.
    """
    table = TrigramTable(vocab_size, capacity, slots)
    tri_keys, tri_next, bi_keys, bi_next = [], [], [], []
    for tokens in sequences:
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size >= 2:
            bi_keys.append(tokens[:-1])
            bi_next.append(tokens[1:])
        first, second, third = trigrams(tokens)
        tri_keys.append(table.context_keys(first, second))
        tri_next.append(third)
    if not bi_keys:
        return table
    contexts = np.concatenate(tri_keys + bi_keys)
    followers = np.concatenate(tri_next + bi_next)
    keys, ids, freqs, totals = successor_distributions(contexts, followers, slots)
    keep = np.argsort(totals, kind="stable")[-capacity:]  # the most frequent contexts, rarest first
    table.update(keys[keep], ids[keep], freqs[keep], rate=1.0)
    return table


def write_prior(table: TrigramTable, out: Path) -> None:
    """Saves a table so that a failure leaves no partial file behind.

    Args:
        table: the tri-gram table to save.
        out: the ``.npz`` file to write.

    Raises:
        AdaspecError: if the folder does not exist or cannot be written.
    """
    folder = out.resolve().parent
    if not folder.is_dir():
        raise AdaspecError(f"cannot write {out}: folder {folder} does not exist")
    try:
        with atomic_writer(out) as file:
            table.save(file)
    except OSError as error:
        raise AdaspecError(f"cannot write {out}: {error.strerror or error}") from None


def read_texts(paths: Iterable[Path]) -> list[str]:
    """The UTF-8 text of each file.

    Args:
        paths: the text files.

    Returns:
        Their texts, in order.

    Raises:
        AdaspecError: for a missing, unreadable or non-text file.
    """
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AdaspecError(f"no such file: {path}") from None
        except UnicodeDecodeError:
            raise AdaspecError(f"{path} is not UTF-8 text") from None
        except OSError as error:
            raise AdaspecError(f"cannot read {path}: {error.strerror or error}") from None
    return texts
