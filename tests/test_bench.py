"""Benchmark harness pieces: prompt loaders and the metric arithmetic on hand-made records."""

from __future__ import annotations

import pytest

from adaspec import AdaspecError
from adaspec.bench.metrics import RunRecord, acceptance_by_depth, first_difference, mean_accepted_tokens, summarise
from adaspec.bench.prompts import CATEGORIES, load_prompts


def record(method, prompt="p1", category="math", tokens=10, seconds=1.0, steps=None, per_pos=(), ids=None, turn=0):
    return RunRecord(prompt, category, method, turn, tokens, seconds, list(ids if ids is not None else range(tokens)),
                     steps, list(per_pos))


def test_every_category_loads_offline_with_unique_ids() -> None:
    for category in CATEGORIES:
        prompts = load_prompts([category])
        assert prompts, category
        assert len({p.id for p in prompts}) == len(prompts)
        assert all(p.category == category and p.turns and all(t.strip() for t in p.turns) for p in prompts)
    assert len(load_prompts(["mt-bench"])) == 80 and all(len(p.turns) == 2 for p in load_prompts(["mt-bench"]))
    assert len(load_prompts(["humaneval"])) == 164 and not load_prompts(["humaneval"])[0].chat


def test_limit_and_bad_options() -> None:
    assert len(load_prompts(["math", "humaneval"], limit=2)) == 4
    with pytest.raises(AdaspecError, match="unknown category 'poetry'"):
        load_prompts(["poetry"])
    with pytest.raises(AdaspecError, match="limit"):
        load_prompts(["math"], limit=0)


def test_mat_and_acceptance_are_token_weighted() -> None:
    runs = [record("x", steps=4, per_pos=[3, 1]), record("x", prompt="p2", steps=6, per_pos=[2, 2, 1])]
    assert mean_accepted_tokens(runs) == pytest.approx(1 + 9 / 10)
    assert acceptance_by_depth(runs) == pytest.approx([0.5, 0.3, 0.1])
    assert mean_accepted_tokens([record("hf")]) is None


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2]) == 2


def test_summary_speedup_per_category_and_overall() -> None:
    runs = [
        record("none", "p1", "math", tokens=10, seconds=1.0, steps=10),
        record("none", "p2", "qa", tokens=20, seconds=2.0, steps=20),
        record("fast", "p1", "math", tokens=10, seconds=0.5, steps=4, per_pos=[4, 2]),
        record("fast", "p2", "qa", tokens=20, seconds=1.0, steps=10, per_pos=[8, 2], ids=[0] * 20),
    ]
    summary = summarise(runs)
    assert summary["fast"]["math"]["speedup"] == pytest.approx(2.0)
    assert summary["fast"]["overall"]["speedup"] == pytest.approx((30 / 1.5) / (30 / 3.0))
    assert summary["fast"]["overall"]["mat"] == pytest.approx(1 + 16 / 14)
    assert summary["fast"]["qa"]["differing_from_baseline"] == {"p2#0": 1}
    assert summary["fast"]["math"]["differing_from_baseline"] == {}
    assert summary["none"]["overall"]["speedup"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="baseline"):
        summarise(runs + [record("fast", "p3")])
