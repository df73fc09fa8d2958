"""The compiled suffix trie equals a plain Python construction of the same rules, node for node."""

from __future__ import annotations

import numpy as np
import pytest

from adaspec.drafters.suffix_index import SEPARATOR, SuffixIndex
from adaspec.drafters.suffix_tree import GrowthRules, SuffixTreeBuilder
from adaspec.tree import DraftTree, Source, TreeBuilder


def reference_grow(builder: TreeBuilder, index: SuffixIndex, query: np.ndarray, rules: GrowthRules, source: Source,
                   skip_from: int | None = None) -> None:
    """The rules of ``adaspec.drafters.suffix_tree``, written plainly over ``TreeBuilder``."""
    ends, lengths = index.matches(query, rules.max_match, skip_from)
    keep = lengths >= rules.min_match
    ends, lengths = ends[keep], lengths[keep]
    if ends.size == 0:
        return
    order = np.lexsort((-ends, -lengths))  # longest match first, then most recent
    depth = int(min(rules.max_depth, builder.budget - 1, 2 + rules.depth_per_match * int(lengths.max())))
    if depth <= 0:
        return
    follow = index.following(ends[order], depth)  # [m, depth]
    for row, length in zip(follow, lengths[order]):
        path = row[row != SEPARATOR]
        if path.size == 0:
            continue
        agree = np.cumprod(follow[:, : path.size] == path[None, :], axis=1).sum(axis=0)  # [d]
        reliability = length / (length + 1.0)
        scores = agree / len(follow) * reliability ** np.arange(1, path.size + 1)
        builder.add_path(path.tolist(), scores=scores.tolist(), source=source)
        if builder.full:
            return


def assert_same(tree: DraftTree, expected: DraftTree) -> None:
    assert tree.tokens.tolist() == expected.tokens.tolist()
    assert tree.parents.tolist() == expected.parents.tolist()
    assert tree.sources.tolist() == expected.sources.tolist()
    np.testing.assert_allclose(tree.scores, expected.scores, rtol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_the_compiled_trie_equals_the_plain_construction(seed) -> None:
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(3, 12))  # small vocabularies: many matches, shared prefixes, duplicates
    history, own = SuffixIndex(512, ways=4), SuffixIndex(512, ways=4)
    for _ in range(int(rng.integers(1, 6))):
        history.add_sequence(rng.integers(0, vocab, int(rng.integers(1, 80))))
    context = rng.integers(0, vocab, int(rng.integers(2, 120)))
    own.extend(context)
    rules = GrowthRules(max_match=int(rng.integers(1, 65)), min_match=int(rng.integers(1, 4)),
                        max_depth=int(rng.integers(1, 40)), depth_per_match=float(rng.choice([0.5, 2.0, 64.0])))
    budget = int(rng.integers(1, 65))
    query = context[-rules.max_match :]
    compiled, plain = SuffixTreeBuilder(int(context[-1]), budget), TreeBuilder(int(context[-1]), budget)
    for index, source, skip in ((own, Source.CONTEXT, own.written - 1), (history, Source.HISTORY, None)):
        compiled.grow(index, query, rules, source, skip)
        if not plain.full:
            reference_grow(plain, index, query, rules, source, skip)
    assert_same(compiled.build(), plain.build())
    assert_same(compiled.build().first_chain(), plain.build().subtree(chain_of(plain.build())))


def chain_of(tree: DraftTree) -> np.ndarray:
    """The first-child chain, from the tree's children lists."""
    path = [0]
    while tree.children[path[-1]]:
        path.append(tree.children[path[-1]][0])
    return np.array(path, dtype=np.int64)
