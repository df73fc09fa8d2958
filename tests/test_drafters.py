"""Drafters on token ids alone: lookup matching, Token Recycling's table and template."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaspec.drafters import StepFeedback, make_drafter
from adaspec.drafters.base import DraftRequest
from adaspec.drafters.lookup import LookupConfig, PromptLookupDrafter, continuations, recent_matches
from adaspec.drafters.recycling import RecyclingConfig, TokenRecyclingDrafter, build_template
from adaspec.errors import AdaspecError
from adaspec.tree import DraftTree


def no_duplicate_siblings(tree: DraftTree) -> bool:
    pairs = list(zip(tree.parents[1:].tolist(), tree.tokens[1:].tolist()))
    return len(pairs) == len(set(pairs))


def find_continuations(context: np.ndarray, ngram: int, max_matches: int, max_depth: int) -> list[np.ndarray]:
    return continuations(context, recent_matches(context, ngram, max_matches)[ngram], max_depth)


def test_find_continuations_most_recent_first() -> None:
    context = np.array([1, 2, 3, 9, 1, 2, 4, 8, 1, 2])
    found = find_continuations(context, ngram=2, max_matches=5, max_depth=3)
    assert [f.tolist() for f in found] == [[4, 8, 1], [3, 9, 1]]
    assert find_continuations(context, ngram=3, max_matches=5, max_depth=3) == []


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(1, 5), st.integers(1, 4), st.integers(1, 6))
def test_find_continuations_equals_a_brute_force_search(tokens, ngram, max_matches, max_depth) -> None:
    context = np.array(tokens, dtype=np.int64)  # [L] a small alphabet: many repeats and overlaps
    suffix = tokens[-ngram:] if len(tokens) > ngram else None
    expected = []
    for start in range(len(tokens) - ngram - 1, -1, -1):  # every earlier window that has a successor
        if tokens[start : start + ngram] == suffix:
            expected.append(tokens[start + ngram : start + ngram + max_depth])
    found = find_continuations(context, ngram, max_matches, max_depth)
    assert [f.tolist() for f in found] == expected[:max_matches]


def test_lookup_prefers_the_longest_match() -> None:
    context = np.array([5, 1, 2, 7, 7, 3, 1, 2, 8, 8, 5, 1, 2])
    drafter = PromptLookupDrafter(LookupConfig(max_ngram=3, max_matches=1, max_depth=2))
    tree = drafter.propose(context, budget=3)
    # "5 1 2" occurred at the start, followed by "7 7"; the 2-gram "1 2" would say "8 8" first
    assert tree.tokens.tolist() == [2, 7, 7]
    assert tree.parents.tolist() == [-1, 0, 1]


def test_lookup_without_a_match_proposes_only_the_root() -> None:
    tree = PromptLookupDrafter().propose(np.array([1, 2, 3, 4]), budget=8)
    assert tree.size == 1 and tree.tokens[0] == 4


@settings(max_examples=50)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=60), st.integers(1, 20))
def test_lookup_trees_are_valid(context, budget) -> None:
    tree = PromptLookupDrafter().propose(np.array(context), budget)
    assert tree.size <= budget and tree.tokens[0] == context[-1]
    assert no_duplicate_siblings(tree)


def test_template_is_best_first_and_prefix_closed() -> None:
    template = build_template(np.array([0.6, 0.2, 0.1]), size=20, max_depth=5)
    assert template.parents[0] == -1
    assert all(template.parents[i] < i for i in range(1, 20))
    probs = np.array([0.6, 0.2, 0.1])
    path_prob = np.ones(20)
    for i in range(1, 20):
        path_prob[i] = path_prob[template.parents[i]] * probs[template.ranks[i]]
    assert np.all(np.diff(path_prob) <= 1e-12)  # decreasing: any prefix is the best tree of its size
    # the first nodes are the rank-0 chain 0.6, 0.36, then rank 1 at the root (0.2)
    assert template.ranks[1:3].tolist() == [0, 0] and template.parents[1:3].tolist() == [0, 1]


def feedback_for(tree: DraftTree, topk: np.ndarray, accepted: list[int], next_token: int) -> StepFeedback:
    return StepFeedback(tree, np.array(accepted), next_token, topk, np.full(topk.shape, 0.1, dtype=np.float32))


def test_recycling_learns_from_every_node_and_drafts_from_its_table() -> None:
    drafter = TokenRecyclingDrafter(vocab_size=50, config=RecyclingConfig(feedback_width=3))
    assert drafter.propose(np.array([4, 7]), budget=8).size == 1  # nothing learned yet
    tree = DraftTree(np.array([7, 11]), np.array([-1, 0]))
    topk = np.array([[11, 12, 13], [21, 22, 23]])
    drafter.observe(feedback_for(tree, topk, accepted=[0, 1], next_token=21))
    assert drafter.candidates[7].tolist() == [11, 12, 13]
    assert drafter.candidates[11].tolist() == [21, 22, 23]
    draft = drafter.propose(np.array([1, 7]), budget=8)
    assert draft.tokens[0] == 7 and draft.size <= 8 and no_duplicate_siblings(draft)
    assert set(draft.tokens[draft.depth == 1].tolist()) <= {11, 12, 13}
    assert set(draft.tokens[draft.depth == 2].tolist()) <= {21, 22, 23}
    assert 11 in draft.tokens[draft.depth == 1] and 21 in draft.tokens[draft.depth == 2]


def test_recycling_rank_statistics_count_what_the_model_said() -> None:
    drafter = TokenRecyclingDrafter(vocab_size=50, config=RecyclingConfig(feedback_width=3))
    drafter.candidates[7] = [11, 12, 13]
    tree = DraftTree(np.array([7, 12]), np.array([-1, 0]))
    drafter.observe(feedback_for(tree, np.array([[12, 11, 13], [1, 2, 3]]), accepted=[0, 1], next_token=1))
    assert drafter.rank_hits.tolist() == [0, 1, 0]  # after token 7 the model said 12: rank 1
    assert drafter.rank_trials == 1  # token 12 had no candidates yet, so it is no trial


@settings(max_examples=30)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_recycling_trees_are_valid_on_random_tables(seed, budget) -> None:
    rng = np.random.default_rng(seed)
    drafter = TokenRecyclingDrafter(vocab_size=30, config=RecyclingConfig(feedback_width=4))
    for _ in range(5):
        tokens = rng.integers(0, 30, size=6)
        tree = DraftTree(tokens, np.array([-1, 0, 0, 1, 2, 4]))
        topk = np.stack([rng.permutation(30)[:4] for _ in range(6)])
        drafter.observe(feedback_for(tree, topk, accepted=[0, 1], next_token=int(rng.integers(30))))
    draft = drafter.propose(rng.integers(0, 30, size=5), budget)
    assert draft.size <= budget and no_duplicate_siblings(draft)


def test_recycling_state_round_trips(tmp_path) -> None:
    drafter = TokenRecyclingDrafter(vocab_size=20, config=RecyclingConfig(feedback_width=2))
    drafter.candidates[3] = [4, 5]
    drafter.rank_hits[:] = [7, 2]
    drafter.rank_trials = 11
    drafter.save(tmp_path / "state.npz")
    restored = TokenRecyclingDrafter(vocab_size=20, config=RecyclingConfig(feedback_width=2))
    restored.load(tmp_path / "state.npz")
    assert np.array_equal(restored.candidates, drafter.candidates)
    assert restored.rank_hits.tolist() == [7, 2] and restored.rank_trials == 11
    with pytest.raises(ValueError, match="table shape"):
        TokenRecyclingDrafter(vocab_size=21, config=RecyclingConfig(feedback_width=2)).load(tmp_path / "state.npz")


def test_unknown_drafter_name_is_a_clear_error() -> None:
    with pytest.raises(AdaspecError, match="unknown drafter 'magic'"):
        make_drafter("magic", vocab_size=10)


def test_hybrid_puts_the_context_match_first_and_fills_with_recycled_branches() -> None:
    from adaspec.drafters import HybridDrafter

    recycling = TokenRecyclingDrafter(vocab_size=50, config=RecyclingConfig(feedback_width=2))
    recycling.candidates[9] = [3, 4]
    lookup = PromptLookupDrafter(LookupConfig(max_matches=1, max_depth=3))
    hybrid = HybridDrafter([lookup, recycling], shares=[0.5, 1.0])
    context = np.array([9, 3, 5, 7, 1, 9])  # "9" was followed by "3 5 7"
    tree = hybrid.propose(context, budget=5)
    assert tree.tokens.tolist() == [9, 3, 5, 4]  # lookup's 2 of 4 draft slots; recycling adds 4 (3 is shared)
    assert tree.parents.tolist() == [-1, 0, 1, 0]
    assert hybrid.feedback_width == 2


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=40), st.integers(1, 16), st.sampled_from(["recycling", "aded"]))
def test_hybrid_trees_are_valid(context, budget, learned) -> None:
    drafter = make_drafter(f"hybrid:learned={learned}", vocab_size=10)
    if learned == "recycling":
        drafter.parts[1].candidates[:] = np.arange(10)[::-1][: drafter.parts[1].config.feedback_width]
    else:
        drafter.parts[1].begin(DraftRequest(np.arange(10)[::-1]))  # a prompt to learn tri-grams from
    tree = drafter.propose(np.array(context), budget)
    assert tree.size <= budget and tree.tokens[0] == context[-1] and no_duplicate_siblings(tree)
    assert tree.scores is not None and np.all(tree.scores[1:] <= 1.0)
