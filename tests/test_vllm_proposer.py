"""The vLLM proposer's own logic, without vLLM: row ownership, chain sizing, settings.

The batch is simulated as vLLM 0.32's runner keeps it (``vllm_sim``): persistent buffers with
stale tokens past each row, rows reused and condensed as requests finish and start, prefill chunks,
preemption, and calls the runner skips. The real engine is exercised by ``test_vllm.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import adaspec.integrations.vllm as vllm_proposer
from adaspec.errors import AdaspecError
from adaspec.integrations.vllm import AdaspecProposer, engine_args
from adaspec.integrations.vllm_config import read_settings
from adaspec.integrations.vllm_rows import RowTracker
from adaspec.integrations.vllm_sizing import PRIOR_TOKEN_SHARE, ChainSizer, StepCost
from adaspec.tree import DraftTree, Source
from vllm_sim import SimEngine, SimRequest

VOCAB = 1000


def make_proposer(monkeypatch, k: int = 8, **adaspec_settings) -> AdaspecProposer:
    """The proposer as vLLM builds it, from a config of the shape it reads."""
    monkeypatch.setattr(vllm_proposer, "installed_vllm_version", lambda: "0.32.0")
    config = SimpleNamespace(
        speculative_config=SimpleNamespace(num_speculative_tokens=k),
        model_config=SimpleNamespace(max_model_len=512, get_vocab_size=lambda: VOCAB),
        additional_config={"adaspec": adaspec_settings} if adaspec_settings else {},
    )
    return AdaspecProposer(config)


def request(name: str, seed: int, period: int = 24, max_new: int = 40, chunks: int = 1) -> SimRequest:
    """A request whose prompt is a random period twice; the model goes on repeating it."""
    prompt = np.random.default_rng(seed).integers(1, VOCAB, size=period).astype(np.int64)
    return SimRequest(name, np.tile(prompt, 2), max_new, prefill_chunks=chunks)


def check_ownership(engine: SimEngine, proposer: AdaspecProposer, owner: dict[str, int], stable: bool = True) -> None:
    """After a call: every decoding row has a state of its own holding exactly that row's tokens,
    and (``stable``) a request keeps one state for its life, which no other request ever gets."""
    live = iter(proposer.tracker.live)
    now = []
    for row, req in enumerate(engine.rows):
        if req.prefill_chunks:
            continue
        state = next(live)
        now.append(state.id)
        assert np.array_equal(state.context, engine.token_ids[row, : engine.num_tokens[row]]), f"row {row} ({req.id})"
        if stable:
            assert owner.setdefault(req.id, state.id) == state.id, f"{req.id} changed state"
    assert len(now) == len(set(now)), "two rows shared a state"
    ids = list(owner.values())
    assert len(ids) == len(set(ids)), "two requests shared a state"


def test_rows_follow_their_requests_through_reuse_and_condensing(monkeypatch) -> None:
    """12 requests of different lengths through 4 rows: they start and finish mid-batch, rows are
    reused and condensed, prompts arrive in chunks; every request keeps its own state, gets one,
    and drafts are accepted (the text repeats, so copying pays)."""
    proposer = make_proposer(monkeypatch, budget=8)
    engine = SimEngine(proposer, max_rows=4)
    for i in range(12):
        engine.submit(request(f"r{i}", seed=i, max_new=10 + 7 * i, chunks=1 + i % 3))
    owner: dict[str, int] = {}
    while engine.rows or engine.waiting:
        engine.step()
        check_ownership(engine, proposer, owner)
    assert len(engine.finished) == 12
    assert proposer.stats.new_states == 12 and len(owner) == 12  # one state per request, none rebuilt
    assert proposer.stats.ended == 12 and proposer.stats.resumed == 0
    assert proposer.stats.accepted > 0.5 * proposer.stats.drafted > 0
    assert any(len(set(rows)) == 4 and rows != later for rows, later in zip(engine.row_history, engine.row_history[1:]))


def test_identical_prompts_keep_their_own_states(monkeypatch) -> None:
    """Three requests with one prompt (greedy: the same text): each row keeps a state of its own.
    When one finishes and the batch condenses, the rows' contents cannot tell which request is
    which, so a state may pass between requests whose whole contexts are identical (drafting from
    either is the same); never between different contexts (checked in every test here)."""
    proposer = make_proposer(monkeypatch, budget=8)
    engine = SimEngine(proposer, max_rows=4)
    for i in range(3):
        engine.submit(request(f"same{i}", seed=5, max_new=20 + 10 * i))
    while engine.rows or engine.waiting:
        engine.step()
        check_ownership(engine, proposer, {}, stable=False)
    assert proposer.stats.new_states == 3 and proposer.stats.ended == 3


def running(monkeypatch, requests: int, max_new: int, steps: int) -> tuple[AdaspecProposer, SimEngine]:
    """A proposer at budget 8 in a 4-row simulated engine, ``requests`` requests submitted and
    ``steps`` steps taken."""
    proposer = make_proposer(monkeypatch, budget=8)
    engine = SimEngine(proposer, max_rows=4)
    for i in range(requests):
        engine.submit(request(f"r{i}", seed=i, max_new=max_new))
    for _ in range(steps):
        engine.step()
    return proposer, engine


def test_a_preempted_request_resumes_its_state(monkeypatch) -> None:
    proposer, engine = running(monkeypatch, requests=3, max_new=60, steps=5)
    state_before = proposer.tracker.live[1].id
    preempted = engine.preempt(1)
    engine.waiting.remove(preempted)
    engine.step()  # a step without it: its row is gone
    assert proposer.stats.ended == 1
    engine.waiting.insert(0, preempted)
    engine.step()  # back, in the last row, after prefilling its whole context again
    owner: dict[str, int] = {}
    check_ownership(engine, proposer, owner)
    assert owner[preempted.id] == state_before
    assert proposer.stats.resumed == 1 and proposer.stats.new_states == 3
    engine.run()
    assert proposer.stats.new_states == 3


def test_calls_the_runner_skips_rebuild_states_from_the_rows(monkeypatch) -> None:
    """Near max_model_len vLLM skips the proposer for the whole batch: rows move on by several
    tokens unseen. The proposer must notice (no state of the last call continues) and start over
    from the rows' tokens, never drafting from a stale context."""
    proposer, engine = running(monkeypatch, requests=2, max_new=80, steps=4)
    engine.step(call_proposer=False)
    engine.step(call_proposer=False)
    engine.step()
    assert proposer.stats.new_states == 4  # both rows rebuilt
    for row, state in enumerate(proposer.tracker.live):
        assert np.array_equal(state.context, engine.token_ids[row, : engine.num_tokens[row]])
    engine.run()
    assert proposer.stats.accepted > 0


