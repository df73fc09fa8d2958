"""Trees of several requests verified in one forward get exactly their solo logits and tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaspec import Generator
from adaspec.backends.hf_batch import BatchRunner
from adaspec.tree import DraftTree


@pytest.fixture(scope="module")
def runner(model):
    attention = model.model.config._attn_implementation
    yield BatchRunner(model.model)  # switches the model to its SDPA-per-request attention
    model.model.set_attn_implementation(attention)  # other tests get the model as it was


def random_tree(rng: np.random.Generator, size: int, vocab: int) -> DraftTree:
    parents = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, size)])  # [n]
    return DraftTree(rng.integers(0, vocab, size), parents)


def prefilled(model, length: int, seed: int):
    backend = model.new_backend()
    backend.prefill_logits(np.random.default_rng(seed).integers(0, model.vocab_size, length))
    return backend


def test_the_start_up_check_passes_on_this_machine(runner, model) -> None:
    assert runner.check_exact(model.new_backend) is None


@pytest.mark.parametrize("trial", range(2))
def test_a_batch_gives_every_request_its_solo_logits(runner, model, trial) -> None:
    rng = np.random.default_rng(trial)
    lengths = [int(n) for n in rng.integers(3, 300, 5)]  # cache lengths unlike each other
    trees = [random_tree(rng, int(rng.integers(1, 13)), model.vocab_size) for _ in lengths]
    solo = [runner.tree_logits([prefilled(model, n, i)], [tree])[0] for i, (n, tree) in enumerate(zip(lengths, trees))]
    together = runner.tree_logits([prefilled(model, n, i) for i, n in enumerate(lengths)], trees)
    for alone, batched in zip(solo, together):
        assert torch.equal(alone, batched)


def test_a_batch_bigger_than_one_forward_is_split(runner, model) -> None:
    assert runner.split([8] * 9) == [list(range(8)), [8]]
    assert runner.split([40, 30, 20]) == [[0], [1, 2]]
    chain = DraftTree(np.zeros(40, dtype=np.int64), np.arange(-1, 39))  # [40] nodes
    with pytest.raises(ValueError, match="split"):
        runner.tree_logits([prefilled(model, 5, 0), prefilled(model, 5, 1)], [chain, chain])


def test_requests_stepped_together_equal_their_solo_runs_through_the_runner(runner, model) -> None:
    prompts = ["Write a Python function that reverses a list.", "Name three colours.", "Why do cats purr?"]
    generator = Generator(model, drafter="hybrid")

    def run(group: list[str], seeds: list[int]) -> list[list[int]]:
        requests = [generator.open(p, max_new_tokens=32, temperature=0.7 if s else 0.0, seed=s or None)
                    for p, s in zip(group, seeds)]
        for request in requests:
            request.start()
        while not all(r.finished for r in requests):
            live = [r for r in requests if not r.finished]
            drafts = [r.draft() for r in live]
            outputs = runner.verify([r.backend for r in live], [t for t, _ in drafts], [p for _, p in drafts])
            for request, (tree, _), verified in zip(live, drafts, outputs):
                request.finish(tree, verified, 0.0)
        for request in requests:
            request.close()
        return [r.result().token_ids for r in requests]

    seeds = [0, 5, 0]  # greedy, sampled, greedy
    alone = [run([p], [s])[0] for p, s in zip(prompts, seeds)]
    assert run(prompts, seeds) == alone
