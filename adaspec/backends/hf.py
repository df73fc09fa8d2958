"""One Hugging Face causal LM behind three calls: prefill, tree forward, commit.

Tree attention uses only public transformers inputs: a 4-D additive ``attention_mask`` of
shape ``[1, 1, n, L+n]`` (transformers passes 4-D masks through untouched) and
``position_ids = L + depth``. Nothing in transformers is patched.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from adaspec.backends.kv import compact
from adaspec.tree import DraftTree


class HFBackend:
    """Runs one model for one request at a time and owns its KV cache.

    Args:
        model: a loaded ``AutoModelForCausalLM`` (any device, any float dtype).
        prefill_chunk: prompt tokens per prefill forward; bounds peak memory on long prompts.
    """

    def __init__(self, model: PreTrainedModel, prefill_chunk: int = 4096) -> None:
        self.model = model
        self.device = model.device
        self.dtype = model.dtype
        self.prefill_chunk = prefill_chunk
        self.cache: DynamicCache | None = None
        self._mask_fill = torch.finfo(self.dtype).min  # additive "cannot attend" value

    @property
    def cache_len(self) -> int:
        """Committed positions in the KV cache."""
        return 0 if self.cache is None else self.cache.get_seq_length()

    def reset(self) -> None:
        """Forgets the previous request's cache."""
        self.cache = DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def prefill(self, token_ids: np.ndarray) -> torch.Tensor:
        """Runs the prompt into a fresh cache.

        Args:
            token_ids: ``[p]`` int64 prompt ids (p >= 1).

        Returns:
            ``[V]`` float32 logits after the last prompt token.
        """
        self.reset()
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.device)[None]  # [1, p]
        logits = None
        for begin in range(0, ids.shape[1], self.prefill_chunk):
            chunk = ids[:, begin : begin + self.prefill_chunk]  # [1, c]
            out = self.model(input_ids=chunk, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[0, -1]  # [V]
        return logits.float()

    @torch.inference_mode()
    def forward_tree(self, tree: DraftTree) -> torch.Tensor:
        """Runs every tree node in one forward, each attending to the cache and its ancestors.

        The cache grows by ``tree.size`` positions; ``commit`` must follow.

        Args:
            tree: the draft tree; its root is the pending token.

        Returns:
            ``[n, V]`` float32 logits, row i predicting the token after node i's path.
        """
        start = self.cache_len
        n = tree.size
        ancestors = torch.from_numpy(tree.ancestor_mask).to(self.device)  # [n, n] bool
        mask = torch.zeros((1, 1, n, start + n), dtype=self.dtype, device=self.device)  # [1, 1, n, L+n]
        mask[0, 0, :, start:] = torch.where(ancestors, 0.0, self._mask_fill)
        positions = torch.from_numpy(tree.depth + start).to(self.device)[None]  # [1, n]
        tokens = torch.from_numpy(tree.tokens).to(self.device)[None]  # [1, n]
        out = self.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        return out.logits[0].float()  # [n, V]

    @torch.inference_mode()
    def commit(self, start: int, accepted: np.ndarray) -> None:
        """Keeps only the accepted path's cache entries after a tree forward.

        Args:
            start: the cache length before the tree forward.
            accepted: ``[k]`` int64 accepted node indices, root first, increasing.
        """
        keep = torch.as_tensor(accepted, dtype=torch.long, device=self.device)  # [k]
        compact(self.cache, start, keep)
