"""From a forward's logits to what the engine needs of each node: the model's token (greedy or
sampled with the node's uniform number) and the top-K candidates the drafter learns from,
computed where the logits are, with one copy back."""

from __future__ import annotations

import numpy as np
import torch

from adaspec.backends.base import NodeOutputs, Pick
from adaspec.sampling import sample_tokens, sample_tokens_host, target_probs, target_probs_host


def pick_outputs(logits: torch.Tensor, pick: Pick) -> NodeOutputs:
    """Per-node tokens and feedback from a forward's logits, on the logits' device, one copy back.

    Args:
        logits: ``[n, V]`` float logits (any device).
        pick: greedy or sampling, and the feedback width.

    Returns:
        The node outputs as numpy arrays.
    """
    logits = logits.float()
    n = logits.shape[0]
    if pick.sampling.greedy:
        tokens = logits.argmax(dim=-1)  # [n]
    else:
        uniforms = torch.from_numpy(np.asarray(pick.uniforms, dtype=np.float64)).to(logits.device)  # [n]
        tokens = sample_tokens(target_probs(logits, pick.sampling), uniforms)  # [n]
    k = pick.feedback_width
    if k <= 0:
        return NodeOutputs(tokens.cpu().numpy().astype(np.int64), np.zeros((n, 0), dtype=np.int64),
                           np.zeros((n, 0), dtype=np.float32))
    values, ids = torch.topk(logits, k, dim=-1)  # [n, k] each
    probs = torch.exp(values - torch.logsumexp(logits, dim=-1, keepdim=True))  # [n, k]
    # one device-to-host copy: ids and tokens side by side as [n, k + 1] int64
    packed = torch.cat([tokens[:, None].to(ids.dtype), ids], dim=1).cpu().numpy()
    return NodeOutputs(packed[:, 0].copy(), packed[:, 1:], probs.cpu().numpy().astype(np.float32))


def pick_outputs_host(logits: np.ndarray, pick: Pick) -> NodeOutputs:
    """``pick_outputs`` in numpy, for logits in host memory (llama.cpp's): no torch in the step.

    Args:
        logits: ``[n, V]`` float32 logits.
        pick: greedy or sampling, and the feedback width.

    Returns:
        The node outputs.
    """
    n = logits.shape[0]
    if pick.sampling.greedy:
        tokens = logits.argmax(axis=-1).astype(np.int64)  # [n]
    else:
        tokens = sample_tokens_host(target_probs_host(logits, pick.sampling), np.asarray(pick.uniforms))  # [n]
    k = pick.feedback_width
    if k <= 0:
        return NodeOutputs(tokens, np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32))
    top = np.argpartition(logits, -k, axis=-1)[:, -k:]  # [n, k] unordered
    values = np.take_along_axis(logits, top, axis=-1)  # [n, k]
    order = np.argsort(-values, axis=-1, kind="stable")
    ids = np.take_along_axis(top, order, axis=-1).astype(np.int64)  # [n, k] best first
    values = np.take_along_axis(values, order, axis=-1).astype(np.float64)
    peak = logits.max(axis=-1, keepdims=True).astype(np.float64)  # [n, 1]
    log_total = peak + np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True, dtype=np.float64))  # [n, 1]
    return NodeOutputs(tokens, ids, np.exp(values - log_total).astype(np.float32))
