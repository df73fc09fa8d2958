"""KV-cache compaction after tree verification, over transformers' public cache objects."""

from __future__ import annotations

import torch
from transformers import Cache


def compact(cache: Cache, start: int, keep: torch.Tensor) -> None:
    """Keeps the accepted tree nodes' entries and drops the rest, in place.

    After a tree forward the cache holds ``start + n`` positions: ``start`` committed ones,
    then one per tree node. The entries of nodes ``keep`` move to ``start .. start+k-1`` and
    everything after is cut, leaving ``start + k`` positions.

    Args:
        cache: a transformers cache whose layers expose ``keys`` / ``values`` tensors of shape
            ``[batch, kv_heads, seq, head_dim]`` (``DynamicCache`` on transformers 5).
        start: number of committed positions before the tree.
        keep: ``[k]`` int64 node indices in increasing order (the accepted path).

    Raises:
        ValueError: if ``keep`` points outside the cached tree.
    """
    total = cache.get_seq_length()
    k = int(keep.numel())
    if k and (int(keep[-1]) >= total - start or int(keep[0]) < 0):
        raise ValueError(f"keep indices {keep.tolist()} outside a tree of {total - start} cached nodes")
    already_in_place = bool(torch.equal(keep, torch.arange(k, device=keep.device)))
    if not already_in_place:
        source = keep + start  # [k] absolute positions of the accepted nodes
        for layer in cache.layers:
            # advanced indexing copies first, so overlapping source and target are safe
            layer.keys[:, :, start : start + k] = layer.keys[:, :, source]
            layer.values[:, :, start : start + k] = layer.values[:, :, source]
    surplus = total - (start + k)
    if surplus > 0:
        cache.crop(-surplus)
