"""Several requests' trees verified in one transformers forward, each getting bit for bit the
logits it gets when verified alone through the same path.

Batching can change a request's logits in two places, and each is closed by construction:

* **Matmuls.** A BLAS picks its kernel by row count, and rows then round differently. Every
  ``linear`` of a batched forward is issued through the machine's ``RowPlan`` (row counts in a
  range where a row's bits depend on the row alone, found and cached per machine), so a
  request's rows come out the same whatever shares the call.
* **Attention.** The requests' trees are laid end to end in one ``[1, M]`` sequence and
  attention runs per request, on that request's own KV cache and mask, with the same call
  (same shapes) as a batch of one.

Both are applied by ``BatchMode``, a ``torch.overrides.TorchFunctionMode`` active only for the
duration of one batched forward and only on the thread that runs it: the model, its config and
transformers' registries are never changed, and every other use of the model is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from transformers import Cache, PreTrainedModel

from adaspec.backends.base import NodeOutputs, Pick
from adaspec.backends.hf import HFBackend
from adaspec.backends.pick import pick_outputs
from adaspec.backends.row_plan import RowPlan
from adaspec.tree import DraftTree

MAX_FORWARD_REQUESTS = 64  # the most requests one batched forward holds
MAX_FORWARD_ROWS = 128  # the most tree nodes one batched forward holds (bounds a step's latency)


class SegmentedCache(Cache):
    """Stands in for the KV cache during a batched forward: writes each request's rows into that
    request's own ``TreeKVCache`` and keeps, per layer, the views its attention will read.

    Args:
        backends: the requests' backends, in batch order.
        spans: per request, its rows ``[begin, end)`` of the batch.
    """

    def __init__(self, backends: list[HFBackend], spans: list[tuple[int, int]]) -> None:
        super().__init__(layers=[])
        self.backends = backends
        self.spans = spans
        self.layer = -1  # the layer whose attention runs next
        self.states: list[tuple[torch.Tensor, torch.Tensor]] = []  # that layer's keys / values per request

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes every request's new keys and values into its own cache.

        Args:
            key_states: ``[1, Hkv, M, D]`` new keys of every row.
            value_states: ``[1, Hkv, M, D]``.
            layer_idx: the layer.

        Returns:
            The inputs unchanged (attention reads each request's views from ``states``).
        """
        self.layer = layer_idx
        self.states = [
            backend.extend_layer(layer_idx, key_states[:, :, begin:end], value_states[:, :, begin:end])
            for backend, (begin, end) in zip(self.backends, self.spans)
        ]  # per request: [1, Hkv, L_r + n_r, D] keys and values
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """0: positions are always given explicitly."""
        return 0


class BatchMode(TorchFunctionMode):
    """Within one batched forward: ``linear`` through the row plan, attention per request.

    Args:
        plan: the machine's row plan.
        layout: the forward's segmented cache (spans, per-request keys and values).
        masks: per request, its ``[1, 1, n, L + n]`` additive mask.
    """

    def __init__(self, plan: RowPlan, layout: SegmentedCache, masks: list[torch.Tensor]) -> None:
        super().__init__()
        self.plan = plan
        self.layout = layout
        self.masks = masks

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            return self.plan.linear(*args, **kwargs)
        if func is torch.nn.functional.scaled_dot_product_attention:
            return self.attention(*args, **kwargs)
        return func(*args, **kwargs)

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                  enable_gqa: bool = False) -> torch.Tensor:
        """SDPA for every request on its own cache and mask (the batch's key, value and mask are unused).

        Args:
            query: ``[1, H, M, D]`` queries of every row.
            key, value, attn_mask, is_causal: ignored (each request's own are used).
            dropout_p: passed on (0 in eval mode).
            scale: passed on.
            enable_gqa: passed on; without it, grouped keys are repeated per head as transformers does.

        Returns:
            ``[1, H, M, D]``, zero on rows no request owns.
        """
        layout = self.layout
        if query.shape[2] < layout.spans[-1][1]:
            raise RuntimeError("batched attention got fewer query rows than the batch holds")
        output = query.new_zeros(query.shape)  # [1, H, M, D]
        for (begin, end), mask, (keys, values) in zip(layout.spans, self.masks, layout.states):
            repeat = query.shape[1] // keys.shape[1]
            if repeat > 1 and not enable_gqa:
                keys = keys.repeat_interleave(repeat, dim=1)  # [1, H, L + n, D]
                values = values.repeat_interleave(repeat, dim=1)
            output[:, :, begin:end] = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, begin:end], keys, values, attn_mask=mask, dropout_p=dropout_p, scale=scale,
                enable_gqa=enable_gqa)
        return output


@dataclass
class HFBatchVerifier:
    """Verifies the trees of several lean ``HFBackend`` requests of one model in one forward.

    Args:
        model: the model every backend runs.
        plan: the machine's row plan for this model's weights.
        max_rows: the most tree nodes one forward may hold.
        max_requests: the most requests one forward may hold.
    """

    model: PreTrainedModel
    plan: RowPlan
    max_rows: int = MAX_FORWARD_ROWS
    max_requests: int = MAX_FORWARD_REQUESTS

    @property
    def description(self) -> str:
        """How batching is exact here."""
        return f"matmuls through a row plan ({self.plan.describe()}), attention per request"

    @torch.inference_mode()
    def tree_logits(self, backends: list[HFBackend], trees: list[DraftTree]) -> list[torch.Tensor]:
        """One forward over every request's tree.

        Each backend's cache grows by its tree's size; each must ``commit`` afterwards.

        Args:
            backends: lean backends, each holding a prefilled request.
            trees: one tree per backend.

        Returns:
            Per request, ``[n, V]`` float32 logits (row i: the token after node i's path).
        """
        spans, masks, tokens, positions = [], [], [], []
        row = 0
        for backend, tree in zip(backends, trees):
            node_tokens, node_positions, mask = backend.prepare_tree(tree)
            spans.append((row, row + tree.size))
            masks.append(mask)
            tokens.append(node_tokens)
            positions.append(node_positions)
            row += tree.size
        # one spare row when the batch is a single node: transformers treats a one-row query as
        # decoding and regroups its heads, which the per-request attention does not expect
        padding = [np.zeros(max(0, 2 - row), dtype=np.int64)]
        device = self.model.device
        ids = torch.from_numpy(np.concatenate(tokens + padding)).to(device)[None]  # [1, M]
        where = torch.from_numpy(np.concatenate(positions + padding)).to(device)[None]  # [1, M]
        layout = SegmentedCache(backends, spans)
        placeholder_mask = torch.zeros((1, 1, ids.shape[1], 1), dtype=self.model.dtype, device=device)  # [1, 1, M, 1]
        with BatchMode(self.plan, layout, masks):
            logits = self.model(input_ids=ids, position_ids=where, attention_mask=placeholder_mask, use_cache=True,
                                **{backends[0].cache_keyword: layout}).logits[0].float()  # [M, V]
        return [logits[begin:end] for begin, end in spans]

    def verify(self, backends: list[HFBackend], trees: list[DraftTree], picks: list[Pick]) -> list[NodeOutputs]:
        """``Backend.verify`` for several requests at once.

        Args:
            backends: lean backends, each holding a prefilled request.
            trees: one tree per backend.
            picks: one pick per backend.

        Returns:
            Per request, its nodes' outputs.
        """
        return [pick_outputs(logits, pick) for logits, pick in zip(self.tree_logits(backends, trees), picks)]
