"""A transformers model as a runtime: its backends, and whether they can verify in batches."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import PreTrainedModel

from adaspec.backends.base import BatchSupport
from adaspec.backends.hf import HFBackend, OutputHead, output_head_weight
from adaspec.backends.hf_batch import HFBatchVerifier, distinct_weights, fastest_plan, unsupported_matmuls
from adaspec.backends.row_plan import RowPlan, cached_row_plan

log = logging.getLogger("adaspec")

# the attention implementations whose handling of a 4-D tree mask the tests prove (tests/test_architectures.py)
TREE_ATTENTION = ("sdpa", "eager")
MIN_BATCH_ROWS = 8  # a row plan whose calls hold fewer rows re-reads the weights too often to pay


class HFRuntime:
    """Makes the backends of one transformers model and answers for their batching.

    Args:
        model: the loaded model, in eval mode.
        name: where it came from (for profile keys).
        attention: the attention implementation it was loaded with (``sdpa`` or ``eager``).
        check_folder: where per-machine batching checks are cached.
    """

    def __init__(self, model: PreTrainedModel, name: str, attention: str, check_folder: Path) -> None:
        self.model = model
        self.name = name
        self.attention = attention
        self.check_folder = check_folder
        self.head = OutputHead(output_head_weight(model))  # probed once for every backend
        self._batch_support: BatchSupport | None = None

    def new_backend(self) -> HFBackend:
        """A backend with its own KV cache."""
        return HFBackend(self.model, model_name=self.name, head=self.head)

    def batch_support(self) -> BatchSupport:
        """Whether several requests verify in one forward with each request's solo logits, here.

        Needs full-attention layers (the lean cache), SDPA and matmuls that all go through
        ``linear``; then a row plan for this machine (searched once, cached) and a check on
        real batches of the loaded model. The answer is kept for the runtime's life.

        Returns:
            The verifier, or None and the reason.
        """
        if self._batch_support is None:
            self._batch_support = self._find_batch_support()
        return self._batch_support

    def row_plan(self) -> tuple[RowPlan | None, bool]:
        """This machine's row plan for the model's weights (searched once per machine, then cached).

        Returns:
            The plan (None when none exists) and whether it came from the cache.
        """
        def choose(plans: list[RowPlan]) -> RowPlan:
            wide = [plan for plan in plans if plan.max_rows >= MIN_BATCH_ROWS]  # narrower ones cannot pay
            return fastest_plan(self.model, self.new_backend, wide or plans)

        return cached_row_plan(distinct_weights(self.model), self.new_backend().profile_key, choose, self.check_folder)

    def _find_batch_support(self) -> BatchSupport:
        if not self.new_backend().lean:
            return BatchSupport(None, "the model has sliding-window layers, whose caches verify one request per forward")
        if self.attention != "sdpa":
            return BatchSupport(None, f"the model runs {self.attention} attention, and batching runs SDPA")
        reason = unsupported_matmuls(self.model)
        if reason:
            return BatchSupport(None, reason)
        plan, cached = self.row_plan()
        if plan is None:
            return BatchSupport(None, "no matmul row count gives every row the same bits on this machine")
        if plan.max_rows < MIN_BATCH_ROWS:
            return BatchSupport(None, f"matmul rows agree here only in calls of {plan.min_rows}..{plan.max_rows} "
                                      "rows, too few for batching to pay")
        verifier = HFBatchVerifier(self.model, plan)
        reason = verifier.check_exact(self.new_backend)
        if reason:
            return BatchSupport(None, reason)
        log.info("adaspec: batched verification is exact here (%s; plan %s)", plan.describe(),
                 "cached" if cached else "found now")
        return BatchSupport(verifier, verifier.description)