def test_prefill_chunks_get_no_draft_and_chains_respect_k(monkeypatch) -> None:
    proposer = make_proposer(monkeypatch, k=3, budget=3)
    engine = SimEngine(proposer, max_rows=2, k=3)
    engine.submit(request("long", seed=1, chunks=3))
    assert engine.step() == [[]]
    assert engine.step() == [[]]
    engine.run()  # SimEngine checks every chain against k and that prefill chunks get none
    assert proposer.stats.drafted > 0


def test_tracker_rejects_buffers_smaller_than_the_batch() -> None:
    with pytest.raises(ValueError, match="live rows"):
        RowTracker().match([[1], [2]], np.array([3]), np.zeros((1, 8), dtype=np.int32))


def test_tracker_park_is_bounded() -> None:
    tracker = RowTracker(park_size=2)
    buffer = np.arange(40, dtype=np.int32).reshape(4, 10)
    tracker.match([[3], [13], [23], [33]], np.array([4, 4, 4, 4]), buffer)
    _, vanished = tracker.match([], np.zeros(4, dtype=np.int32), buffer)
    assert len(vanished) == 4 and len(tracker.parked) == 2


def test_step_cost_recovers_intercepts_and_slope() -> None:
    cost = StepCost()
    rng = np.random.default_rng(0)
    for _ in range(400):
        batch = int(rng.choice([1, 8]))
        drafted = int(rng.integers(0, 9 * batch))
        cost.observe(batch, drafted, (50.0 if batch == 1 else 90.0) + 3.0 * drafted + rng.normal(0, 0.5))
    assert cost.token_ms() == pytest.approx(3.0, rel=0.05)
    assert cost.base_ms(1) == pytest.approx(50.0, rel=0.03)
    assert cost.base_ms(8) == pytest.approx(90.0, rel=0.03)
    assert cost.base_ms(7) == pytest.approx(90.0, rel=0.03)  # the nearest size measured


def test_step_cost_keeps_its_prior_slope_without_variation() -> None:
    cost = StepCost()
    for _ in range(50):
        cost.observe(1, 0, 60.0)
    cost.observe(1, 0, 1e6)  # an idle engine, not a step: ignored
    assert cost.token_ms() == pytest.approx(PRIOR_TOKEN_SHARE * 60.0)
    assert cost.base_ms(1) == pytest.approx(60.0)


