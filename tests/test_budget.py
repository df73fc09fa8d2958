"""The hardware-aware budget: cost profiles, acceptance calibration, and the tree-size choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaspec.budget import AcceptanceCalibrator, LatencyProfile, Reliability, TreeSizer, choose_nodes
from adaspec.budget.chooser import DOUBT, EXPLORE_SHARE, GAIN_MEMORY, LOOK_SHARE, MIN_DRAFT_SAMPLES
from adaspec.engine import Generator
from adaspec.errors import AdaspecError
from adaspec.tree import DraftTree

# a CPU-like curve: one node is cheap, 2-8 cost the same, then cost grows with size
CPU = LatencyProfile((1, 2, 8, 16, 32, 64), (48.0, 80.0, 80.0, 95.0, 125.0, 187.0))
# a GPU-like curve: flat up to 32 nodes
GPU = LatencyProfile((1, 32, 64), (10.0, 10.5, 14.0))


def brute_force_best(acceptance: np.ndarray, profile: LatencyProfile) -> int:
    """The number of draft nodes (taken best first) with the most expected tokens per ms."""
    ordered = np.sort(acceptance[1:])[::-1]
    rates = [(1 + ordered[:m].sum()) / profile.cost(np.array([m + 1]))[0] for m in range(ordered.size + 1)]
    return int(np.argmax(rates))


@pytest.mark.parametrize("profile", [CPU, GPU])
@pytest.mark.parametrize("level", [0.05, 0.3, 0.6, 0.9])
def test_choice_is_the_known_optimum(profile, level) -> None:
    chain = np.concatenate(([1.0], level ** np.arange(1, 40)))  # a chain: node d accepted with level ** d
    keep = choose_nodes(chain, profile)
    assert keep[0] == 0 and keep.size - 1 == brute_force_best(chain, profile)


def test_low_acceptance_falls_back_to_plain_decoding_and_high_acceptance_takes_a_big_tree() -> None:
    siblings = np.concatenate(([1.0], np.full(20, 0.04)))  # 20 guesses for one position: 0.8 expected tokens
    assert choose_nodes(siblings, CPU).tolist() == [0]  # 1.8 tokens / 99 ms lose to 1 token / 48 ms
    assert choose_nodes(siblings, GPU).size == 21  # near-free nodes: keep them all
    strong = np.concatenate(([1.0], 0.95 ** np.arange(1, 64)))
    assert choose_nodes(strong, CPU).size > 8


def test_choice_keeps_parents_with_their_children() -> None:
    tree = DraftTree(np.array([5, 6, 7, 8, 9, 10]), np.array([-1, 0, 1, 0, 3, 2]))
    acceptance = np.array([1.0, 0.9, 0.8, 0.5, 0.4, 0.7])
    keep = choose_nodes(acceptance, GPU)
    sub = tree.subtree(keep)  # raises if a parent were missing
    assert sub.size == 6
    keep = choose_nodes(acceptance, LatencyProfile((1, 3, 4, 6), (10.0, 10.0, 30.0, 30.0)))
    assert keep.tolist() == [0, 1, 2]


def test_profile_interpolates_between_measured_sizes_and_keeps_kernel_dips() -> None:
    dipping = LatencyProfile((1, 2, 4, 8), (50.0, 80.0, 78.0, 90.0))  # 2 rows slower than 4, as MKL does on CPU
    assert dipping.cost(np.array([1, 2, 3, 4, 6, 8])).tolist() == [50.0, 80.0, 79.0, 78.0, 84.0, 90.0]
    chain = np.array([1.0, 0.6, 0.05, 0.05, 0.05, 0.05])
    assert choose_nodes(chain, dipping).size == 4  # 4 nodes cost less than 2, so the two extra come free
    with pytest.raises(ValueError):
        LatencyProfile((2, 4), (1.0, 2.0))


def test_the_ceiling_is_the_best_fully_accepted_chain_and_no_sized_tree_beats_it() -> None:
    # SmolLM2 on llama.cpp's exact kernels on a 2-core AVX2 CPU (benchmarks/llamacpp-categories)
    exact_cpu = LatencyProfile((1, 2, 4, 8, 16, 32, 64), (7.9, 15.2, 23.7, 43.8, 82.9, 164.4, 371.9))  # [7] ms
    assert exact_cpu.speedup_if_all_accepted()[:3].tolist() == pytest.approx([1.0, 2 * 7.9 / 15.2, 4 * 7.9 / 23.7])
    assert exact_cpu.ceiling() == (pytest.approx(32 * 7.9 / 164.4), 32)  # 1.54x at best, whatever is drafted
    assert GPU.ceiling() == (pytest.approx(64 * 10.0 / 14.0), 64)
    nodes = np.arange(1, 65)  # [64] every size, costs between the measured ones interpolated
    assert (nodes * exact_cpu.ms[0] / exact_cpu.cost(nodes)).max() == pytest.approx(exact_cpu.ceiling()[0])


def test_profile_file_round_trip_makes_the_choice_deterministic(tmp_path) -> None:
    CPU.save(tmp_path / "cpu.json")
    loaded = LatencyProfile.load(tmp_path / "cpu.json")
    assert loaded == CPU
    acceptance = np.concatenate(([1.0], 0.7 ** np.arange(1, 30)))
    assert choose_nodes(acceptance, loaded).tolist() == choose_nodes(acceptance, CPU).tolist()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a latency profile"):
        LatencyProfile.load(tmp_path / "bad.json")


class TickingClock:
    """A fake CPU clock for the sizer: every reading is ``tick_ms`` later than the last."""

    def __init__(self, tick_ms: float) -> None:
        self.seconds = 0.0
        self.tick_s = tick_ms / 1000.0

    def __call__(self) -> float:
        self.seconds += self.tick_s
        return self.seconds


def chain(scores: list[float]) -> DraftTree:
    """A chain of draft nodes under a root, with the given scores (root's first)."""
    n = len(scores)
    return DraftTree(np.arange(1, n + 1), np.arange(-1, n - 1), scores=np.array(scores))


def test_calibration_learns_what_the_verifier_accepts() -> None:
    calibrator = AcceptanceCalibrator()
    tree = chain([1.0, 0.9, 0.8])
    before = calibrator.estimate(tree)
    assert before.tolist() == pytest.approx([1.0, 0.9, 0.8])  # nothing seen yet: the drafter's scores
    for step in range(200):  # the drafter is overconfident: depth 1 is accepted 1 time in 4, depth 2 never
        calibrator.update(tree, np.array([0, 1]) if step % 4 == 0 else np.array([0]))
    after = calibrator.estimate(tree)
    assert after[0] == 1.0
    assert after[1] == pytest.approx(0.25, abs=0.03) and after[2] < 0.05


def test_calibration_carries_overconfidence_to_unseen_scores_and_forgets_old_evidence() -> None:
    calibrator = AcceptanceCalibrator(memory=50)
    for _ in range(300):  # nodes scored 0.8 are accepted only a quarter as often as scored
        calibrator.update(chain([1.0, 0.8]), np.array([0, 1]) if _ % 5 == 0 else np.array([0]))
    unseen = calibrator.estimate(chain([1.0, 0.5]))[1]  # a score bin never verified
    assert unseen == pytest.approx(0.5 * 0.2 / 0.8, abs=0.03)  # scaled by the depth's observed ratio
    for _ in range(300):  # the text changes: now everything is accepted
        calibrator.update(chain([1.0, 0.8]), np.array([0, 1]))
    assert calibrator.estimate(chain([1.0, 0.8]))[1] > 0.95


def test_reliability_bins_predictions_and_reports_the_calibration_error() -> None:
    reliability = Reliability(bins=4)
    reliability.add(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0.0, 0.0, 1.0, 0.0]))
    report = reliability.to_dict()
    assert report["nodes"] == [2, 0, 0, 2]
    assert report["observed"] == [0.0, None, None, 0.5] and report["predicted"] == [0.1, None, None, 0.9]
    assert report["calibration_error"] == pytest.approx((0.2 + 0.8) / 4)


