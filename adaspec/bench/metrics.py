"""Benchmark arithmetic over per-generation records: speed, speedup, MAT, acceptance, equality.

Aggregates are token-weighted, as in Spec-Bench: a method's tokens/s is all its tokens over
all its seconds, MAT is 1 + all accepted draft tokens over all verification steps, and the
speedup divides tokens/s by the baseline's over the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from adaspec.stats import GenerationStats


@dataclass
class RunRecord:
    """One generation of one prompt turn by one method.

    Attributes:
        prompt_id, category, method, turn: what ran.
        new_tokens: tokens generated.
        seconds: wall time of the generation.
        token_ids: the tokens, for the equality check.
        steps: verification steps (None for methods that do not report them).
        accepted_per_pos: entry d-1: steps that accepted a draft token at depth d.
        draft_s, verify_s: time in the drafter and in verification (adaspec methods only).
        prefill_s: time running the prompt (adaspec methods only).
        plain_steps: steps that verified no draft (adaspec methods only).
        peak_rss_mb: the process's peak resident memory during this generation (Linux only).
        prompt_digest: identifies the user turns asked up to this one (``BenchPrompt.digest``), so a
            resumed run reuses a record only for the very same prompt.
    """

    prompt_id: str
    category: str
    method: str
    turn: int
    new_tokens: int
    seconds: float
    token_ids: list[int]
    steps: int | None = None
    accepted_per_pos: list[int] = field(default_factory=list)
    draft_s: float | None = None
    verify_s: float | None = None
    prefill_s: float | None = None
    plain_steps: int | None = None
    peak_rss_mb: float | None = None
    prompt_digest: str | None = None

    @classmethod
    def from_stats(cls, prompt_id: str, category: str, method: str, turn: int, token_ids: list[int], stats: GenerationStats) -> RunRecord:
        """A record from an adaspec generation's stats.

        Args:
            prompt_id, category, method, turn: what ran.
            token_ids: the generated tokens.
            stats: the generation's counters and timings.

        Returns:
            The record (peak memory is filled in by the runner).
        """
        return cls(prompt_id, category, method, turn, stats.new_tokens, stats.total_s, list(token_ids),
                   stats.num_steps, list(stats.num_accepted_tokens_per_pos), stats.draft_s, stats.verify_s,
                   stats.prefill_s, stats.num_plain_steps)


def tokens_per_s(records: Sequence[RunRecord]) -> float:
    """All tokens over all seconds.

    Args:
        records: the runs to pool.

    Returns:
        Tokens per second (0.0 when no time was spent).
    """
    seconds = sum(r.seconds for r in records)
    return sum(r.new_tokens for r in records) / seconds if seconds > 0 else 0.0


def mean_accepted_tokens(records: Sequence[RunRecord]) -> float | None:
    """MAT, root counted: 1 + accepted draft tokens / steps.

    Args:
        records: the runs to pool.

    Returns:
        Mean accepted tokens per verification step, or None when a run has no step count
        (transformers' methods) or there are no runs.
    """
    if any(r.steps is None for r in records) or not records:
        return None
    steps = sum(r.steps for r in records)
    accepted = sum(sum(r.accepted_per_pos) for r in records)
    return 1.0 + accepted / steps if steps else 1.0


def acceptance_by_depth(records: Sequence[RunRecord]) -> list[float]:
    """The share of steps that accepted a draft token at each depth.

    Args:
        records: the runs to pool.

    Returns:
        Entry d-1: accepted tokens at depth d over all steps (empty without steps).
    """
    steps = sum(r.steps or 0 for r in records)
    depth = max((len(r.accepted_per_pos) for r in records), default=0)
    totals = [sum(r.accepted_per_pos[d] for r in records if d < len(r.accepted_per_pos)) for d in range(depth)]
    return [t / steps for t in totals] if steps else []


def first_difference(expected: Sequence[int], got: Sequence[int]) -> int | None:
    """Where two token sequences first part.

    Args:
        expected: the baseline's tokens.
        got: the tokens to check.

    Returns:
        Index of the first differing token (a length difference counts), or None if equal.
    """
    for index, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return index
    return None if len(expected) == len(got) else min(len(expected), len(got))


def summarise(records: Sequence[RunRecord], baseline: str = "none") -> dict:
    """Per method, per category and overall: tokens/s, speedup, MAT, acceptance, equality.

    Args:
        records: every run, the baseline's included.
        baseline: the method the speedups divide by and outputs are compared with.

    Returns:
        ``{method: {category or "overall": {...figures...}}}``.

    Runs pair with the baseline's run of the same (category, prompt id, turn): one id may
    appear in several categories (HumanEval as completion and as chat).

    Raises:
        ValueError: if the baseline did not run every (category, prompt, turn) another method ran.
    """
    base = {(r.category, r.prompt_id, r.turn): r for r in records if r.method == baseline}
    out: dict = {}
    for method in dict.fromkeys(r.method for r in records):
        mine = [r for r in records if r.method == method]
        missing = [(r.category, r.prompt_id, r.turn) for r in mine if (r.category, r.prompt_id, r.turn) not in base]
        if missing:
            raise ValueError(f"baseline {baseline!r} has no run for {missing[0]}")
        groups = {"overall": mine}
        for r in mine:
            groups.setdefault(r.category, []).append(r)
        out[method] = {}
        for group, runs in groups.items():
            paired = [base[(r.category, r.prompt_id, r.turn)] for r in runs]
            differences = {
                f"{r.category}/{r.prompt_id}#{r.turn}": first_difference(b.token_ids, r.token_ids) for r, b in zip(runs, paired)
            }
            differences = {k: v for k, v in differences.items() if v is not None}
            steps = sum(r.steps or 0 for r in runs)
            out[method][group] = {
                "runs": len(runs),
                "tokens_per_s": tokens_per_s(runs),
                "speedup": tokens_per_s(runs) / tokens_per_s(paired) if tokens_per_s(paired) else 0.0,
                "mat": mean_accepted_tokens(runs),
                "acceptance_by_depth": acceptance_by_depth(runs),
                "draft_ms_per_step": 1000 * sum(r.draft_s or 0 for r in runs) / steps if steps else None,
                "verify_ms_per_step": 1000 * sum(r.verify_s or 0 for r in runs) / steps if steps else None,
                # the rest of a step's wall time: emitting text, stop checks, the loop itself (prefill excluded)
                "other_ms_per_step": 1000 * sum(r.seconds - (r.prefill_s or 0) - (r.draft_s or 0) - (r.verify_s or 0)
                                                for r in runs) / steps if steps else None,
                "plain_step_share": sum(r.plain_steps or 0 for r in runs) / steps
                if steps and all(r.plain_steps is not None for r in runs) else None,
                "peak_rss_mb": max((r.peak_rss_mb for r in runs if r.peak_rss_mb is not None), default=None),
                "differing_from_baseline": differences,  # category/prompt#turn -> first differing position
            }
    return out
