"""Building a draft tree from the tri-gram model: best-first expansion and Monte Carlo tree search.

Both builders read successors straight out of a ``TrigramTable``'s arrays. A node's
successors are those of the context (its parent's token, its token); the root's context is
the last two tokens of the text. A node's *path probability* is the product of the
tri-gram weights from the root down to it: the chance, under the model as the table knows
it, that the verifier accepts the whole path. The expected number of accepted tokens of a
tree is the sum of its nodes' path probabilities.

* ``best_first_tree`` expands the frontier node with the highest path probability until
  the budget is spent, which maximises that sum when the weights are right (DySpec).
* ``mcts_tree`` runs PUCT simulations (prior = tri-gram weight; value = the expected number
  of accepted tokens of the simulated chain, measured by a greedy rollout past the leaf)
  and keeps the most visited nodes (ADED's draft maker).

Both are deterministic: ties go to the earlier node.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from adaspec.drafters.trigram import successor_row


@numba.njit(cache=True)
def best_first_tree(
    keys: np.ndarray, ids: np.ndarray, weights: np.ndarray, vocab_size: int,
    before: int, root: int, budget: int, max_depth: int, width: int,
    out_tokens: np.ndarray, out_parents: np.ndarray, out_probs: np.ndarray,
) -> int:
    """The tree of the ``budget`` most probable paths under the tri-gram model.

    Args:
        keys, ids, weights: a ``TrigramTable``'s arrays (``[T]``, ``[T, S]``, ``[T, S]``).
        vocab_size: the table's vocabulary size.
        before: the token before the root (negative if none).
        root: the root token.
        budget: the most nodes, root included (>= 1).
        max_depth: the deepest node.
        width: the most children per node.
        out_tokens: ``[>= budget]`` int64, filled with node tokens.
        out_parents: ``[>= budget]`` int64, filled with parent indices (-1 for the root).
        out_probs: ``[>= budget]`` float64, filled with path probabilities.

    Returns:
        The number of nodes written.
    """
    width = min(width, ids.shape[1])
    cap = budget * width + 1
    f_token = np.empty(cap, dtype=np.int64)  # [cap] frontier: candidate token
    f_parent = np.empty(cap, dtype=np.int64)  # [cap] its parent's output index
    f_prob = np.empty(cap, dtype=np.float64)  # [cap] its path probability; -1 once taken
    depth = np.zeros(budget, dtype=np.int64)  # [budget] output node depths
    out_tokens[0] = root
    out_parents[0] = -1
    out_probs[0] = 1.0
    n = 1
    n_frontier = 0
    node = 0
    while True:
        if depth[node] < max_depth:  # push the new node's successors
            before_token = before if node == 0 else out_tokens[out_parents[node]]
            slot = successor_row(keys, vocab_size, before_token, out_tokens[node])
            if slot >= 0:
                for s in range(width):
                    if ids[slot, s] < 0:
                        break
                    f_token[n_frontier] = ids[slot, s]
                    f_parent[n_frontier] = node
                    f_prob[n_frontier] = out_probs[node] * weights[slot, s]
                    n_frontier += 1
        if n >= budget:
            break
        best = -1
        best_prob = 0.0
        for f in range(n_frontier):
            if f_prob[f] > best_prob:
                best = f
                best_prob = f_prob[f]
        if best < 0:
            break
        out_tokens[n] = f_token[best]
        out_parents[n] = f_parent[best]
        out_probs[n] = best_prob
        depth[n] = depth[f_parent[best]] + 1
        f_prob[best] = -1.0
        node = n
        n += 1
    return n


@numba.njit(cache=True)
def mcts_tree(
    keys: np.ndarray, ids: np.ndarray, weights: np.ndarray, vocab_size: int,
    before: int, root: int, budget: int, max_depth: int, width: int,
    simulations: int, c_base: float, c_growth: float, rollout_depth: int,
    out_tokens: np.ndarray, out_parents: np.ndarray, out_probs: np.ndarray,
) -> int:
    """A draft tree from PUCT Monte Carlo tree search over the tri-gram model.

    Each simulation descends from the root by the PUCT rule
    ``Q(child) + c(N) * prior(child) * sqrt(N) / (1 + N(child))`` with
    ``c(N) = c_base + log((N + c_growth + 1) / c_growth)`` (MuZero's schedule; ``Q`` scaled
    to [0, 1] by the largest value seen), expands the leaf with its ``width`` strongest
    successors, and values the chain root -> leaf -> ``rollout_depth`` greedy successors by
    its expected number of accepted tokens (the sum of its path probabilities). The value
    is backed up along the path. The output keeps the most visited nodes (then the most
    probable), always a parent before its children.

    Args:
        keys, ids, weights, vocab_size, before, root, budget, max_depth, width: as for ``best_first_tree``.
        simulations: the number of simulations.
        c_base: the exploration constant at small visit counts.
        c_growth: the visit count over which exploration grows logarithmically.
        rollout_depth: greedy steps past the leaf when valuing a simulation.
        out_tokens, out_parents, out_probs: filled as by ``best_first_tree``.

    Returns:
        The number of nodes written.
    """
    width = min(width, ids.shape[1])
    cap = 1 + simulations * width
    token = np.empty(cap, dtype=np.int64)  # [cap] search-tree nodes
    parent = np.empty(cap, dtype=np.int64)  # [cap]
    depth = np.zeros(cap, dtype=np.int64)  # [cap]
    prior = np.zeros(cap, dtype=np.float64)  # [cap] tri-gram weight of the node given its parent
    path_prob = np.zeros(cap, dtype=np.float64)  # [cap]
    visits = np.zeros(cap, dtype=np.int64)  # [cap]
    value = np.zeros(cap, dtype=np.float64)  # [cap] summed simulation values
    first_child = np.full(cap, -1, dtype=np.int64)  # [cap] children are contiguous
    n_children = np.zeros(cap, dtype=np.int64)  # [cap]
    expanded = np.zeros(cap, dtype=np.bool_)  # [cap]
    path = np.empty(max_depth + 1, dtype=np.int64)  # [max_depth + 1] the current simulation's nodes
    token[0] = root
    parent[0] = -1
    path_prob[0] = 1.0
    size = 1
    top_value = 1e-9
    for _ in range(simulations):
        node = 0
        length = 1
        path[0] = 0
        while expanded[node] and n_children[node] > 0:  # selection
            scale = c_base + math.log((visits[node] + c_growth + 1.0) / c_growth)
            explore = scale * math.sqrt(visits[node])
            best = first_child[node]
            best_score = -1.0
            for child in range(first_child[node], first_child[node] + n_children[node]):
                q = value[child] / visits[child] / top_value if visits[child] > 0 else 0.0
                score = q + explore * prior[child] / (1.0 + visits[child])
                if score > best_score:
                    best = child
                    best_score = score
            node = best
            path[length] = node
            length += 1
        if not expanded[node]:  # expansion
            expanded[node] = True
            if depth[node] < max_depth:
                before_token = before if node == 0 else token[parent[node]]
                slot = successor_row(keys, vocab_size, before_token, token[node])
                if slot >= 0:
                    first_child[node] = size
                    for s in range(width):
                        if ids[slot, s] < 0:
                            break
                        token[size] = ids[slot, s]
                        parent[size] = node
                        depth[size] = depth[node] + 1
                        prior[size] = weights[slot, s]
                        path_prob[size] = path_prob[node] * weights[slot, s]
                        size += 1
                    n_children[node] = size - first_child[node]
        total = 0.0  # evaluation: expected accepted tokens of the chain, root excluded
        for i in range(1, length):
            total += path_prob[path[i]]
        prob = path_prob[node]
        prev = token[parent[node]] if node > 0 else before
        last = token[node]
        for _ in range(rollout_depth):
            slot = successor_row(keys, vocab_size, prev, last)
            if slot < 0 or ids[slot, 0] < 0:
                break
            prob *= weights[slot, 0]
            total += prob
            prev = last
            last = ids[slot, 0]
        top_value = max(top_value, total)
        for i in range(length):  # back-up
            visits[path[i]] += 1
            value[path[i]] += total
    # output: most visited first, then most probable; a node is eligible once its parent is out
    index_of = np.full(size, -1, dtype=np.int64)  # [size] search node -> output index
    index_of[0] = 0
    out_tokens[0] = root
    out_parents[0] = -1
    out_probs[0] = 1.0
    n = 1
    while n < budget:
        best = -1
        for candidate in range(1, size):
            if index_of[candidate] >= 0 or index_of[parent[candidate]] < 0:
                continue
            if best < 0 or visits[candidate] > visits[best] or (
                visits[candidate] == visits[best] and path_prob[candidate] > path_prob[best]
            ):
                best = candidate
        if best < 0:
            break
        index_of[best] = n
        out_tokens[n] = token[best]
        out_parents[n] = index_of[parent[best]]
        out_probs[n] = path_prob[best]
        n += 1
    return n
