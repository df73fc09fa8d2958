"""The shared, learned side of decoding: one drafter and one tree sizer, taught by every request.

Requests own their caches, contexts and random numbers (``adaspec.request``); what they learn
from goes through a ``Session``, which serialises access with one lock, so requests may be
stepped in any interleaving and from several threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaspec.backends.base import NodeOutputs
from adaspec.budget import RequestSizer, TreeSizer
from adaspec.drafters import Drafter, StepFeedback
from adaspec.drafters.base import DraftRequest
from adaspec.drafters.prediction import PredictionDrafter, with_prediction
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree


@dataclass
class RequestDrafting:
    """One request's side of drafting, owned by the request.

    Attributes:
        drafter: what drafts for it: the session's drafter, or with a prediction, the prediction
            and the session's drafter merged by score.
        state: what that drafter's ``begin`` returned for it.
        sizer: its tree sizer (None with a fixed budget).
        prediction: the client's predicted output, when one was given.
        sizer_s: seconds spent in its sizer so far.
    """

    drafter: Drafter
    state: Any
    sizer: RequestSizer | None
    prediction: PredictionDrafter | None
    sizer_s: float = 0.0


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
        with self.lock:
            drafter.warm_up(vocab_size)
            if sizer is not None:
                sizer.warm_up()

    def begin(self, prompt_ids: np.ndarray, sampling: SamplingParams, scope: str = "",
              prediction: np.ndarray | None = None) -> RequestDrafting:
        """Tells the drafter a request starts and hands the request its drafting state.

        Args:
            prompt_ids: ``[p]`` the request's prompt.
            sampling: its settings (each setting keeps its own acceptance calibration).
            scope: whose shared history it drafts from and adds to, and whose acceptance
                calibration sizes its trees.
            prediction: ``[q]`` token ids of its predicted output, if the client sent one.

        Returns:
            The request's drafting state.
        """
        source = PredictionDrafter(prediction, int(prompt_ids.size)) if prediction is not None and prediction.size else None
        drafter = self.drafter if source is None else with_prediction(self.drafter, source)
        with self.lock:
            state = drafter.begin(DraftRequest(prompt_ids, scope))
            # acceptance calibration is kept per scope too: how often one scope's drafts are
            # accepted never sizes another's trees (and so never shows in its timing)
            sizer = None if self.sizer is None else self.sizer.begin((scope, sampling.temperature, sampling.top_k,
                                                                      sampling.top_p))
        return RequestDrafting(drafter, state, sizer, source)

    def propose(self, context: np.ndarray, budget: int, pending: int, chain_only: bool,
                drafting: RequestDrafting) -> DraftTree:
        """The tree one step verifies: drafted, checked, cut to a chain if need be, and sized.

        Args:
            context: ``[L]`` the request's prompt and output so far.
            budget: the most nodes (root included) this step may verify.
            pending: the token the tree must be rooted at.
            chain_only: cut the tree to one chain, the one expected to accept the most tokens (for a
                backend that verifies chains only).
            drafting: the request's drafting state.

        Returns:
            The tree.

        Raises:
            ValueError: when the drafter breaks its contract (a bug in the drafter).
        """
        sizer = drafting.sizer
        with self.lock:
            # room for the root alone (plain decoding, or the last token), or plain decoding wins for
            # now: the drafter is not asked
            if budget <= 1 or (sizer is not None and not sizer.wants_draft()):
                if sizer is not None:
                    sizer.skip()
                return DraftTree.root_only(pending)
            started = 0.0 if sizer is None else sizer.shared.clock()  # the sizer's clock prices the whole look
            tree = drafting.drafter.propose(context, budget, drafting.state)
            check_tree_contract(tree, pending, budget, self.vocab_size, drafting.drafter.name)
            sizing = time.perf_counter()
            if chain_only and not tree.is_chain:  # the chain expected to accept the most (the drafter's first, without a sizer)
                tree = tree.best_chain(None if sizer is None else sizer.calibrator.estimate(tree))
            if sizer is not None:  # the sizer adds its own time to what this look cost
                tree = sizer.size(tree, 1000.0 * (sizer.shared.clock() - started))
                drafting.sizer_s += time.perf_counter() - sizing
        return tree

    @property
    def feedback_width(self) -> int:
        """Top candidates per verified node the drafter learns from."""
        return self.drafter.feedback_width

    def learn(self, tree: DraftTree, accepted: np.ndarray, verified: NodeOutputs, pending: int, before_root: int,
              drafting: RequestDrafting) -> None:
        """Teaches the drafter and the sizer what one verification found.

        Args:
            tree: the verified tree.
            accepted: ``[k]`` its accepted node indices, root first.
            verified: the backend's outputs for it.
            pending: the model's token after the accepted path.
            before_root: the token before the tree's root (-1 when none).
            drafting: the request's drafting state.
        """
        with self.lock:
            if drafting.sizer is not None:
                sizing = time.perf_counter()
                drafting.sizer.update(tree, accepted)
                drafting.sizer_s += time.perf_counter() - sizing
            drafting.drafter.observe(StepFeedback(tree, accepted, pending, verified.topk_ids, verified.topk_probs,
                                                  before_root), drafting.state)

    def end(self, drafting: RequestDrafting, output: np.ndarray) -> None:
        """Tells the drafter a request is over (its history may keep the output).

        Args:
            drafting: the request's drafting state.
            output: ``[m]`` int64 the tokens it generated.
        """
        with self.lock:
            drafting.drafter.end(drafting.state, output)

    def snapshot(self) -> dict[str, np.ndarray] | None:
        """A copy of the drafter's learned state (None for a drafter that learns nothing).

        Taken under the lock and cheap (array copies), so a saver may compress and write it
        on another thread while requests go on.
        """
        if not self.drafter.learns:
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
