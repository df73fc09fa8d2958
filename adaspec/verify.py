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



def sample_tokens(probs: torch.Tensor, uniforms: torch.Tensor) -> np.ndarray:
    """One token per row by inverse-CDF sampling with the given uniform numbers.

    Args:
        probs: ``[n, V]`` float64 target distributions (rows sum to 1).
        uniforms: ``[n]`` float64 numbers in [0, 1), one per row.

    Returns:
        ``[n]`` int64: per row, the first token whose cumulative probability exceeds its
        uniform (never a zero-probability token).
    """
    cdf = probs.cumsum(dim=-1)  # [n, V]
    thresholds = (uniforms.to(probs.device) * cdf[:, -1]).unsqueeze(-1)  # [n, 1]
    picked = torch.searchsorted(cdf, thresholds, right=True).squeeze(-1)  # [n]
    return picked.clamp_(max=probs.shape[-1] - 1).cpu().numpy()


def sample_accept(tree: DraftTree, probs: torch.Tensor, uniforms: torch.Tensor) -> tuple[np.ndarray, int]:
    """Lossless stochastic acceptance over a tree whose drafts carry no probabilities.

    Each output position has its own uniform number, fixed for the request. At node u
    (depth d) the model's token is sampled from u's target distribution with the uniform
    of position d; the child holding that token is accepted and the walk goes on, else
    the sampled token is the next token and the walk stops. Every emitted token is thus
    drawn from the target distribution given its real prefix, exactly as plain sampling
    draws it.

    This is the multi-draft rule of DESIGN.md written as one coupling: trying the
    children in order, accepting child c with probability p[c] and zeroing it on
    rejection accepts c with probability p[c] overall, and on rejection of all leaves
    the residual distribution; sampling x ~ p first and accepting the child equal to x
    has the same law. Fixing the randomness per position, not per draw, makes the text
    depend only on the seed: every drafter, whatever it has learned, gives the same text
    as plain sampling with the same seed. Duplicate siblings are never accepted twice.

    Args:
        tree: the verified tree.
        probs: ``[n, V]`` float64 target distribution at every node.
        uniforms: ``[d]`` float64 the uniforms of the positions after the root (d > tree depth).

    Returns:
        ``[k]`` int64 accepted node indices, root first (k >= 1), and the next token.
    """
    drawn = sample_tokens(probs, uniforms[torch.from_numpy(tree.depth)])  # [n] the model's token after each node
    path = greedy_accept(tree, drawn)
    return path, int(drawn[path[-1]])
