"""One Hugging Face causal LM behind the backend protocol: prefill, verify, commit.

Tree attention uses only public transformers inputs: a 4-D additive ``attention_mask`` of
shape ``[1, 1, n, L+n]`` (transformers passes 4-D masks through untouched) and
``position_ids = L + depth``. Nothing in transformers is patched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from adaspec.backends.base import DEFAULT_BUDGET, NodeOutputs, Pick, pick_outputs
from adaspec.backends.kv import compact
from adaspec.tree import DraftTree


def safe_name(text: str) -> str:
    """A model name or path reduced to a file-name-safe word (its last path part).

    Args:
        text: the name or path.

    Returns:
        Letters, digits, ``-``, ``_`` and ``.`` only.
    """
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(text).name or text)


class HFBackend:
    """Runs one transformers model for one request at a time and owns its KV cache.

    Args:
        model: a loaded ``AutoModelForCausalLM`` (any device, any float dtype).
        prefill_chunk: prompt tokens per prefill forward; bounds peak memory on long prompts.
        model_name: the model's name or path, for ``profile_key``.
    """

    name = "hf"
    chain_only = False  # a 4-D mask gives every node exactly its ancestors, so trees verify exactly
    default_budget = DEFAULT_BUDGET  # trees of up to 8 nodes cost about one GEMM step here

    def __init__(self, model: PreTrainedModel, prefill_chunk: int = 4096, model_name: str = "") -> None:
        self.model = model
        self.device = model.device
        self.dtype = model.dtype
        self.prefill_chunk = prefill_chunk
        self.cache: DynamicCache | None = None
        self._start = 0  # the cache length before the last tree forward
        self._mask_fill = torch.finfo(self.dtype).min  # additive "cannot attend" value
        self.head_weight = output_head_weight(model)  # [V, H] or None: use the model's own forward
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        dtype = str(self.dtype).removeprefix("torch.")
        self.profile_key = f"hf-{safe_name(model_name or model.config.name_or_path or 'model')}-{self.device.type}-{dtype}-t{torch.get_num_threads()}"

    @property
    def cache_len(self) -> int:
        """Committed positions in the KV cache."""
        return 0 if self.cache is None else self.cache.get_seq_length()

    def reset(self) -> None:
        """Forgets the previous request's cache."""
        self.cache = DynamicCache(config=self.model.config)

    def prefill(self, prompt_ids: np.ndarray, pick: Pick) -> NodeOutputs:
        """Starts a request (see ``Backend.prefill``)."""
        return pick_outputs(self.prefill_logits(prompt_ids)[None], pick)

    def verify(self, tree: DraftTree, pick: Pick) -> NodeOutputs:
        """One forward over the tree (see ``Backend.verify``)."""
        return pick_outputs(self.tree_logits(tree), pick)

    @torch.inference_mode()
    def commit(self, accepted: np.ndarray) -> None:
        """Keeps only the accepted path's cache entries after a tree forward (see ``Backend.commit``)."""
        keep = torch.as_tensor(accepted, dtype=torch.long, device=self.device)  # [k]
        compact(self.cache, self._start, keep)

    def release(self) -> None:
        """Frees the request's cache."""
        self.cache = None

    def synchronize(self) -> None:
        """Waits for queued CUDA work (timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def prefill_logits(self, token_ids: np.ndarray) -> torch.Tensor:
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
            logits = self._logits(last_only=True, input_ids=chunk, past_key_values=self.cache, use_cache=True)
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
        start = self._start = self.cache_len
        n = tree.size
        ancestors = torch.from_numpy(tree.ancestor_mask).to(self.device)  # [n, n] bool
        mask = torch.zeros((1, 1, n, start + n), dtype=self.dtype, device=self.device)  # [1, 1, n, L+n]
        mask[0, 0, :, start:] = torch.where(ancestors, 0.0, self._mask_fill)
        positions = torch.from_numpy(tree.depth + start).to(self.device)[None]  # [1, n]
        tokens = torch.from_numpy(tree.tokens).to(self.device)[None]  # [1, n]
        return self._logits(
            last_only=False,
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )  # [n, V]

    def _logits(self, last_only: bool, **inputs) -> torch.Tensor:
        """Float32 logits ``[n, V]`` (``[1, V]`` with ``last_only``) for one batch-1 forward."""
        if self.head_weight is None:
            out = self.model(**inputs, logits_to_keep=1 if last_only else 0)
            return out.logits[0].float()
        hidden = self.model.base_model(**inputs).last_hidden_state[0]  # [n, H]
        if last_only:
            hidden = hidden[-1:]  # [1, H]
        # W @ h^T rather than h @ W^T: same products, but for a few rows MKL then packs the
        # small activation instead of the [V, H] weight, 2-3x faster on CPU (README)
        return torch.mm(self.head_weight, hidden.t()).t().contiguous().float()  # [n, V]


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
