"""ADED's parts on token ids alone: the tri-gram table, the two tree builders, the drafter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaspec.drafters import StepFeedback, make_drafter, parse_drafter_spec
from adaspec.drafters.base import DraftRequest
from adaspec.drafters.aded import AdedConfig, AdedDrafter
from adaspec.drafters.tree_search import best_first_tree, mcts_tree
from adaspec.drafters.trigram import TrigramTable
from adaspec.errors import AdaspecError
from adaspec.tree import DraftTree

VOCAB = 50


def one_row(table: TrigramTable, key: int, tokens: list[int], probs: list[float], rate: float) -> None:
    table.update(np.array([key]), np.array([tokens]), np.array([probs], dtype=np.float32), rate)


def test_update_moves_a_row_towards_the_observation_and_old_evidence_decays() -> None:
    table = TrigramTable(VOCAB, capacity=16, slots=3)
    key = int(table.context_keys(np.array([1]), np.array([2]))[0])
    one_row(table, key, [7, 8], [0.6, 0.4], rate=1.0)
    ids, weights = table.successors(1, 2)
    assert ids.tolist() == [7, 8] and np.allclose(weights, [0.6, 0.4])
    one_row(table, key, [8, 9], [0.9, 0.1], rate=0.5)  # w <- 0.5 w + 0.5 p
    ids, weights = table.successors(1, 2)
    assert ids.tolist() == [8, 7, 9]  # sorted by weight
    assert np.allclose(weights, [0.65, 0.3, 0.05])
    for _ in range(20):  # 7 is never seen again: its weight decays geometrically
        one_row(table, key, [8], [1.0], rate=0.5)
    ids, weights = table.successors(1, 2)
    assert ids[0] == 8 and weights[0] > 0.99 and weights[ids.tolist().index(7)] < 1e-6


def test_a_full_row_replaces_its_weakest_successor_only_for_stronger_evidence() -> None:
    table = TrigramTable(VOCAB, capacity=16, slots=2)
    one_row(table, 5, [1, 2], [0.5, 0.3], rate=1.0)
    one_row(table, 5, [3], [0.1], rate=0.1)  # 0.01 < decayed 0.27: 3 does not get in
    assert table.successors(-1, 5)[0].tolist() == [1, 2]
    one_row(table, 5, [4], [1.0], rate=0.5)  # 0.5 beats 2's 0.135
    ids, weights = table.successors(-1, 5)
    assert ids.tolist() == [4, 1] and np.allclose(weights, [0.5, 0.225])


def test_trigram_rows_back_off_to_bigram_rows() -> None:
    table = TrigramTable(VOCAB, capacity=16, slots=4)
    one_row(table, int(table.context_keys(np.array([1]), np.array([2]))[0]), [3], [1.0], rate=1.0)
    one_row(table, 2, [4], [1.0], rate=1.0)  # bigram row of token 2
    assert table.successors(1, 2)[0].tolist() == [3]
    assert table.successors(9, 2)[0].tolist() == [4]  # unseen (9, 2): back off
    assert table.successors(-1, 2)[0].tolist() == [4]
    assert table.successors(1, 6)[0].size == 0


def test_the_cap_evicts_the_least_recently_updated_contexts() -> None:
    table = TrigramTable(VOCAB, capacity=8, slots=2)
    for token in range(8):
        one_row(table, token, [1], [1.0], rate=1.0)
    assert len(table) == 8
    one_row(table, 3, [2], [1.0], rate=1.0)  # refresh 3
    one_row(table, 20, [1], [1.0], rate=1.0)  # over the cap: keep the newest half
    assert len(table) <= 8
    kept = {token for token in range(VOCAB) if table.successors(-1, token)[0].size}
    assert {3, 20} <= kept and 0 not in kept and 1 not in kept


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, VOCAB - 1), st.floats(0.01, 1.0)), min_size=1, max_size=80),
       st.integers(1, 12))
def test_table_invariants_hold_under_any_updates(observations, capacity) -> None:
    table = TrigramTable(VOCAB, capacity=capacity, slots=3)
    for key, token, prob in observations:
        one_row(table, key, [token], [prob], rate=0.5)
        assert len(table) <= capacity
    stored = np.flatnonzero(table.keys >= 0)
    assert stored.size == len(table)
    for slot in stored:
        used = table.ids[slot] >= 0
        assert np.all(np.diff(table.weights[slot][used]) <= 0)  # sorted
        assert len(set(table.ids[slot][used].tolist())) == used.sum()  # unique successors
        assert table.weights[slot].sum() <= 1.0 + 1e-5  # a sub-probability distribution


def test_save_and_load_round_trip(tmp_path) -> None:
    table = TrigramTable(VOCAB, capacity=32, slots=3)
    for key in range(10):
        one_row(table, key * 7, [key, key + 1], [0.5, 0.25], rate=1.0)
    table.save(tmp_path / "table.npz")
    copy = TrigramTable(VOCAB, capacity=32, slots=3)
    copy.load(tmp_path / "table.npz")
    assert len(copy) == len(table)
    for key in range(10):
        assert copy.successors(-1, key * 7)[0].tolist() == table.successors(-1, key * 7)[0].tolist()
    with pytest.raises(ValueError, match="vocabulary"):
        TrigramTable(VOCAB + 1).load(tmp_path / "table.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a tri-gram table"):
        copy.load(tmp_path / "junk.npz")


def chain_table() -> TrigramTable:
    """Token 1 -> 2 (0.9) or 3 (0.1); 2 -> 4 (0.8) or 5 (0.2); 3 -> 6 (1.0); 4 -> 7 (0.5)."""
    table = TrigramTable(VOCAB, capacity=64, slots=4)
    for token, successors, probs in [(1, [2, 3], [0.9, 0.1]), (2, [4, 5], [0.8, 0.2]), (3, [6], [1.0]), (4, [7], [0.5])]:
        one_row(table, token, successors, probs, rate=1.0)
    return table


def build(table: TrigramTable, builder: str, budget: int, **options) -> tuple[DraftTree, np.ndarray]:
    tokens, parents, probs = np.empty(budget, np.int64), np.empty(budget, np.int64), np.empty(budget)
    arrays = (table.keys, table.ids, table.weights, table.vocab_size, -1, 1, budget, options.get("max_depth", 8), 4)
    if builder == "best-first":
        n = best_first_tree(*arrays, tokens, parents, probs)
    else:
        n = mcts_tree(*arrays, options.get("simulations", 64), 1.25, 19652.0, 2, tokens, parents, probs)
    return DraftTree(tokens[:n].copy(), parents[:n].copy()), probs[:n]


def test_best_first_takes_paths_in_order_of_probability() -> None:
    tree, probs = build(chain_table(), "best-first", budget=5)
    # 1 -> 2 (0.9) -> 4 (0.72) -> 7 (0.36) then 2 -> 5 (0.18); 3 (0.1) does not fit
    assert tree.tokens.tolist() == [1, 2, 4, 7, 5]
    assert tree.parents.tolist() == [-1, 0, 1, 2, 1]
    assert np.allclose(probs, [1.0, 0.9, 0.72, 0.36, 0.18])
    full, _ = build(chain_table(), "best-first", budget=20)
    assert sorted(full.tokens.tolist()) == [1, 2, 3, 4, 5, 6, 7]  # everything reachable, nothing more


def test_mcts_visits_the_probable_chain_most() -> None:
    tree, probs = build(chain_table(), "mcts", budget=4)
    assert tree.tokens.tolist()[:3] == [1, 2, 4]
    assert tree.parents.tolist()[:3] == [-1, 0, 1]
    shallow, _ = build(chain_table(), "mcts", budget=8, max_depth=1)
    assert shallow.depth.max() == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.floats(0.05, 1.0)), min_size=0, max_size=60),
       st.integers(1, 24), st.sampled_from(["best-first", "mcts"]), st.integers(1, 6), st.integers(1, 40))
def test_builders_return_valid_trees_within_budget(edges, budget, builder, max_depth, simulations) -> None:
    table = TrigramTable(VOCAB, capacity=64, slots=4)
    for token, successor, prob in edges:
        one_row(table, token, [successor], [prob], rate=0.5)
    first, _ = build(table, builder, budget, max_depth=max_depth, simulations=simulations)
    again, _ = build(table, builder, budget, max_depth=max_depth, simulations=simulations)
    assert first.size <= budget and first.tokens[0] == 1 and first.depth.max() <= max_depth
    pairs = list(zip(first.parents[1:].tolist(), first.tokens[1:].tolist()))
    assert len(pairs) == len(set(pairs))  # no duplicate siblings
    assert first.tokens.tolist() == again.tokens.tolist() and first.parents.tolist() == again.parents.tolist()


def feedback(tree: DraftTree, topk: list[list[int]], accepted: list[int], next_token: int,
             before_root: int = -1) -> StepFeedback:
    ids = np.array(topk, dtype=np.int64).reshape(len(topk), -1)
    probs = np.full(ids.shape, 1.0 / max(1, ids.shape[1]), dtype=np.float32)
    return StepFeedback(tree, np.array(accepted), next_token, ids, probs, before_root)


@pytest.mark.parametrize("builder", ["best-first", "mcts"])
def test_the_drafter_learns_the_verifiers_candidates_in_context(builder) -> None:
    drafter = AdedDrafter(VOCAB, AdedConfig(builder=builder, prompt_rate=0, accepted_rate=0, feedback_width=2))
    drafter.begin(DraftRequest(np.array([3, 4])))
    tree = DraftTree(np.array([9, 11]), np.array([-1, 0]))
    drafter.observe(feedback(tree, [[11, 12], [21, 22]], accepted=[0, 1], next_token=21, before_root=4))
    # learned: (4, 9) -> 11 / 12 and (9, 11) -> 21 / 22
    assert drafter.table.successors(4, 9)[0].tolist() == [11, 12]
    assert drafter.table.successors(9, 11)[0].tolist() == [21, 22]
    draft = drafter.propose(np.array([3, 4, 9]), budget=4)
    assert draft.tokens[0] == 9 and draft.size == 4
    assert set(draft.tokens[draft.depth == 1].tolist()) <= {11, 12}
    assert 21 in draft.tokens[draft.depth == 2]


def test_each_learning_source_can_be_switched_off() -> None:
    prompt = np.array([5, 6, 7, 5, 6])
    learns_prompt = AdedDrafter(VOCAB, AdedConfig(topk_rate=0, accepted_rate=0))
    learns_prompt.begin(DraftRequest(prompt))
    assert learns_prompt.propose(prompt, budget=4).tokens.tolist()[:3] == [6, 7, 5]
    silent = AdedDrafter(VOCAB, AdedConfig(topk_rate=0, accepted_rate=0, prompt_rate=0))
    assert silent.feedback_width == 0
    silent.begin(DraftRequest(prompt))
    silent.observe(feedback(DraftTree(np.array([6]), np.array([-1])), [[]], accepted=[0], next_token=7))
    assert len(silent.table) == 0
    accepts = AdedDrafter(VOCAB, AdedConfig(topk_rate=0, prompt_rate=0))
    accepts.begin(DraftRequest(np.array([1, 2])))
    accepts.observe(feedback(DraftTree(np.array([3, 4]), np.array([-1, 0])), [[], []], accepted=[0, 1], next_token=8,
                            before_root=2))
    assert accepts.table.successors(3, 4)[0].tolist() == [8]  # from the output 2 3 4 8
    assert accepts.table.successors(2, 3)[0].tolist() == [4]


def test_drafter_state_saves_and_loads_as_a_prior(tmp_path) -> None:
    drafter = AdedDrafter(VOCAB)
    drafter.begin(DraftRequest(np.array([1, 2, 3, 1, 2, 3, 1])))
    drafter.save(tmp_path / "state.npz")
    fresh = make_drafter(f"aded:prior_path={tmp_path / 'state.npz'}", VOCAB)
    context = np.array([3, 1])
    assert fresh.propose(context, 6).tokens.tolist() == drafter.propose(context, 6).tokens.tolist()
    with pytest.raises(AdaspecError, match="aded"):
        make_drafter(f"aded:prior_path={tmp_path / 'missing.npz'}", VOCAB)


def test_drafter_specs_override_config_fields() -> None:
    name, config = parse_drafter_spec("aded:builder=mcts,simulations=16,topk_rate=0")
    assert name == "aded" and config.builder == "mcts" and config.simulations == 16 and config.topk_rate == 0.0
    assert parse_drafter_spec("lookup:min_ngram=2")[1].min_ngram == 2
    assert parse_drafter_spec("aded") == ("aded", None)
    for bad, message in [("aded:color=red", "key=value"), ("aded:simulations=many", "must be a int"),
                         ("aded:builder=magic", "unknown ADED builder"), ("hybrid:learned=oracle", "learned must be"),
                         ("aded:topk_rate=2", "must lie in"), ("magic", "unknown drafter"), ("none:x=1", "takes no options")]:
        with pytest.raises(AdaspecError, match=message):
            parse_drafter_spec(bad)
