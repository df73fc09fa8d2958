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

from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree


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
        reused_prefix: leading prompt positions the last ``prefill`` kept from the request before
            (not run again).
    """

    name: str
    vocab_size: int
    chain_only: bool
    profile_key: str
    reused_prefix: int

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
            accepted: ``[k]`` int64 accepted node indices, root first, increasing (k >= 1).
        """
        ...

    def rollback(self) -> None:
        """Drops the whole tree in flight: the cache is as it was before the last ``verify``."""
        ...

    def forget(self) -> None:
        """Forgets which tokens the cache holds, so that the next ``prefill`` reuses none of them
        (``cached_prefix`` is 0 until then); the memory stays allocated. A pool calls it before
        handing a backend to a request that may not see the previous one's prefix."""
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
    """How a runtime verifies the trees of several requests: in one forward where it can do that
    exactly (each request getting the outputs a batch of one gives it), else one at a time.

    Attributes:
        max_requests: the most requests one forward holds.
        max_rows: the most tree nodes one forward holds (a first request always fits).
        description: how batching is made exact here, for logs and ``/health``.
    """

    max_requests: int
    max_rows: int
    description: str

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


class SerialVerifier:
    """The verifier of a runtime that cannot batch: one request per forward, through its backend."""

    max_requests = 1
    max_rows = 1 << 30
    description = "one request per forward"

    def verify(self, backends: list[Backend], trees: list[DraftTree], picks: list[Pick]) -> list[NodeOutputs]:
        """Verifies each request on its own backend (see ``BatchVerifier.verify``)."""
        return [backend.verify(tree, pick) for backend, tree, pick in zip(backends, trees, picks)]


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
    """A loaded model's runtime: the facts the engine needs about it, and its backends (one per
    request). Adding a runtime is one class like this and one loader in ``adaspec.backends.RUNTIMES``.

    Attributes:
        name: its registry name (``hf``, ``llama.cpp``).
        device: where it runs (``cpu``, ``cuda:0``...).
        max_tree_nodes: the most nodes one verification may hold; a larger budget is refused.
        default_drafter: the drafter spec a ``Generator`` uses when none is given (the fastest
            on this runtime in the project's benchmark).
        default_budget: the tree budget a ``Generator`` uses when none is given: a node count,
            or ``"auto"`` where each step's tree is sized from measured cost.
    """

    name: str
    device: str
    max_tree_nodes: int
    default_drafter: str
    default_budget: int | str

    def label(self) -> str:
        """What reports call this runtime and its configuration (``hf``, ``llama.cpp exact``)."""
        ...

    def new_backend(self) -> Backend:
        """A backend with a KV cache of its own."""
        ...

    def batch_support(self) -> BatchSupport:
        """Whether, and how, several requests' trees verify in one forward (may check the machine)."""
        ...


def shared_prefix(held: np.ndarray, prompt_ids: np.ndarray) -> int:
    """How many leading prompt tokens a cache holding ``held`` can keep: their common prefix, at
    most ``p - 1`` (the last prompt token is always run, for its logits).

    Args:
        held: ``[h]`` int64 the tokens whose positions a cache holds.
        prompt_ids: ``[p]`` int64 a new prompt.

    Returns:
        The number of positions to keep.
    """
    length = min(held.size, prompt_ids.size - 1)
    if length <= 0:
        return 0
    differ = np.flatnonzero(held[:length] != prompt_ids[:length])
    return int(differ[0]) if differ.size else length
