"""Requests interleaved step by step on one Generator each get exactly what they get alone."""

from __future__ import annotations

import itertools

import pytest

from adaspec import Generator

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "List the planets of the solar system in order.",
    "Explain in two sentences why the sky is blue.",
]
TOKENS = 32


@pytest.fixture(scope="module")
def plain_greedy(model) -> list:
    """Each prompt's TOKENS greedy tokens from plain decoding, alone."""
    alone = Generator(model, drafter="none")
    return [alone.generate(p, max_new_tokens=TOKENS) for p in PROMPTS]


@pytest.mark.parametrize("drafter, sampling", [("hybrid", {}), ("recycling", {}), ("hybrid", {"temperature": 0.8, "top_p": 0.95})],
                         ids=["hybrid-greedy", "recycling-greedy", "hybrid-sampled"])
def test_requests_stepped_in_turn_equal_their_solo_runs(model, plain_greedy, drafter, sampling) -> None:
    seeds = [{"seed": 11 + i} if sampling else {} for i in range(len(PROMPTS))]
    if sampling:
        alone = Generator(model, drafter="none")
        expected = [alone.generate(p, max_new_tokens=TOKENS, **sampling, **s).token_ids for p, s in zip(PROMPTS, seeds)]
    else:
        expected = [out.token_ids for out in plain_greedy]

    shared = Generator(model, drafter=drafter, max_idle_backends=len(PROMPTS))
    requests = [shared.open(p, max_new_tokens=TOKENS, **sampling, **s) for p, s in zip(PROMPTS, seeds)]
    for request in requests:
        request.start()
    steps = 0
    while not all(r.finished for r in requests):  # one step of each unfinished request in turn
        for request in requests:
            if not request.finished:
                request.step()
                steps += 1
    for request in requests:
        request.close()
    assert steps > len(PROMPTS)  # they really were interleaved
    assert [r.result().token_ids for r in requests] == expected
    assert shared.pool.in_use == 0 and shared.pool.idle == len(PROMPTS)  # each request had a cache of its own


def test_two_streams_interleaved_on_one_generator_each_match_generate(model, plain_greedy) -> None:
    generator = Generator(model, drafter="hybrid", budget=8)
    expected = [out.text for out in plain_greedy[:2]]
    first, second = (generator.stream(p, max_new_tokens=TOKENS) for p in PROMPTS[:2])
    pieces: dict[int, list[str]] = {0: [], 1: []}
    for index, stream in itertools.chain.from_iterable(itertools.repeat(list(enumerate([first, second])), 64)):
        piece = next(stream, None)
        if piece is not None:
            pieces[index].append(piece)
    assert ["".join(pieces[0]), "".join(pieces[1])] == expected
    assert first.result is not None and first.result.text == expected[0]
