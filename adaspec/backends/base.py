"""The backend protocol: the only thing the engine, the budget profile and the CLI know about a
model runtime.

A backend runs one model for one request at a time and owns that request's KV cache. Everything
crossing the protocol is a numpy array: token ids in; per verified node, the model's chosen token
and the top-K candidates the drafter learns from out. Whatever the runtime computes with (torch
tensors on a GPU, llama.cpp's buffers) stays on its side, and each step copies back a few small
arrays, never ``[n, V]`` logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from adaspec.sampling import SamplingParams, sample_tokens, sample_tokens_host, target_probs, target_probs_host
from adaspec.tree import DraftTree

DEFAULT_BUDGET = 8  # tree nodes per step, root included; measured best fixed budget on a 2-core AVX2 CPU (docs/benchmarks.md)


def safe_name(text: str) -> str:
    """A model name or path reduced to a file-name-safe word (its last path part).

    Args:
        text: the name or path.

    Returns:
        Letters, digits, ``-``, ``_`` and ``.`` only.
    """
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(text).name or text)


@dataclass(frozen=True)
class Pick:
    """How a backend turns a node's logits into the model's token.

    Attributes:
        sampling: the request's settings; greedy takes the argmax.
        uniforms: ``[n]`` float64, for sampling only: node i's uniform number (that of its output
            position), used by inverse-CDF sampling; None when greedy.
        feedback_width: how many top candidates per node to return for the drafter (0: none).
    """

    sampling: SamplingParams
    uniforms: np.ndarray | None
    feedback_width: int


@dataclass(frozen=True)
class NodeOutputs:
    """What one forward says about each of its ``n`` nodes.

    Attributes:
        tokens: ``[n]`` int64, the model's token after each node's path: the argmax when greedy,
            the token drawn with the node's uniform when sampling.
        topk_ids: ``[n, K]`` int64, the K likeliest next tokens at each node, best first.
        topk_probs: ``[n, K]`` float32, their probabilities at temperature 1.
    """

    tokens: np.ndarray
    topk_ids: np.ndarray
    topk_probs: np.ndarray


@runtime_checkable
class Backend(Protocol):
    """One model runtime behind prefill / verify / commit.

    Attributes:
        name: the runtime's name (``hf``, ``llama.cpp``).
        vocab_size: the logits' width.
        chain_only: True when only a chain (every node the child of the one before) verifies
            exactly; the engine then sends chains, never branching trees.
        profile_key: what a latency profile measured on this backend depends on (runtime,
            model, device, dtype, threads, build), file-name safe.
        default_budget: the tree budget a ``Generator`` uses when none is given: a node count,
            or ``"auto"`` where extra nodes cost so much that each step must be sized.
        default_drafter: the drafter a ``Generator`` uses when none is given (the fastest on
            this runtime in the project's benchmark).
    """

    name: str
    vocab_size: int
    chain_only: bool
    profile_key: str
    default_budget: int | str
    default_drafter: str

    @property
    def cache_len(self) -> int:
        """Committed positions in the request's KV cache."""
        ...

    def cached_prefix(self, prompt_ids: np.ndarray) -> int:
        """How many leading tokens of a prompt the cache already holds (kept from the previous
        request, so ``prefill`` runs only the rest); at most ``p - 1``.

        Args:
            prompt_ids: ``[p]`` int64 prompt ids.
        """
        ...

    def prefill(self, prompt_ids: np.ndarray, pick: Pick) -> NodeOutputs:
        """Starts a request: runs the prompt into the cache, reusing ``cached_prefix`` positions.

        Args:
            prompt_ids: ``[p]`` int64 prompt ids (p >= 1).
            pick: how to choose the token after the prompt (``uniforms`` has 1 entry).

        Returns:
            Outputs for one node: the prompt's last position.
        """
        ...

    def verify(self, tree: DraftTree, pick: Pick) -> NodeOutputs:
        """Runs every tree node in one forward, each attending to the cache and its ancestors.

        The root is the pending token (emitted, not yet cached). ``commit`` must follow.

        Args:
            tree: the draft tree (a chain when ``chain_only``).
            pick: how to choose each node's token (``uniforms`` has one entry per node).

        Returns:
            Outputs for every node, in the tree's node order.
        """
        ...

    def commit(self, accepted: np.ndarray) -> None:
        """Keeps the accepted path's cache entries and drops the rest of the last tree.

        Args:
            accepted: ``[k]`` int64 accepted node indices, root first, increasing (k may be 0
                to drop the whole tree).
        """
        ...

    def release(self) -> None:
        """Ends the request; the backend stays usable, and may keep the request's positions for
        a later prompt that shares their prefix (a chat's next turn)."""
        ...

    def close(self) -> None:
        """Frees everything the backend holds (caches, contexts); it is not used again."""
        ...

    def synchronize(self) -> None:
        """Waits for queued device work (for timing); a no-op on synchronous runtimes."""
        ...


class BatchVerifier(Protocol):
    """An optional capability of a runtime: several requests' trees verified in one forward,
    each request getting exactly the outputs a batch of one gives it.

    Attributes:
        max_rows: the most tree nodes one forward holds.
        description: how batching is made exact here, for logs and ``/health``.
    """

    max_rows: int
    description: str

    def split(self, sizes: list[int]) -> list[list[int]]:
        """Groups requests, in order, into forwards of at most ``max_rows`` nodes.

        Args:
            sizes: each request's tree size.

        Returns:
            Lists of request indices, one per forward.
        """
        ...

    def verify(self, backends: list[Backend], trees: list[DraftTree], picks: list[Pick]) -> list[NodeOutputs]:
        """``Backend.verify`` for several requests (each backend holding one) in one forward.

        Args:
            backends: the requests' backends, each made by the runtime that made this verifier.
            trees: one tree per backend.
            picks: one pick per backend.

        Returns:
            Per request, its nodes' outputs.
        """
        ...


@dataclass(frozen=True)
class BatchSupport:
    """A runtime's answer to "can you verify several requests in one forward, exactly?".

    Attributes:
        verifier: the batch verifier, or None when the answer is no.
        reason: why not (or, with a verifier, how it is exact).
    """

    verifier: BatchVerifier | None
    reason: str


class Runtime(Protocol):
    """A loaded model's runtime: makes backends (one per request) and says what they can do together."""

    def new_backend(self) -> Backend:
        """A backend with a KV cache of its own."""
        ...

    def batch_support(self) -> BatchSupport:
        """Whether, and how, several requests' trees verify in one forward (may check the machine)."""
        ...


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
