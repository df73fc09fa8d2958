"""Per-request decoding statistics, named as vLLM's spec-decode metrics where they overlap."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from adaspec.tree import DraftTree, Source

SOURCE_NAMES = tuple(source.name.lower() for source in Source)  # learned, context, prediction, history


@dataclass
class GenerationStats:
    """What one request cost and how much speculation helped.

    Attributes:
        prompt_tokens: tokens in the prompt.
        cached_prompt_tokens: of those, tokens whose cache positions were kept from an earlier
            request sharing the prefix (not run again).
        new_tokens: tokens generated (EOS included when it ended the output).
        num_steps: verification steps (one model forward each, after the prefill), plain ones
            included: MAT is new tokens per step.
        num_draft_tokens: draft nodes verified, roots excluded.
        num_accepted_tokens: draft tokens accepted, roots excluded.
        num_accepted_tokens_per_pos: entry d-1 counts the steps whose accepted path reached depth d.
        num_plain_steps: steps that verified the root alone (no draft).
        draft_tokens_by_source: draft tokens verified, by where they came from (``tree.Source``:
            ``learned``, ``context``, ``prediction``, ``history``): the parts of a ``hybrid``.
        accepted_tokens_by_source: of those, the tokens accepted.
        accepted_prediction_tokens: tokens of the client's predicted output that ended up in the
            completion (OpenAI's meaning); 0 without a prediction.
        rejected_prediction_tokens: tokens of the prediction that did not.
        prefill_s: seconds in the prompt forward.
        draft_s: seconds in the drafter (propose, observe, and the top-k it learns from).
        sizer_s: of ``draft_s``, seconds in the tree sizer (choosing a step's nodes, and
            learning from its verification).
        verify_s: seconds in tree forwards, acceptance and KV compaction.
        emit_s: seconds adding accepted tokens to the output: detokenising, checking stop
            strings and the length limit, and taking the new text.
        total_s: wall seconds from prompt ids to the last token.
    """

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    new_tokens: int = 0
    num_steps: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)
    num_accepted_tokens: int = 0
    num_plain_steps: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    draft_tokens_by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCE_NAMES, 0))
    accepted_tokens_by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCE_NAMES, 0))
    prefill_s: float = 0.0
    draft_s: float = 0.0
    sizer_s: float = 0.0
    verify_s: float = 0.0
    emit_s: float = 0.0
    total_s: float = 0.0

    def record_step(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Adds one verification step.

        Args:
            tree: the verified tree.
            accepted: ``[k]`` its accepted node indices, root first.
        """
        tree_size, accepted_len = tree.size, int(accepted.size)
        if tree_size > 1:
            sources = tree.sources if tree.sources is not None else np.zeros(tree_size, dtype=np.int8)  # [n]
            drafted = np.bincount(sources[1:], minlength=len(Source))  # [S]
            kept = np.bincount(sources[accepted[1:]], minlength=len(Source))  # [S]
            for name, count, hit in zip(SOURCE_NAMES, drafted.tolist(), kept.tolist()):
                self.draft_tokens_by_source[name] += count
                self.accepted_tokens_by_source[name] += hit
        self.num_steps += 1
        self.num_plain_steps += tree_size == 1
        self.num_draft_tokens += tree_size - 1
        self.num_accepted_tokens += accepted_len - 1
        depth = accepted_len - 1
        if len(self.num_accepted_tokens_per_pos) < depth:
            self.num_accepted_tokens_per_pos.extend([0] * (depth - len(self.num_accepted_tokens_per_pos)))
        for d in range(depth):
            self.num_accepted_tokens_per_pos[d] += 1

    @property
    def num_drafts(self) -> int:
        """Steps that verified a draft (plain steps left out), as vLLM's and the server's
        ``spec_decode_num_drafts`` counter counts them."""
        return self.num_steps - self.num_plain_steps

    @property
    def mat(self) -> float:
        """Mean accepted tokens per step, root counted (1.0 for plain decoding)."""
        return 1.0 + self.num_accepted_tokens / self.num_steps if self.num_steps else 1.0

    @property
    def tokens_per_s(self) -> float:
        """New tokens per wall second, prefill included."""
        return self.new_tokens / self.total_s if self.total_s > 0 else 0.0

    @property
    def acceptance_rate_per_pos(self) -> list[float]:
        """Entry d-1: share of steps that accepted a draft token at depth d."""
        return [c / self.num_steps for c in self.num_accepted_tokens_per_pos] if self.num_steps else []

    @property
    def other_s(self) -> float:
        """Seconds outside prefill, drafting, verification and emitting text (bookkeeping)."""
        return max(0.0, self.total_s - self.prefill_s - self.draft_s - self.verify_s - self.emit_s)

    def to_dict(self) -> dict:
        """Every field and derived figure, JSON-ready."""
        out = asdict(self)
        out.update(
            num_drafts=self.num_drafts,
            mat=self.mat,
            tokens_per_s=self.tokens_per_s,
            acceptance_rate_per_pos=self.acceptance_rate_per_pos,
            other_s=self.other_s,
        )
        return out