def test_sizer_skips_the_drafter_while_plain_wins_explores_and_backs_off() -> None:
    cheap_rows = LatencyProfile((1, 2, 3, 64), (10.0, 10.05, 10.08, 40.0))  # extra rows nearly free: explorations are cheap
    shared = TreeSizer(cheap_rows, explore_every=4, explore_max=16, explore_nodes=3)
    assert shared.shortest_wait == 4
    sizer = shared.begin("greedy")
    weak = chain([1.0, 0.002, 0.001, 0.0005])  # never worth a tree, even on this curve
    sizes, drafted = [], 0
    for _ in range(40):  # as Session.propose drives it
        if not sizer.wants_draft():
            sizer.skip()
            sizes.append(1)
            continue
        drafted += 1
        verified = sizer.size(weak, draft_ms=5.0)  # half a plain step: far too dear to look on every step
        sizes.append(verified.size)
        sizer.update(verified, np.array([0]))  # nothing is ever accepted
    explored = [i for i, size in enumerate(sizes) if size > 1]
    assert all(sizes[i] == 3 for i in explored)
    assert np.diff(explored).tolist() == [9, 17]  # waits of 4, then 8, then 16 plain steps
    assert shared.plain_steps == 40 - len(explored)
    # the drafter ran on the first steps, until its time was known, then only to explore (and once after each try)
    assert drafted == MIN_DRAFT_SAMPLES + 2 * len(explored)
    assert shared.begin("greedy").setting.wait == 16  # a new request inherits the backed-off wait
    sizer.since_tree = sizer.setting.wait  # force the next exploration, and let it succeed
    verified = sizer.size(weak)
    sizer.update(verified, np.array([0, 1]))
    assert sizer.setting.wait == 4


