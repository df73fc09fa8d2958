"""How likely the model is to go on as an earlier occurrence of its text did: the score of a
copied draft token (``suffix``, ``lookup``).

The chance that the token after a match of ``L`` tokens is the one that followed the earlier
occurrence grows with ``L``. Measured on the embedded model's greedy outputs (llama.cpp
categories, repeats and agent runs: every output position, its longest match in its own context
so far): after a 1-token match the model continued alike 20-28% of the time, after 2 tokens
45-50%, after 3 tokens 67-81%, after 8 or more 90-98%. ``1 - 1 / (L + 0.3)`` follows that: 23%,
57%, 70%, 90% at 8. Each accepted token lengthens the match by one, so the k-th copied token
is accepted with the product of the chances at ``L``, ``L + 1`` ... ``L + k - 1``.

``@auto``'s calibration corrects these per draft source and depth as requests go on; this is
the belief it starts from, which decides what a cold first request verifies.
"""

from __future__ import annotations

import numpy as np

MATCH_OFFSET = 0.3  # fitted to the acceptance measured after 1-3 token matches (module doc)


def copy_scores(match_length: int, depth: int) -> np.ndarray:
    """The chance each token of a copied continuation is accepted, its ancestors included.

    Args:
        match_length: tokens of the current text that matched the earlier occurrence (>= 1).
        depth: tokens in the continuation.

    Returns:
        ``[depth]`` float64, decreasing, each in (0, 1).
    """
    lengths = match_length + np.arange(depth, dtype=np.float64)  # [depth] the match once the tokens before are accepted
    return np.cumprod(1.0 - 1.0 / (lengths + MATCH_OFFSET))
