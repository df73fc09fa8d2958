"""The drafter contract: what a drafter is given, what it returns, and what it learns from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaspec.tree import DraftTree


@dataclass(frozen=True, eq=False)
class StepFeedback:
    """What the model said during one verification step.

    Attributes:
        tree: the tree that was verified.
        accepted: ``[k]`` int64, node indices of the accepted path, root first (k >= 1).
        next_token: the model's token after the accepted path (the new pending token).
        topk_ids: ``[n, K]`` int64, the verifier's top-K token ids at every tree node, best first
            (K = the drafter's ``feedback_width``; K = 0 gives an ``[n, 0]`` array).
        topk_probs: ``[n, K]`` float32, their probabilities under the model (temperature 1).
        before_root: the context token before the tree's root (-1 when the root is the first
            token), so that a drafter learning n-grams across the root needs no per-request state.
    """

    tree: DraftTree
    accepted: np.ndarray
    next_token: int
    topk_ids: np.ndarray
    topk_probs: np.ndarray
    before_root: int = -1

    @property
    def accepted_tokens(self) -> np.ndarray:
        """``[k]`` int64, the tokens on the accepted path, root first."""
        return self.tree.tokens[self.accepted]


SHARED_SCOPE = ""  # the scope of requests that belong to no one in particular (a one-user server, the library)


def teaches_shared_tables(request: DraftRequest) -> bool:
    """Whether a request may teach a learned table that every scope drafts from (ADED's, Token
    Recycling's): only requests of the shared scope do, so that nothing one scope's requests
    said reaches another scope's drafts (or their speed).

    Args:
        request: the request beginning.

    Returns:
        True for a request of ``SHARED_SCOPE``.
    """
    return request.scope == SHARED_SCOPE


@dataclass(frozen=True, eq=False)
class DraftRequest:
    """What a drafter is told about a request when it begins.

    Attributes:
        prompt: ``[p]`` int64 the prompt's token ids.
        scope: whose shared history the request may draft from and adds to (``""``: everyone
            served by this drafter; a server can scope by tenant or client key).
    """

    prompt: np.ndarray
    scope: str = ""


class Drafter:
    """Pure token-id logic that guesses what the model will say next: the base every drafter
    extends, writing only what it does (``propose``, and whichever of the rest it needs).

    A drafter never sees the model or its KV cache. Its learned state lives on the instance and
    is shared by all requests; what belongs to one request (its context, the token before the
    root, and whatever ``begin`` returns for it) comes in the arguments and is owned by the
    request, so requests may interleave step by step. The defaults here keep no request state,
    learn nothing and keep nothing across restarts.

    Attributes:
        name: the registry name (``"lookup"``...).
        feedback_width: how many top candidates per tree node the drafter wants in
            ``StepFeedback`` (0 when it does not learn from them).
        learns: True when the drafter has learned state worth keeping across restarts
            (``state`` / ``restore``).
    """

    name: str = "drafter"
    feedback_width: int = 0
    learns: bool = False

    def begin(self, request: DraftRequest) -> Any:
        """Starts a new request.

        Args:
            request: its prompt and scope.

        Returns:
            The request's own drafting state (None when the drafter keeps none), handed back to
            ``propose``, ``observe`` and ``end``.
        """
        return None

    def propose(self, context: np.ndarray, budget: int, state: Any = None) -> DraftTree:
        """Guesses a tree of at most ``budget`` nodes.

        Args:
            context: ``[L]`` int64, every token so far (prompt and output); ``context[-1]`` is
                the pending token and must be the tree's root.
            budget: the most nodes the tree may have, root included (>= 1).
            state: what ``begin`` returned for this request.

        Returns:
            The draft tree, rooted at ``context[-1]`` (here: the root alone, plain decoding).
        """
        return DraftTree.root_only(int(context[-1]))

    def observe(self, step: StepFeedback, state: Any = None) -> None:
        """Learns from one verification step (here: nothing).

        Args:
            step: the verified tree, the accepted path and the verifier's top candidates.
            state: what ``begin`` returned for this request.
        """

    def end(self, state: Any, output: np.ndarray) -> None:
        """The request is over, finished or abandoned (here: nothing is kept of it).

        Args:
            state: what ``begin`` returned for it.
            output: ``[m]`` int64 the tokens it generated.
        """

    def state(self) -> dict[str, np.ndarray] | None:
        """The learned state as named arrays (``restore`` takes them back, in another process too).

        Returns:
            The arrays, or None for a drafter that learns nothing.
        """
        return None

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replaces the learned state with arrays from ``state()``.

        Args:
            state: the arrays.

        Raises:
            ValueError: if they do not fit this drafter (always, for one that learns nothing).
        """
        raise ValueError(f"drafter {self.name!r} keeps no learned state")

    def save(self, path: str | Path) -> None:
        """Writes the learned state to an ``.npz`` file (``load`` reads it back).

        Args:
            path: the file to write.

        Raises:
            ValueError: for a drafter that learns nothing.
        """
        arrays = self.state()
        if arrays is None:
            raise ValueError(f"drafter {self.name!r} keeps no learned state")
        np.savez_compressed(path, **arrays)

    def load(self, path: str | Path) -> None:
        """Replaces the learned state with one written by ``save``.

        Args:
            path: the ``.npz`` file.

        Raises:
            ValueError: if the file cannot be read or does not fit this drafter.
        """
        try:
            with np.load(path) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"cannot read drafter state {path}: {error}") from None
        self.restore(arrays)

    def warm_up(self, vocab_size: int) -> None:
        """Drafts once on a made-up context, so that loading compiled code is not later timed
        as drafting (the tree sizer skips drafting it measures as expensive).

        Args:
            vocab_size: the model's vocabulary size (the made-up tokens stay below it).
        """
        pattern = np.arange(1, 9, dtype=np.int64) % vocab_size  # [8]
        context = np.tile(pattern, 4)  # [32] a repeating text: a copying drafter finds something
        for budget in (2, 8):
            self.propose(context, budget)


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Rejects a drafter setting outside the range the drafter supports.

    Args:
        name: the setting's name.
        value: its value.
        low: the smallest allowed value.
        high: the largest allowed value.

    Raises:
        ValueError: naming the setting, its range and what was given.
    """
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in {low}..{high}, got {value}")
