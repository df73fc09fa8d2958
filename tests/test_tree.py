"""DraftTree and TreeBuilder: validation, derived arrays, and trie building."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaspec.tree import DraftTree, TreeBuilder


@st.composite
def trees(draw, max_size: int = 24) -> DraftTree:
    size = draw(st.integers(1, max_size))
    parents = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, size)]
    tokens = draw(st.lists(st.integers(0, 50), min_size=size, max_size=size))
    return DraftTree(np.array(tokens), np.array(parents))


def test_root_only_tree() -> None:
    tree = DraftTree.root_only(7)
    assert tree.size == 1
    assert tree.depth.tolist() == [0]
    assert tree.ancestor_mask.tolist() == [[True]]


def test_depth_mask_and_paths_of_a_small_tree() -> None:
    #      0
    #    1   2
    #    3   5
    #    4
    tree = DraftTree(np.array([10, 20, 30, 40, 50, 60]), np.array([-1, 0, 0, 1, 3, 2]))
    assert tree.depth.tolist() == [0, 1, 1, 2, 3, 2]
    assert tree.path_to(4).tolist() == [0, 1, 3, 4]
    assert tree.path_to(5).tolist() == [0, 2, 5]
    assert tree.ancestor_mask[4].tolist() == [True, True, False, True, True, False]
    assert tree.child_of[(0, 30)] == 2 and (1, 30) not in tree.child_of


@pytest.mark.parametrize(
    "tokens, parents, message",
    [
        ([], [], "non-empty"),
        ([1, 2], [0, 0], "root"),
        ([1, 2, 3], [-1, 0, 2], "earlier node"),
        ([1, 2], [-1, -1], "earlier node"),
        ([1, -2], [-1, 0], "non-negative"),
        ([1, 2], [-1], "equal-length"),
    ],
)
def test_invalid_trees_are_rejected(tokens, parents, message) -> None:
    with pytest.raises(ValueError, match=message):
        DraftTree(np.array(tokens, dtype=np.int64), np.array(parents, dtype=np.int64))


@given(trees())
def test_derived_arrays_agree(tree: DraftTree) -> None:
    for node in range(tree.size):
        path = tree.path_to(node)
        assert path[0] == 0 and path[-1] == node
        assert len(path) == tree.depth[node] + 1
        assert all(tree.parents[b] == a for a, b in zip(path[:-1], path[1:]))
    prefix = tree.prefix(max(1, tree.size // 2))
    assert np.array_equal(prefix.ancestor_mask, tree.ancestor_mask[: prefix.size, : prefix.size])


@settings(max_examples=60)
@given(
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=6), min_size=1, max_size=6),
    st.integers(1, 20),
)
def test_builder_respects_budget_and_never_duplicates_siblings(paths, budget) -> None:
    builder = TreeBuilder(root_token=99, budget=budget)
    added = [builder.add_path(p) for p in paths]
    tree = builder.build()
    assert tree.size <= budget
    siblings = list(zip(tree.parents[1:].tolist(), tree.tokens[1:].tolist()))
    assert len(siblings) == len(set(siblings))
    for path, count in zip(paths, added):  # every added prefix is a root path of the tree
        node = 0
        for token in path[:count]:
            node = tree.child_of[(node, token)]
    if sum(len(p) for p in paths) + 1 <= budget:
        assert added == [len(p) for p in paths]


def test_builder_rejects_zero_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        TreeBuilder(root_token=1, budget=0)


def test_the_best_chain_follows_the_heaviest_path_and_the_first_child_on_ties() -> None:
    #        0
    #      /   \
    #     1     2        weights: node 1 0.9 (then a leaf), node 2 0.5 -> 3 0.5 -> 4 0.5
    #           |
    #           3 - 4
    tree = DraftTree(np.array([9, 10, 11, 12, 13]), np.array([-1, 0, 0, 2, 3]))
    assert tree.best_chain(np.array([1.0, 0.9, 0.5, 0.5, 0.5])).tokens.tolist() == [9, 11, 12, 13]  # 1.5 beats 0.9
    assert tree.best_chain(np.array([1.0, 1.5, 0.5, 0.5, 0.5])).tokens.tolist() == [9, 10]  # a tie: the first child
    assert tree.best_chain(None).tokens.tolist() == tree.first_chain().tokens.tolist() == [9, 10]
    chain = tree.best_chain(np.array([1.0, 0.1, 0.5, 0.5, 0.5]))
    assert chain.parents.tolist() == [-1, 0, 1, 2] and chain.is_chain
