"""Probes that decide whether and how a transformers model batches exactly on this machine: which
matmuls a row plan can shape, which plan runs fastest, and a check on real batches."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from transformers import PreTrainedModel

from adaspec.backends.hf import HFBackend
from adaspec.backends.hf_batch import HFBatchVerifier
from adaspec.backends.row_plan import RowPlan
from adaspec.tree import DraftTree


@torch.inference_mode()
def check_exact(verifier: HFBatchVerifier, make_backend: Callable[[], HFBackend], seed: int = 0) -> str | None:
    """Checks on the loaded model that a batch gives every request its logits of a batch of one.

    Three batches of requests with unlike cache lengths and tree shapes (5, 15 and 70 rows,
    the last spanning several row tiles) are verified together and each request alone.

    Args:
        verifier: the verifier to check.
        make_backend: makes a fresh lean ``HFBackend`` of the model.
        seed: for the random prompts and trees.

    Returns:
        None when every request got its solo logits, else a one-line reason.
    """
    rng = np.random.default_rng(seed)
    vocab = int(verifier.model.get_output_embeddings().weight.shape[0])
    for sizes in ((4, 1), (6, 1, 8), (20, 3, 30, 17)):
        prompts = [rng.integers(0, vocab, int(rng.integers(3, 200))) for _ in sizes]
        trees = [DraftTree(rng.integers(0, vocab, n), np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)]))
                 for n in sizes]
        alone = [verifier.tree_logits([prefilled(make_backend(), p)], [t])[0] for p, t in zip(prompts, trees)]
        together = verifier.tree_logits([prefilled(make_backend(), p) for p in prompts], trees)
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
                    backend.rollback()
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