def chain(length: int, score: float = 0.9) -> DraftTree:
    return DraftTree(np.arange(length + 1), np.arange(-1, length), score ** np.arange(length + 1),
                     np.full(length + 1, Source.CONTEXT))


def trained_sizer(accepted_share: float, token_ms: float) -> ChainSizer:
    sizer = ChainSizer()
    for step in range(200):
        sizer.cost.observe(1, step % 8, 60.0 + token_ms * (step % 8))
        sizer.learn(chain(8), 8 if step % 100 < 100 * accepted_share else 0, explored=False)
    return sizer


def test_sizer_drafts_long_chains_where_they_pay_and_none_where_they_do_not() -> None:
    good = trained_sizer(accepted_share=0.95, token_ms=1.0)
    lengths, explored = good.lengths([chain(8)], [0])
    assert lengths == [8] and not explored
    bad = trained_sizer(accepted_share=0.0, token_ms=6.0)
    assert bad.lengths([chain(8)], [0]) == ([0], set())
    assert bad.lengths([chain(8)], [bad.exploration.wait]) == ([1], {0})  # an exploration now and then
    bad.learn(chain(1), 0, explored=True)
    assert bad.exploration.wait == 2 * bad.exploration.every


def test_sizer_drafts_less_per_row_in_a_bigger_batch() -> None:
    """A drafted token slows every row of the step; at batch 8 the same acceptance buys less."""
    sizer = ChainSizer()
    for step in range(300):
        for batch in (1, 8):
            sizer.cost.observe(batch, step % 9, 60.0 * (1 + (batch - 1) * 0.2) + 4.0 * (step % 9))
        sizer.learn(chain(8), step % 9, explored=False)
    alone = sum(sizer.lengths([chain(8)], [0])[0])
    together = sum(sizer.lengths([chain(8)] * 8, [0] * 8)[0]) / 8
    assert alone > together


def test_auto_budget_returns_no_draft_where_nothing_matches(monkeypatch) -> None:
    """Text that never repeats: the suffix drafter finds nothing to copy, the proposer returns
    empty chains (vLLM then decodes plainly)."""
    proposer = make_proposer(monkeypatch)
    engine = SimEngine(proposer, max_rows=2)
    tokens = np.random.default_rng(3).permutation(np.arange(1, VOCAB))  # no token twice
    engine.submit(SimRequest("fresh", tokens[:100], 150, output=tokens[100:250]))
    engine.run()
    assert proposer.stats.drafted == 0


def test_engine_args_and_settings() -> None:
    args = engine_args("lookup:max_ngram=6", budget=4, num_speculative_tokens=6)
    assert args["speculative_config"] == {"method": "custom_class", "model": "adaspec.integrations.vllm.AdaspecProposer",
                                          "num_speculative_tokens": 6}
    assert args["additional_config"] == {"adaspec": {"drafter": "lookup:max_ngram=6", "budget": 4}}
    settings = read_settings(args["additional_config"], {}, "suffix")
    assert (settings.drafter, settings.budget) == ("lookup:max_ngram=6", 4)
    from_env = read_settings({}, {"ADASPEC_VLLM_DRAFTER": "lookup", "ADASPEC_VLLM_BUDGET": "3"}, "suffix")
    assert (from_env.drafter, from_env.budget) == ("lookup", 3)
    assert read_settings(None, {}, "suffix").drafter == "suffix"


@pytest.mark.parametrize("kwargs, message", [
    ({"drafter": "nope"}, "unknown drafter 'nope'"),
    ({"drafter": "suffix:max_depth=0"}, "max_depth must lie in 1..256"),
    ({"budget": 9}, "from 1 to num_speculative_tokens \\(8\\)"),
    ({"budget": "big"}, "budget must be 'auto' or a whole number"),
    ({"num_speculative_tokens": 0}, "num_speculative_tokens must be a whole number from 1 to 64"),
])
def test_engine_args_reject_bad_settings_in_one_line(kwargs, message) -> None:
    with pytest.raises(AdaspecError, match=message) as error:
        engine_args(**kwargs)
    assert "\n" not in str(error.value)


def test_unknown_additional_config_key_is_refused(monkeypatch) -> None:
    with pytest.raises(AdaspecError, match="unknown adaspec setting 'drafters'"):
        make_proposer(monkeypatch, drafters="suffix")