@pytest.mark.parametrize("draft_ms, every", [(0.04, 1), (0.19, 4), (0.99, 20)])
def test_a_plain_streak_looks_for_matches_as_often_as_half_a_percent_of_its_time_allows(draft_ms, every) -> None:
    plain_ms = 10.0
    sizer = TreeSizer(LatencyProfile((1, 2), (plain_ms, 2 * plain_ms)), clock=TickingClock(0.004)).begin("greedy")
    for _ in range(MIN_DRAFT_SAMPLES):
        sizer.update(sizer.size(DraftTree.root_only(3), draft_ms=draft_ms), np.array([0]))  # found nothing
    # a look costs the drafter's time and the sizer's own (one tick of the fake clock: 4 µs)
    assert sizer.setting.draft_ms == pytest.approx(draft_ms + 0.004)
    assert sizer.look_every() == math.ceil(sizer.setting.draft_ms / (LOOK_SHARE * plain_ms)) == every
    looks = []
    for _ in range(2 * every):
        looks.append(sizer.wants_draft())
        sizer.skip()
    assert sum(looks) == 2  # once per `every` steps of the streak (the wait for an exploration is far off)


def test_a_look_is_priced_with_the_sizers_own_time_and_only_for_later_looks() -> None:
    sizer = TreeSizer(CPU, clock=TickingClock(0.5)).begin("greedy")  # the sizer's choice takes 0.5 ms
    strong = chain([1.0, 0.95, 0.9, 0.85])
    for _ in range(MIN_DRAFT_SAMPLES):
        assert sizer.setting.draft_ms == 0.0  # until 3 looks are known, a look counts as free
        sizer.update(sizer.size(strong, draft_ms=2.0), np.arange(4))
    assert list(sizer.setting.draft_times) == pytest.approx([2.5] * MIN_DRAFT_SAMPLES)
    assert sizer.setting.draft_ms == pytest.approx(2.5)


def test_the_shortest_wait_between_explorations_is_priced_by_the_cost_curve() -> None:
    exact_cpu = LatencyProfile((1, 2, 4), (8.0, 15.4, 24.0))  # a second row costs 0.93 of a plain step
    assert TreeSizer(exact_cpu).shortest_wait == math.ceil(0.925 / EXPLORE_SHARE - 1e-9)  # explorations 0.5% of the time
    assert TreeSizer(GPU).shortest_wait == 16  # a second row is nearly free: the given shortest wait
    assert TreeSizer(exact_cpu, explore_max=32).explore_max == TreeSizer(exact_cpu).shortest_wait


def test_a_cold_tree_must_beat_plain_decoding_by_more_than_its_estimates_doubt() -> None:
    calibrator = AcceptanceCalibrator()
    tree = chain([1.0, 0.8])
    cold_variance = calibrator.estimate_with_variance(tree)[1][1]
    rng = np.random.default_rng(0)
    for _ in range(200):
        calibrator.update(tree, np.array([0, 1]) if rng.random() < 0.8 else np.array([0]))
    warm_variance = calibrator.estimate_with_variance(tree)[1][1]
    assert cold_variance > 0.05 and 0 < warm_variance < cold_variance / 10  # narrows with evidence
    optimistic = chain([1.0, 0.8, 0.64])  # 2.44 expected tokens
    exact_cpu = LatencyProfile((1, 2, 3), (8.0, 15.4, 19.0))  # for 2.37 plain steps: pays on paper only
    cold = TreeSizer(exact_cpu).begin("greedy")
    acceptance, variance = cold.calibrator.estimate_with_variance(optimistic)
    assert choose_nodes(acceptance, exact_cpu).size == 3
    assert choose_nodes(acceptance, exact_cpu, variance=variance, doubt=DOUBT).size == 1
    assert cold.size(optimistic).size == 1
    # where extra nodes are nearly free, the same doubt leaves the tree worth verifying
    assert TreeSizer(GPU).begin("greedy").size(optimistic).size == 3


