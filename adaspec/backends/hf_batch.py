"""Several requests' trees verified in one transformers forward, each getting bit for bit the
logits it gets when verified alone.

Batching breaks equivalence in two places, and each is handled:

* **Attention.** Padding requests to one length changes how SDPA groups its sums. Here the
  requests' trees are laid end to end in one sequence (``[1, M]`` rows, no padding between
  them) and attention runs per request, on that request's own KV cache and mask, through
  transformers' own SDPA function: the same call, on the same shapes, as alone. It is plugged
  in through transformers' public ``AttentionInterface``; without a batch in flight it *is*
  transformers' SDPA.
* **Matmuls.** A BLAS may pick another kernel for another row count, and rows then round
  differently (MKL here: 1-11 rows differ from 12 or more, measured). Every forward of the
  runner, alone or batched, is padded to one of a few row counts (``ROW_BUCKETS``), and
  ``BatchRunner.check_exact`` verifies on the loaded model at start-up that each of the model's
  matmuls gives a row the same bits at every bucket and offset, and that a real batch gives
  each request its solo logits; where it does not, the server verifies one request at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface, Cache, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from adaspec.backends.base import NodeOutputs, Pick, pick_outputs
from adaspec.backends.hf import HFBackend
from adaspec.tree import DraftTree

ATTENTION_NAME = "adaspec_segments"  # the attention implementation a batching model runs with
SEGMENTS_KEY = "adaspec_segments"  # the forward keyword that carries the batch's layout
ROW_BUCKETS = (12, 16, 24, 32, 48, 64)  # every forward is padded to one of these row counts


def segmented_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA, run per request when a batch layout is given.

    Args:
        module: the attention layer (its ``layer_idx`` picks the cached keys).
        query: ``[1, H, M, D]`` queries of every row of the batch.
        key, value: ``[1, Hkv, M, D]`` (ignored with a layout: each request's cache holds them).
        attention_mask: used as is without a layout.
        kwargs: SDPA's options and, with a batch in flight, ``adaspec_segments``.

    Returns:
        ``[1, M, H, D]`` attention output (padding rows zero) and None.
    """
    layout: SegmentedCache | None = kwargs.pop(SEGMENTS_KEY, None)
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = query.shape[2]
    output = query.new_zeros((1, rows, query.shape[1], query.shape[3]))  # [1, M, H, D]
    for (begin, end), mask, (keys, values) in zip(layout.spans, layout.masks, layout.states[module.layer_idx]):
        piece, _ = sdpa_attention_forward(module, query[:, :, begin:end], keys, values, mask, **kwargs)
        output[:, begin:end] = piece  # piece: [1, n, H, D]
    return output, None


AttentionInterface.register(ATTENTION_NAME, segmented_attention)


class SegmentedCache(Cache):
    """Stands in for the KV cache during a batched forward: writes each request's rows into that
    request's own ``TreeKVCache`` and keeps, per layer, the views its attention will read.

    Args:
        backends: the requests' backends, in batch order.
        spans: per request, its rows ``[begin, end)`` of the batch.
        masks: per request, its ``[1, 1, n, L + n]`` additive mask.
    """

    def __init__(self, backends: list[HFBackend], spans: list[tuple[int, int]], masks: list[torch.Tensor]) -> None:
        super().__init__(layers=[])
        self.backends = backends
        self.spans = spans
        self.masks = masks
        self.states: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

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
        self.states[layer_idx] = [
            backend.cache.layers[layer_idx].update(key_states[:, :, begin:end], value_states[:, :, begin:end])
            for backend, (begin, end) in zip(self.backends, self.spans)
        ]
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """0: positions are always given explicitly."""
        return 0


