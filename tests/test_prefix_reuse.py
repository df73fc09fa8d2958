"""Prefix reuse: a prompt that starts with what a pooled backend's cache holds (a chat's earlier
turns) runs only its new tokens, and the output equals a cold prefill's."""

from __future__ import annotations

import pytest

import numpy as np

from adaspec import Generation, Generator
from adaspec.backends.pool import BackendPool
from conftest import mean_accepted, slow_except

TOKENS = 32
CONVERSATIONS = [
    ("Write a Python function that reverses a string.", "Now add a docstring and type hints to it."),
    ("List the planets of the solar system in order.", "Which of them are gas giants?"),
    ("Explain in two sentences what a hash table is.", "Give a one-line Python example of one."),
]


# MAT of the second turns at budget 8, each floor keeping 80% of the measured excess over 1 (measured:
# lookup 2.656, hybrid 2.606, hybrid seeded 2.250; greedy or seeded with fixed budgets: no timing in it)
MAT_FLOORS = {"lookup": 2.32, "hybrid": 2.28, "hybrid-seeded": 2.00}


def second_turns(generator: Generator, **options) -> list[tuple[list[dict], Generation]]:
    """Each conversation's second turn after the first, on one generator: (messages, its Generation)."""
    turns = []
    for first, second in CONVERSATIONS:
        messages = [{"role": "user", "content": first}]
        reply = generator.generate(messages, max_new_tokens=TOKENS, **options)
        messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": second}]
        turns.append((messages, generator.generate(messages, max_new_tokens=TOKENS, **options)))
    return turns


@pytest.mark.parametrize("drafter", slow_except(["lookup", "hybrid"], {"hybrid"}))
def test_a_second_turn_reuses_the_first_and_equals_a_cold_prefill(model, drafter) -> None:
    """Greedy, through lookup and hybrid: the second turn's prompt shares the first turn's prompt
    (and most of its answer) with the cache; tokens equal a fresh generator's (a cold prefill).
    The reused prefill runs fewer rows than a cold one, so logits may differ in the last bits;
    no reference position of these prompts is a near-tie, so the tokens must be equal. Drafts were
    accepted on the reused cache: MAT stays above the floor measured for each drafter."""
    warm = Generator(model, drafter=drafter, budget=8)
    turns = second_turns(warm)
    for messages, out in turns:
        prompt = warm.encode(messages)
        cached = out.stats.cached_prompt_tokens
        assert cached >= len(prompt) // 2, (drafter, cached, len(prompt))  # most of the prompt was kept
        cold = Generator(model, drafter="none").generate(messages, max_new_tokens=TOKENS)
        assert cold.stats.cached_prompt_tokens == 0
        assert out.token_ids == cold.token_ids, (drafter, messages[-1]["content"])
    print(f"MAT reuse {drafter}: {mean_accepted([out for _, out in turns]):.3f}")
    assert mean_accepted([out for _, out in turns]) > MAT_FLOORS[drafter]


@pytest.mark.slow
def test_seeded_sampling_after_reuse_equals_a_cold_prefill(model) -> None:
    options = dict(temperature=0.8, top_p=0.95, seed=3)
    warm = Generator(model, drafter="hybrid", budget=8)
    turns = second_turns(warm, **options)
    for messages, out in turns:
        assert out.stats.cached_prompt_tokens > 0
        assert out.token_ids == Generator(model, drafter="none").generate(messages, max_new_tokens=TOKENS,
                                                                          **options).token_ids
    print(f"MAT reuse seeded: {mean_accepted([out for _, out in turns]):.3f}")
    assert mean_accepted([out for _, out in turns]) > MAT_FLOORS["hybrid-seeded"]


class Holding:
    """A stand-in backend whose cache holds a given token prefix."""

    name, chain_only, profile_key = "holding", False, "holding"

    def __init__(self, held: list[int]) -> None:
        self.held = np.array(held)

    def cached_prefix(self, prompt_ids: np.ndarray) -> int:
        n = min(self.held.size, prompt_ids.size - 1)
        differ = np.flatnonzero(self.held[:n] != prompt_ids[:n])
        return int(differ[0]) if differ.size else n

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_pool_hands_out_the_backend_holding_the_longest_prefix() -> None:
    backends = iter([Holding([1, 2, 3, 4, 5]), Holding([1, 2, 9]), Holding([7, 7])])
    pool = BackendPool(lambda: next(backends), max_idle=3)
    held = [pool.acquire(), pool.acquire(), pool.acquire()]  # the first one made, then two new ones
    for backend in held:
        pool.release(backend)
    assert pool.acquire(np.array([1, 2, 3, 4, 6, 6])) is held[0]
    assert pool.acquire(np.array([7, 7, 1])) is held[2]
    assert pool.acquire(np.array([5, 5])) is held[1]  # nothing shared: whichever is left