def test_drafting_that_pays_for_itself_runs_every_step_even_when_it_is_not_cheap() -> None:
    sizer = TreeSizer(CPU, explore_every=4).begin("greedy")
    strong = chain([1.0, 0.95, 0.9, 0.85])
    for _ in range(MIN_DRAFT_SAMPLES + 1):  # every draft is accepted whole: each step saves ~3 plain steps
        verified = sizer.size(strong, draft_ms=5.0)  # a tenth of a plain step: not cheap
        assert verified.size == 4
        sizer.update(verified, np.arange(4))
    assert sizer.setting.saving_ms == pytest.approx(3 * 48.0 - (CPU.cost(np.array([4]))[0] - 48.0))
    sizer.size(chain([1.0, 0.01]), draft_ms=5.0)  # a step with no match: plain, but the drafter was worth asking
    sizer.update(DraftTree.root_only(0), np.array([0]))
    assert sizer.since_tree == 1 < sizer.setting.wait and sizer.wants_draft()
    drafted = []
    for _ in range(300):  # matches stop coming: the savings fade and the drafter waits for explorations again
        drafted.append(sizer.wants_draft())
        if drafted[-1]:
            sizer.update(sizer.size(chain([1.0, 0.01]), draft_ms=5.0), np.array([0]))
        else:
            sizer.skip()
    assert sizer.setting.saving_ms < 5.0
    assert all(drafted[:40]) and sum(drafted[-100:]) <= 10  # at first every step; at the end explorations only


def test_drafting_time_counts_against_a_tree() -> None:
    acceptance = np.array([1.0, 0.9])  # a one-node draft that pays on the verify curve alone
    assert choose_nodes(acceptance, CPU).size == 2
    assert choose_nodes(acceptance, CPU, draft_ms=100.0).size == 1  # not once drafting costs more than it saves


def test_auto_budget_is_lossless_and_uses_the_given_profile(model, tmp_path) -> None:
    CPU.save(tmp_path / "profile.json")
    plain = Generator(model, drafter="none")
    auto = Generator(model, drafter="aded", budget="auto", profile=tmp_path / "profile.json")
    assert auto.sizer is not None and auto.sizer.profile == CPU
    for prompt in ["List the planets of the solar system in order.", "def quicksort(items):"]:
        expected = plain.generate(prompt, max_new_tokens=40)
        got = auto.generate(prompt, max_new_tokens=40)
        assert got.token_ids == expected.token_ids
        # the sizer's time is part of drafting's; emitting text is timed on its own; nothing is counted twice
        assert 0 < got.stats.sizer_s <= got.stats.draft_s and expected.stats.sizer_s == 0
        assert got.stats.emit_s > 0 and expected.stats.emit_s > 0
        decode_s = got.stats.total_s - got.stats.prefill_s
        assert got.stats.draft_s + got.stats.verify_s + got.stats.emit_s + got.stats.other_s == pytest.approx(decode_s)
    assert all(s.calibrator.proposed.sum() > 0 for s in auto.sizer.calibrators.values())
    with pytest.raises(AdaspecError, match="budget"):
        Generator(model, budget="big")
    with pytest.raises(AdaspecError, match="not a latency profile"):
        Generator(model, budget="auto", profile=tmp_path / "missing.json")


def test_a_step_the_drafter_found_nothing_for_is_plain_and_teaches_only_that_it_saved_nothing() -> None:
    sizer = TreeSizer(CPU, explore_every=4, clock=TickingClock(0.004)).begin("greedy")
    strong = chain([1.0, 0.95])
    sizer.update(sizer.size(strong, draft_ms=1.0), np.array([0, 1]))
    saving, evidence = sizer.setting.saving_ms, sizer.calibrator.proposed.sum()
    for step in range(MIN_DRAFT_SAMPLES):
        verified = sizer.size(DraftTree.root_only(7), draft_ms=1.0)
        assert verified.size == 1 and sizer.since_tree == step + 1
        sizer.update(verified, np.array([0]))
    assert sizer.setting.saving_ms < saving  # each such step counted as saving 0, once
    assert sizer.setting.saving_ms == pytest.approx(saving * (1 - 1 / GAIN_MEMORY) ** MIN_DRAFT_SAMPLES)
    assert sizer.calibrator.proposed.sum() == pytest.approx(evidence)  # no nodes, nothing learned
    assert sizer.setting.draft_ms == pytest.approx(1.004)  # the drafter's time, and the sizer's own (one tick)
    assert sizer.shared.plain_steps == MIN_DRAFT_SAMPLES