@dataclass
class BatchRunner:
    """Verifies the trees of several ``HFBackend`` requests (lean caches) in one forward.

    Args:
        model: the model every backend runs.
        buckets: the row counts forwards are padded to, increasing; the last is the most rows
            one forward may hold.
    """

    model: PreTrainedModel
    buckets: tuple[int, ...] = ROW_BUCKETS

    @property
    def max_rows(self) -> int:
        """The most tree nodes one forward may hold (split bigger batches with ``split``)."""
        return self.buckets[-1]

    def split(self, sizes: list[int]) -> list[list[int]]:
        """Groups requests, in order, into forwards of at most ``max_rows`` nodes.

        Args:
            sizes: each request's tree size (each <= ``max_rows``).

        Returns:
            Lists of request indices, one per forward.
        """
        groups: list[list[int]] = [[]]
        rows = 0
        for index, size in enumerate(sizes):
            if groups[-1] and rows + size > self.max_rows:
                groups.append([])
                rows = 0
            groups[-1].append(index)
            rows += size
        return groups

    def __post_init__(self) -> None:
        if self.model.config._attn_implementation != ATTENTION_NAME:
            self.model.set_attn_implementation(ATTENTION_NAME)  # transformers' SDPA when no batch is in flight
        self._head = HFBackend(self.model)  # for its output head and logits helper

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
        total = sum(tree.size for tree in trees)
        if total > self.max_rows:
            raise ValueError(f"a forward holds at most {self.max_rows} nodes, got {total}; split the batch")
        spans, masks, tokens, positions = [], [], [], []
        row = 0
        for backend, tree in zip(backends, trees):
            node_tokens, node_positions, mask = backend.prepare_tree(tree)
            spans.append((row, row + tree.size))
            masks.append(mask)
            tokens.append(node_tokens)
            positions.append(node_positions)
            row += tree.size
        padding = next(bucket for bucket in self.buckets if bucket >= row) - row
        device = self.model.device
        ids = torch.from_numpy(np.concatenate(tokens + [np.zeros(padding, dtype=np.int64)])).to(device)[None]  # [1, M]
        where = torch.from_numpy(np.concatenate(positions + [np.zeros(padding, dtype=np.int64)])).to(device)[None]
        layout = SegmentedCache(backends, spans, masks)
        dummy_mask = torch.zeros((1, 1, ids.shape[1], 1), dtype=self.model.dtype, device=device)  # [1, 1, M, 1]
        logits = self._head.forward_logits(input_ids=ids, position_ids=where, attention_mask=dummy_mask,
                                           past_key_values=layout, use_cache=True, **{SEGMENTS_KEY: layout})
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

    @torch.inference_mode()
    def check_exact(self, make_backend, offsets: tuple[int, ...] = (0, 1, 3, 5)) -> str | None:
        """Checks that batching cannot change any request's logits on this machine.

        Two checks: every matmul of the model (each ``nn.Linear`` weight shape, and the output
        head as the backends run it) gives each row the same bits at every row bucket and row
        offset; and two real requests of different lengths verified together get exactly their
        solo logits.

        Args:
            make_backend: makes a fresh lean ``HFBackend`` of the model.
            offsets: row offsets at which a request's rows are compared.

        Returns:
            None when batching is exact, else a one-line reason.
        """
        device, dtype = self.model.device, self.model.dtype
        generator = torch.Generator(device="cpu").manual_seed(0)
        weights = {}
        for module in self.model.modules():
            if isinstance(module, torch.nn.Linear):
                weights.setdefault((tuple(module.weight.shape), module.bias is not None), module)
        head = make_backend().head_weight  # [V, H] or None
        rows = self.max_rows + max(offsets)
        for (shape, _), module in weights.items():
            x = torch.randn((rows, shape[1]), generator=generator).to(device, dtype)  # [R, in]
            reference = torch.nn.functional.linear(x, module.weight, module.bias)  # [R, out]
            for bucket in self.buckets:
                for offset in offsets:
                    got = torch.nn.functional.linear(x[offset : offset + bucket], module.weight, module.bias)
                    if not torch.equal(got, reference[offset : offset + bucket]):
                        return f"a {shape[1]}->{shape[0]} matmul rounds rows differently at {bucket} rows"
        if head is not None:
            x = torch.randn((rows, head.shape[1]), generator=generator).to(device, dtype)  # [R, H]
            reference = torch.mm(head, x.t()).t()  # [R, V]
            for bucket in self.buckets:
                for offset in offsets:
                    if not torch.equal(torch.mm(head, x[offset : offset + bucket].t()).t(), reference[offset : offset + bucket]):
                        return f"the output head rounds rows differently at {bucket} rows"
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        prompts = [torch.randint(0, vocab, (length,), generator=generator).numpy() for length in (37, 150)]
        trees = [DraftTree(np.array([5, 6, 7, 8]), np.array([-1, 0, 0, 1])), DraftTree(np.array([9, 10]), np.array([-1, 0]))]
        solo = []
        for prompt, tree in zip(prompts, trees):
            backend = make_backend()
            backend.prefill_logits(prompt)
            solo.append(self.tree_logits([backend], [tree])[0])
        backends = [make_backend() for _ in prompts]
        for backend, prompt in zip(backends, prompts):
            backend.prefill_logits(prompt)
        for alone, together in zip(solo, self.tree_logits(backends, trees)):
            if not torch.equal(alone, together):
                return "a batch of two requests did not give each its solo logits"
        return None
