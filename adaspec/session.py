"""The shared, learned side of decoding: one drafter and one tree sizer, taught by every request.

Requests own their caches, contexts and random numbers (``adaspec.request``); what they learn
from goes through a ``Session``, which serialises access with one lock, so requests may be
stepped in any interleaving and from several threads.
"""

from __future__ import annotations

import threading

import numpy as np

from adaspec.backends.base import NodeOutputs
from adaspec.budget import RequestSizer, TreeSizer
from adaspec.drafters import Drafter, StepFeedback
from adaspec.drafters.base import learns
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree


class Session:
    """A drafter and (for ``budget="auto"``) a tree sizer, shared by requests.

    Args:
        drafter: guesses trees; its learned state is shared.
        budget: the most tree nodes per step, root included.
        sizer: sizes each step's tree from measured cost (None: every step uses the budget).
        vocab_size: the model's vocabulary size (trees are checked against it).
    """

    def __init__(self, drafter: Drafter, budget: int, sizer: TreeSizer | None, vocab_size: int) -> None:
        self.drafter = drafter
        self.budget = budget
        self.sizer = sizer
        self.vocab_size = vocab_size
        self.lock = threading.RLock()  # guards the drafter and the sizer's calibration

    def begin(self, prompt_ids: np.ndarray, sampling: SamplingParams) -> RequestSizer | None:
        """Tells the drafter a request starts and hands the request its own sizer.

        Args:
            prompt_ids: ``[p]`` the request's prompt.
            sampling: its settings (each setting keeps its own acceptance calibration).

        Returns:
            The request's sizer, or None when the budget is fixed.
        """
        with self.lock:
            self.drafter.begin(prompt_ids)
            if self.sizer is None:
                return None
            return self.sizer.begin((sampling.temperature, sampling.top_k, sampling.top_p))

    def propose(self, context: np.ndarray, budget: int, pending: int, chain_only: bool,
                sizer: RequestSizer | None) -> DraftTree:
        """The tree one step verifies.

        Args:
            context: ``[L]`` the request's prompt and output so far.
            budget: the most nodes (root included) this step may verify.
            pending: the token the tree must be rooted at.
            chain_only: cut the tree to its first chain (for a backend that verifies chains only).
            sizer: the request's sizer, or None.

        Returns:
            The tree, checked against the drafter contract and sized.

        Raises:
            ValueError: when the drafter breaks its contract (a bug in the drafter).
        """
        with self.lock:
            tree = self.drafter.propose(context, budget)
            check_tree_contract(tree, pending, budget, self.vocab_size, self.drafter.name)
            if chain_only:
                tree = tree.first_chain()
            if sizer is not None:
                tree = sizer.size(tree)
        return tree

    @property
    def feedback_width(self) -> int:
        """Top candidates per verified node the drafter learns from."""
        return self.drafter.feedback_width

    def learn(self, tree: DraftTree, accepted: np.ndarray, verified: NodeOutputs, pending: int, before_root: int,
              sizer: RequestSizer | None) -> None:
        """Teaches the drafter and the sizer what one verification found.

        Args:
            tree: the verified tree.
            accepted: ``[k]`` its accepted node indices, root first.
            verified: the backend's outputs for it.
            pending: the model's token after the accepted path.
            before_root: the token before the tree's root (-1 when none).
            sizer: the request's sizer, or None.
        """
        with self.lock:
            if sizer is not None:
                sizer.update(tree, accepted)
            self.drafter.observe(StepFeedback(tree, accepted, pending, verified.topk_ids, verified.topk_probs,
                                              before_root))

    def snapshot(self) -> dict[str, np.ndarray] | None:
        """A copy of the drafter's learned state (None for a drafter that learns nothing).

        Taken under the lock and cheap (array copies), so a saver may compress and write it
        on another thread while requests go on.
        """
        if not learns(self.drafter):
            return None
        with self.lock:
            return {name: np.array(value, copy=True) for name, value in self.drafter.state().items()}


def check_tree_contract(tree: DraftTree, pending: int, budget: int, vocab_size: int, name: str) -> None:
    """Rejects a drafter's tree that breaks the contract (a bug in the drafter).

    Args:
        tree: the proposed tree.
        pending: the token the tree must be rooted at.
        budget: the most nodes allowed.
        vocab_size: the model's vocabulary size.
        name: the drafter's name, for the message.

    Raises:
        ValueError: if the tree is too big, wrongly rooted, or holds a token outside the vocabulary.
    """
    if tree.size > budget:
        raise ValueError(f"drafter {name!r} returned {tree.size} nodes for a budget of {budget}")
    if int(tree.tokens[0]) != pending:
        raise ValueError(f"drafter {name!r} rooted its tree at {int(tree.tokens[0])}, not the pending token {pending}")
    if int(tree.tokens.max()) >= vocab_size:
        raise ValueError(f"drafter {name!r} proposed token {int(tree.tokens.max())} outside the vocabulary")
