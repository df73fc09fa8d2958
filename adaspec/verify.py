"""Acceptance rules over a verified tree (pure functions of the tree and the model's outputs)."""

from __future__ import annotations

import numpy as np
import torch

from adaspec.tree import DraftTree


def greedy_accept(tree: DraftTree, greedy_tokens: np.ndarray) -> np.ndarray:
    """The longest root path along which every token is the model's greedy choice.

    From the root, move to the child whose token equals the model's argmax at the current
    node; stop when no child matches.

    Args:
        tree: the verified tree.
        greedy_tokens: ``[n]`` int64, argmax of the logits at each node.

    Returns:
        ``[k]`` int64 accepted node indices, root first (k >= 1). The model's next token is
        ``greedy_tokens[path[-1]]``.
    """
    child_of = tree.child_of
    path = [0]
    while True:
        child = child_of.get((path[-1], int(greedy_tokens[path[-1]])))
        if child is None:
            return np.array(path, dtype=np.int64)
        path.append(child)


def top_candidates(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely tokens at every node, with their probabilities.

    Args:
        logits: ``[n, V]`` float32.
        k: how many candidates (0 gives empty ``[n, 0]`` arrays).

    Returns:
        ``([n, k] int64 ids, [n, k] float32 probabilities)``, best first.
    """
    n = logits.shape[0]
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    values, ids = torch.topk(logits, k, dim=-1)  # [n, k], [n, k]
    probs = torch.exp(values - torch.logsumexp(logits, dim=-1, keepdim=True))  # [n, k]
    return ids.cpu().numpy(), probs.cpu().numpy().astype(np.float32)
