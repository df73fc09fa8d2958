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

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from transformers import Cache, PreTrainedModel

from adaspec.backends.base import NodeOutputs, Pick, pick_outputs
from adaspec.backends.hf import HFBackend
from adaspec.backends.row_plan import RowPlan, cached_row_plan
from adaspec.tree import DraftTree

log = logging.getLogger("adaspec")
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
            backend.cache.layers[layer_idx].update(key_states[:, :, begin:end], value_states[:, :, begin:end])
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
        max_rows: the most tree nodes one forward may hold (``split`` groups bigger batches).
    """

    model: PreTrainedModel
    plan: RowPlan
    max_rows: int = MAX_FORWARD_ROWS

    @property
    def description(self) -> str:
        """How batching is exact here."""
        return f"matmuls through a row plan ({self.plan.describe()}), attention per request"

    def split(self, sizes: list[int]) -> list[list[int]]:
        """Groups requests, in order, into forwards of at most ``max_rows`` nodes.

        Args:
            sizes: each request's tree size.

        Returns:
            Lists of request indices, one per forward (none for no requests).
        """
        if not sizes:
            return []
        groups: list[list[int]] = [[]]
        rows = 0
        for index, size in enumerate(sizes):
            if groups[-1] and rows + size > self.max_rows:
                groups.append([])
                rows = 0
            groups[-1].append(index)
            rows += size
        return groups

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

    @torch.inference_mode()
    def check_exact(self, make_backend: Callable[[], HFBackend], seed: int = 0) -> str | None:
        """Checks on the loaded model that a batch gives every request its logits of a batch of one.

        Three batches of requests with unlike cache lengths and tree shapes (5, 15 and 70 rows,
        the last spanning several row tiles) are verified together and each request alone.

        Args:
            make_backend: makes a fresh lean ``HFBackend`` of the model.
            seed: for the random prompts and trees.

        Returns:
            None when every request got its solo logits, else a one-line reason.
        """
        rng = np.random.default_rng(seed)
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        for sizes in ((4, 1), (6, 1, 8), (20, 3, 30, 17)):
            prompts = [rng.integers(0, vocab, int(rng.integers(3, 200))) for _ in sizes]
            trees = [DraftTree(rng.integers(0, vocab, n), np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)]))
                     for n in sizes]
            alone = [self.tree_logits([prefilled(make_backend(), p)], [t])[0] for p, t in zip(prompts, trees)]
            together = self.tree_logits([prefilled(make_backend(), p) for p in prompts], trees)
            if not all(torch.equal(a, b) for a, b in zip(alone, together)):
                return f"a batch of {len(sizes)} requests ({sum(sizes)} rows) did not give each its solo logits"
        return None


def fastest_plan(model: PreTrainedModel, make_backend: Callable[[], HFBackend], plans: list[RowPlan],
                 repeats: int = 3) -> RowPlan:
    """The plan whose batched forwards of ``model`` take least time here.

    Each plan verifies a single request's 8-node tree and four requests' 8-node trees (the
    usual loads of a server), interleaved with the other plans, ``repeats`` times; the medians
    are summed.

    Args:
        model: the model.
        make_backend: makes a fresh lean backend of it.
        plans: the candidates.
        repeats: timings per plan and load.

    Returns:
        The fastest plan.
    """
    rng = np.random.default_rng(0)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    backends = [prefilled(make_backend(), rng.integers(0, vocab, 200)) for _ in range(4)]
    chain = DraftTree(rng.integers(0, vocab, 8), np.arange(-1, 7))  # [8] nodes
    times: dict[RowPlan, list[float]] = {plan: [] for plan in plans}
    for _ in range(repeats):
        for plan in plans:
            verifier = HFBatchVerifier(model, plan)
            started = time.perf_counter()
            for load in (1, 4):
                verifier.tree_logits(backends[:load], [chain] * load)
                for backend in backends[:load]:
                    backend.commit(np.zeros(0, dtype=np.int64))
            times[plan].append(time.perf_counter() - started)
    return min(plans, key=lambda plan: sorted(times[plan])[len(times[plan]) // 2])


def prefilled(backend: HFBackend, prompt: np.ndarray) -> HFBackend:
    """The backend after prefilling ``prompt`` (for checks)."""
    backend.prefill_logits(prompt)
    return backend


def distinct_weights(model: PreTrainedModel) -> list[torch.Tensor]:
    """One weight per distinct ``[out, in]`` shape of the model's linear layers, head included."""
    shapes: dict[tuple[int, ...], torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shapes.setdefault(tuple(module.weight.shape), module.weight)
    return list(shapes.values())


def unsupported_matmuls(model: PreTrainedModel) -> str | None:
    """Why the model's matmuls cannot all go through a row plan, if they cannot.

    A row plan shapes ``torch.nn.functional.linear``; a weight of two or more dimensions held
    by anything else (GPT-2's ``Conv1D``, fused mixture-of-experts weights) multiplies outside it.

    Args:
        model: the model.

    Returns:
        None when every matrix weight belongs to a ``Linear`` or an ``Embedding``, else a reason.
    """
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            continue
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() >= 2:
                return (f"{type(module).__name__} {name or 'model'}.{parameter_name} multiplies outside "
                        "torch.nn.functional.linear")
    return None
