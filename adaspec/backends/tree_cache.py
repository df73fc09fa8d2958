"""A preallocated KV cache for tree verification, built on transformers' public ``Cache`` classes.

Each layer keeps keys and values in tensors of shape ``[batch, kv_heads, capacity, head_dim]``
and a length. A forward writes its tokens at ``[length, length + n)`` and attends to
``[0, length + n)`` (a view, no copy); keeping a tree's accepted nodes is one gather per layer
into ``[start, start + k)`` and moving the length back. The capacity doubles when a request
outgrows it, and stays for the next request, so a step never reallocates or concatenates.
DynamicCache instead concatenates every layer's whole cache on every step.
"""

from __future__ import annotations

import torch
from transformers import Cache, PretrainedConfig
from transformers.cache_utils import CacheLayerMixin


class TreeKVLayer(CacheLayerMixin):
    """One attention layer's keys and values, preallocated.

    Args:
        capacity: positions allocated at first use.
    """

    is_sliding = False
    is_compileable = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0  # positions in use

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocates ``[batch, kv_heads, capacity, head_dim]`` keys and values like the first states."""
        batch, heads = key_states.shape[:2]
        self.keys = key_states.new_zeros((batch, heads, self.capacity, key_states.shape[-1]))
        self.values = value_states.new_zeros((batch, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def reserve(self, capacity: int) -> None:
        """Makes room for ``capacity`` positions, keeping what is stored.

        Args:
            capacity: positions needed.
        """
        if capacity <= self.capacity:
            return
        if self.is_initialized:
            keys = self.keys.new_zeros(self.keys.shape[:2] + (capacity, self.keys.shape[-1]))
            values = self.values.new_zeros(self.values.shape[:2] + (capacity, self.values.shape[-1]))
            keys[:, :, : self.length] = self.keys[:, :, : self.length]
            values[:, :, : self.length] = self.values[:, :, : self.length]
            self.keys, self.values = keys, values
        self.capacity = capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes ``n`` new positions after the stored ones.

        Args:
            key_states: ``[batch, kv_heads, n, head_dim]``.
            value_states: ``[batch, kv_heads, n, head_dim]``.

        Returns:
            Views of every stored position's keys and values, ``[batch, kv_heads, length, head_dim]``.
        """
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        self.reserve(end)
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def keep(self, start: int, keep: torch.Tensor) -> None:
        """Moves positions ``start + keep`` to ``start .. start + k - 1`` and drops the rest.

        Args:
            start: positions before the tree.
            keep: ``[k]`` int64 tree-node indices, increasing.
        """
        k = int(keep.numel())
        if self.is_initialized and k:
            source = keep + start  # [k]; advanced indexing copies first, so overlaps are safe
            self.keys[:, :, start : start + k] = self.keys[:, :, source]
            self.values[:, :, start : start + k] = self.values[:, :, source]
        self.length = start + k

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Key length and offset of the next forward's mask (stored positions plus the new ones)."""
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        """Stored positions."""
        return self.length

    def get_max_length(self) -> int:
        """-1: the capacity grows on demand."""
        return -1


class TreeKVCache(Cache):
    """A ``Cache`` of ``TreeKVLayer``\\ s, one per decoder layer.

    Args:
        config: the model's config (its decoder layer count).
        capacity: positions allocated per layer at first use.
    """

    INITIAL_CAPACITY = 1024  # positions per layer a new cache allocates

    def __init__(self, config: PretrainedConfig, capacity: int = INITIAL_CAPACITY) -> None:
        text = config.get_text_config(decoder=True)
        super().__init__(layers=[TreeKVLayer(capacity) for _ in range(text.num_hidden_layers)])

    @property
    def length(self) -> int:
        """Committed positions (every layer holds the same number)."""
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        """Positions allocated per layer."""
        return self.layers[0].capacity

    def reserve(self, capacity: int) -> None:
        """Makes room for ``capacity`` positions in every layer (doubling, so growth is amortised).

        Args:
            capacity: positions needed.
        """
        current = self.layers[0].capacity
        if capacity > current:
            for layer in self.layers:
                layer.reserve(max(capacity, 2 * current))

    def keep(self, start: int, keep: torch.Tensor, in_place: bool = False) -> None:
        """Keeps a tree's accepted nodes (see ``TreeKVLayer.keep``) in every layer.

        Args:
            start: positions before the tree.
            keep: ``[k]`` int64 tree-node indices, increasing.
            in_place: the nodes are the tree's first k (a plain step's root, or a path along
                them): only the lengths change, and no layer copies anything.
        """
        k = int(keep.numel())
        for layer in self.layers:
            if in_place:
                layer.length = start + k
            else:
                layer.keep(start, keep)

    def clear(self) -> None:
        """Forgets every position, keeping the allocation for the next request."""
        self.crop_to(0)

    def crop_to(self, length: int) -> None:
        """Keeps the first ``length`` positions of every layer (a prefix a new request shares).

        Args:
            length: positions to keep (at most those stored).
        """
        for layer in self.layers:
            layer.length = min(layer.length, length)


def supports_tree_cache(config: PretrainedConfig) -> bool:
    """True when every decoder layer is plain full attention, which ``TreeKVCache`` implements.

    Sliding-window, chunked or linear-attention layers need transformers' own layer classes
    (``DynamicCache(config=...)`` builds them).

    Args:
        config: the model's config.

    Returns:
        Whether the preallocated cache can stand in for the model's own.
    """
    text = config.get_text_config(decoder=True)
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None and any(kind != "full_attention" for kind in layer_types):
        return False
    return getattr(text, "sliding_window", None) is None or getattr(text, "use_sliding_window", True) is False
