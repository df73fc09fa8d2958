"""Acceptance over a verified tree: a pure function of the tree and the model's token at each node.

Greedy and sampled decoding share it. The backend gives, per node, the model's token after that
node's path: the argmax, or the token drawn by inverse CDF with the uniform number of the node's
output position (``sampling.sample_tokens``). Walking from the root to the child that holds the
model's token is then the whole rule. For sampling this is the multi-draft rule (SpecInfer, Miao
et al. 2024) as one coupling: trying the children in order, accepting child c with probability
p[c] and zeroing it on rejection accepts c with probability p[c] overall and, when all are
rejected, draws from the residual; drawing x ~ p first and accepting the child equal to x has
the same law. Every emitted
token is thus drawn from the target distribution given its real prefix, and because the randomness
is fixed per output position, the text depends on the seed only.
"""

from __future__ import annotations

import numpy as np

from adaspec.tree import DraftTree


def accept_path(tree: DraftTree, model_tokens: np.ndarray) -> np.ndarray:
    """The longest root path along which every token is the model's own choice.

    From the root, move to the child whose token equals the model's token at the current node
    (its argmax when greedy, its inverse-CDF draw when sampling); stop when no child matches.

    Args:
        tree: the verified tree.
        model_tokens: ``[n]`` int64, the model's token after each node's path.

    Returns:
        ``[k]`` int64 accepted node indices, root first (k >= 1). The model's next token is
        ``model_tokens[path[-1]]``.
    """
    if tree.size == 1:  # a plain step
        return np.zeros(1, dtype=np.int64)
    child_of = tree.child_of
    path = [0]
    while True:
        child = child_of.get((path[-1], int(model_tokens[path[-1]])))
        if child is None:
            return np.array(path, dtype=np.int64)
        path.append(child)
