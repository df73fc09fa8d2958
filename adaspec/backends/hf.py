"""One Hugging Face causal LM behind the backend protocol: prefill, verify, commit.

Tree attention uses only public transformers inputs: a 4-D additive ``attention_mask`` of
shape ``[1, 1, n, L+n]`` (transformers passes 4-D masks through untouched) and
``position_ids = L + depth``. Nothing in transformers is patched.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from adaspec.backends.base import NodeOutputs, Pick, safe_name, shared_prefix
from adaspec.backends.pick import pick_outputs
from adaspec.backends.kv import compact
from adaspec.backends.tree_cache import TreeKVCache, supports_tree_cache
from adaspec.tree import DraftTree


class HFBackend:
    """Runs one transformers model for one request at a time and owns its KV cache.

    Args:
        model: a loaded ``AutoModelForCausalLM`` (any device, any float dtype).
        prefill_chunk: prompt tokens per prefill forward; bounds peak memory on long prompts.
        model_name: the model's name or path, for ``profile_key``.
        lean: keep keys and values in a preallocated ``TreeKVCache`` and the attention mask in a
            persistent buffer whose tree block alone changes each step; None: whenever every layer
            is full attention (else transformers' ``DynamicCache``, rebuilt masks).
        head: the output head as ``output_head_weight`` found it, when the caller already knows
            (a runtime making many backends); None probes the model.
        max_kept_tokens: after a request, its cache is kept for a later prompt that shares its
            prefix (a chat's next turn) when it holds at most this many positions; a longer one
            is freed.
    """

    name = "hf"
    chain_only = False  # a 4-D mask gives every node exactly its ancestors, so trees verify exactly

    def __init__(self, model: PreTrainedModel, prefill_chunk: int = 4096, model_name: str = "",
                 lean: bool | None = None, head: OutputHead | None = None, max_kept_tokens: int = 4096) -> None:
        self.model = model
        self.max_kept_tokens = max_kept_tokens
        self._held = np.zeros(0, dtype=np.int64)  # [cache_len] the tokens whose keys and values the cache holds
        self.reused_prefix = 0  # positions the last prefill kept from the request before
        self._tree_tokens = np.zeros(0, dtype=np.int64)  # [n] the tokens of the tree in flight
        self.device = model.device
        self.dtype = model.dtype
        self.prefill_chunk = prefill_chunk
        self.lean = supports_tree_cache(model.config) if lean is None else lean
        self.cache: DynamicCache | TreeKVCache | None = None
        self._start = 0  # the cache length before the last tree forward
        self._in_flight = False  # a tree's entries are in the cache, awaiting commit or rollback
        self._tree_size = 0  # nodes of the last tree forward
        self._mask_fill = torch.finfo(self.dtype).min  # additive "cannot attend" value
        # lean: [1, 1, rows, capacity] additive mask; columns < cache_len are 0 in every row, the rest
        # the fill value, except the tree block [start, start + n) of the forward in flight
        self._mask = torch.zeros((1, 1, 0, 0), dtype=self.dtype, device=self.device)
        head = head if head is not None else OutputHead(output_head_weight(model))
        self.head_weight = head.weight  # [V, H] or None: use the model's own forward
        self.cache_keyword = cache_keyword(model)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        dtype = str(self.dtype).removeprefix("torch.")
        self.profile_key = f"hf-{safe_name(model_name or model.config.name_or_path or 'model')}-{self.device.type}-{dtype}-t{torch.get_num_threads()}"

    @property
    def cache_len(self) -> int:
        """Committed positions in the KV cache."""
        return 0 if self.cache is None else self.cache.get_seq_length()

    @torch.inference_mode()
    def reset(self) -> None:
        """Forgets the previous request's cache (a lean cache keeps its allocation)."""
        self._held = self._held[:0]
        self._in_flight = False
        if not self.lean:
            self.cache = DynamicCache(config=self.model.config)
            return
        if self.cache is None:
            self.cache = TreeKVCache(self.model.config)
        self._mask[..., : self.cache.length + self._tree_size] = self._mask_fill
        self.cache.clear()
        self._tree_size = 0

    def cached_prefix(self, prompt_ids: np.ndarray) -> int:
        """See ``Backend.cached_prefix``: the prefix the held tokens share with ``prompt_ids``."""
        return 0 if self.cache is None else shared_prefix(self._held, prompt_ids)

    @torch.inference_mode()
    def _truncate(self, length: int) -> None:
        """Keeps the first ``length`` held positions and drops the rest."""
        self._in_flight = False
        if self.lean:
            self._mask[..., length : self.cache.length + self._tree_size] = self._mask_fill
            self.cache.crop_to(length)
            self._tree_size = 0
        elif self.cache_len > length:
            self.cache.crop(length - self.cache_len)  # a negative count: sliding-window layers take only that
        self._held = self._held[:length]

    def _reserve_mask(self, rows: int, columns: int) -> None:
        """Grows the persistent mask to at least ``[rows, columns]`` (doubling), keeping its invariant."""
        _, _, have_rows, have_columns = self._mask.shape
        if rows <= have_rows and columns <= have_columns:
            return
        shape = (1, 1, max(rows, 2 * have_rows, 64), max(columns, 2 * have_columns, 1024))
        self._mask = torch.full(shape, self._mask_fill, dtype=self.dtype, device=self.device)
        self._mask[..., : self.cache_len] = 0.0

    def prefill(self, prompt_ids: np.ndarray, pick: Pick) -> NodeOutputs:
        """Starts a request (see ``Backend.prefill``)."""
        return pick_outputs(self.prefill_logits(prompt_ids)[None], pick)

    def verify(self, tree: DraftTree, pick: Pick) -> NodeOutputs:
        """One forward over the tree (see ``Backend.verify``)."""
        return pick_outputs(self.tree_logits(tree), pick)

    def commit(self, accepted: np.ndarray) -> None:
        """Keeps only the accepted path's cache entries after a tree forward (see ``Backend.commit``)."""
        self._keep(accepted)

    def rollback(self) -> None:
        """Drops the tree in flight, if one is (see ``Backend.rollback``); safe after a forward
        that failed part-way, whose later layers never grew."""
        if self._in_flight:
            self._keep(np.zeros(0, dtype=np.int64))

    @torch.inference_mode()
    def _keep(self, accepted: np.ndarray) -> None:
        """Keeps the cache entries of the tree nodes ``accepted`` (``[k]``, k >= 0) and drops the rest."""
        keep = torch.as_tensor(accepted, dtype=torch.long, device=self.device)  # [k]
        start, k = self._start, int(keep.numel())
        self._held = np.concatenate([self._held[:start], self._tree_tokens[accepted]])  # [start + k]
        self._in_flight = False
        if not self.lean:
            compact(self.cache, start, keep)
            return
        # increasing indices from 0: the first k nodes exactly when the last is k - 1 (a plain step's root)
        self.cache.keep(start, keep, in_place=k == 0 or int(accepted[-1]) == k - 1)
        self._mask[..., start : start + k] = 0.0  # now committed: every later row sees them
        self._mask[..., start + k : start + self._tree_size] = self._mask_fill
        self._tree_size = 0

    def forget(self) -> None:
        """See ``Backend.forget``: the held tokens are dropped; the next prefill resets the cache."""
        self._held = self._held[:0]

    def release(self) -> None:
        """Ends the request. Its cache stays for a later prompt sharing its prefix (``cached_prefix``)
        unless it holds more than ``max_kept_tokens`` positions: then it is freed, so a pooled
        backend never keeps a long request's peak."""
        if self.cache is not None and self.cache_len > self.max_kept_tokens:
            self.close()

    def close(self) -> None:
        """Frees the cache and the mask buffer."""
        self._held = self._held[:0]
        self._in_flight = False
        self.cache = None
        self._tree_size = 0
        self._mask = torch.zeros((1, 1, 0, 0), dtype=self.dtype, device=self.device)

    def synchronize(self) -> None:
        """Waits for queued CUDA work (timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def prefill_logits(self, token_ids: np.ndarray) -> torch.Tensor:
        """Runs the prompt into the cache, reusing the positions it holds of the prompt's prefix.

        Args:
            token_ids: ``[p]`` int64 prompt ids (p >= 1).

        Returns:
            ``[V]`` float32 logits after the last prompt token.
        """
        token_ids = np.asarray(token_ids, dtype=np.int64)
        kept = self.reused_prefix = self.cached_prefix(token_ids)
        if kept:
            self._truncate(kept)
        else:
            self.reset()
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.device)[None]  # [1, p]
        logits = None
        for begin in range(kept, ids.shape[1], self.prefill_chunk):
            chunk = ids[:, begin : begin + self.prefill_chunk]  # [1, c]
            logits = self._logits(last_only=True, input_ids=chunk, use_cache=True, **{self.cache_keyword: self.cache})
        if self.lean:
            self._reserve_mask(1, ids.shape[1])
            self._mask[..., : ids.shape[1]] = 0.0
        self._held = token_ids.copy()
        return logits[-1]  # [V]

    @torch.inference_mode()
    def tree_logits(self, tree: DraftTree) -> torch.Tensor:
        """Runs every tree node in one forward, each attending to the cache and its ancestors.

        The cache grows by ``tree.size`` positions; ``commit`` must follow (it keeps what was
        cached before this call).

        Args:
            tree: the draft tree; its root is the pending token.

        Returns:
            ``[n, V]`` float32 logits, row i predicting the token after node i's path.
        """
        tokens, positions, mask = self.prepare_tree(tree)
        return self._logits(
            last_only=False,
            input_ids=torch.from_numpy(tokens).to(self.device)[None],  # [1, n]
            attention_mask=mask,
            position_ids=torch.from_numpy(positions).to(self.device)[None],  # [1, n]
            use_cache=True,
            **{self.cache_keyword: self.cache},
        )  # [n, V]

    def extend_layer(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends this request's rows of a batched forward to one layer of its lean cache.

        Args:
            layer: the layer's index.
            keys: ``[1, Hkv, n, D]`` the request's new keys.
            values: ``[1, Hkv, n, D]`` its new values.

        Returns:
            The layer's keys and values so far, ``[1, Hkv, L + n, D]`` each.
        """
        return self.cache.layers[layer].update(keys, values)

    def prepare_tree(self, tree: DraftTree) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Readies the cache and mask for a tree forward (``tree_logits``, or a batch of requests).

        Args:
            tree: the draft tree; its root is the pending token.

        Returns:
            ``[n]`` int64 tokens, ``[n]`` int64 positions (cache length + depth), and the
            ``[1, 1, n, L + n]`` additive mask: every cached position and the node's ancestors.
        """
        start = self._start = self.cache_len
        n = self._tree_size = tree.size
        self._in_flight = True
        self._tree_tokens = tree.tokens
        ancestors = torch.from_numpy(tree.ancestor_mask).to(self.device)  # [n, n] bool
        block = torch.where(ancestors, 0.0, self._mask_fill).to(self.dtype)  # [n, n]
        if self.lean:
            self.cache.reserve(start + n)
            self._reserve_mask(n, start + n)
            self._mask[0, 0, :n, start : start + n] = block
            mask = self._mask[:, :, :n, : start + n]  # [1, 1, n, L+n] a view of the persistent buffer
        else:
            mask = torch.zeros((1, 1, n, start + n), dtype=self.dtype, device=self.device)  # [1, 1, n, L+n]
            mask[0, 0, :, start:] = block
        return tree.tokens, tree.depth + start, mask

    def _logits(self, last_only: bool, **inputs) -> torch.Tensor:
        """Float32 logits ``[n, V]`` (``[1, V]`` with ``last_only``) for one batch-1 forward."""
        if self.head_weight is None:
            out = self.model(**inputs, logits_to_keep=1 if last_only else 0)
            return out.logits[0].float()
        hidden = self.model.base_model(**inputs).last_hidden_state[0]  # [n, H]
        if last_only:
            hidden = hidden[-1:]  # [1, H]
        # W @ h^T rather than h @ W^T: same products, but for a few rows MKL then packs the
        # small activation instead of the [V, H] weight, 2-3x faster on CPU (measured on the embedded model)
        return torch.mm(self.head_weight, hidden.t()).t().contiguous().float()  # [n, V]


@dataclass(frozen=True)
class OutputHead:
    """The output layer as the backends compute it.

    Attributes:
        weight: ``[V, H]`` when logits are exactly ``hidden @ weight^T`` (computed as
            ``weight @ hidden^T``, the faster layout for a few rows), None to run the model's own head.
    """

    weight: torch.Tensor | None


def cache_keyword(model: PreTrainedModel) -> str:
    """The keyword a model's forward takes its KV cache under: ``cache`` (transformers 5.24 on) or
    ``past_key_values`` (earlier 5.x, where ``cache`` does not exist)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# config fields that make a model's logits more than ``lm_head(hidden)``
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@torch.inference_mode()
def output_head_weight(model: PreTrainedModel) -> torch.Tensor | None:
    """The output layer's weight when logits are exactly ``hidden @ W^T``, else None.

    Checked twice: structurally (a bias-free ``nn.Linear`` head, no logit transform in the
    config) and numerically (a short input through both paths must agree).

    Args:
        model: the loaded causal language model.

    Returns:
        ``[V, H]`` weight, or None to use the model's own forward.
    """
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    if any(getattr(model.config, name, None) not in (None, 1, 1.0) for name in LOGIT_TRANSFORMS):
        return None
    probe = torch.arange(1, 5, device=model.device)[None] % head.weight.shape[0]  # [1, 4]
    full = model(input_ids=probe).logits[0].float()  # [4, V]
    hidden = model.base_model(input_ids=probe).last_hidden_state[0]  # [4, H]
    mine = torch.mm(head.weight, hidden.t()).t().float()  # [4, V]
    scale = full.abs().max().clamp(min=1.0)
    if not torch.allclose(mine, full, atol=1e-3 * float(scale), rtol=0):
        return None
    return head.weight
