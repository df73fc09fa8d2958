"""The hardware-aware budget: cost profiles, acceptance calibration, and the tree-size choice."""

from __future__ import annotations

import numpy as np
import pytest

from adaspec.budget import AcceptanceCalibrator, LatencyProfile, Reliability, TreeSizer, choose_nodes
from adaspec.budget.chooser import GAIN_MEMORY, MIN_DRAFT_SAMPLES
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


def test_profile_file_round_trip_makes_the_choice_deterministic(tmp_path) -> None:
    CPU.save(tmp_path / "cpu.json")
    loaded = LatencyProfile.load(tmp_path / "cpu.json")
    assert loaded == CPU
    acceptance = np.concatenate(([1.0], 0.7 ** np.arange(1, 30)))
    assert choose_nodes(acceptance, loaded).tolist() == choose_nodes(acceptance, CPU).tolist()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a latency profile"):
        LatencyProfile.load(tmp_path / "bad.json")


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
    shared = TreeSizer(CPU, explore_every=4, explore_max=16, explore_nodes=3)
    sizer = shared.begin("greedy")
    weak = chain([1.0, 0.05, 0.04, 0.03])  # never worth a tree on the CPU curve
    sizes, drafted = [], 0
    for _ in range(40):  # as Session.propose drives it
        if not sizer.wants_draft():
            sizer.skip()
            sizes.append(1)
            continue
        drafted += 1
        verified = sizer.size(weak, draft_ms=5.0)  # a tenth of a plain step: not worth running on every step
        sizes.append(verified.size)
        sizer.update(verified, np.array([0]))  # nothing is ever accepted
    explored = [i for i, size in enumerate(sizes) if size > 1]
    assert all(sizes[i] == 3 for i in explored)
    assert np.diff(explored).tolist() == [9, 17]  # waits of 4, then 8, then 16 plain steps
    assert shared.plain_steps == 40 - len(explored)
    # the drafter ran on the first steps, until its time was known, then only to explore (and once after each try)
    assert drafted == MIN_DRAFT_SAMPLES + 2 * len(explored)
    assert shared.begin("greedy").setting.wait == 16  # a new request inherits the backed-off wait
    cheap = TreeSizer(CPU, explore_every=4).begin("greedy")
    cheap.size(weak, draft_ms=0.2)  # drafting costs under 2% of a plain step: it runs on every step
    assert cheap.since_tree == 1 and cheap.wants_draft()
    sizer.since_tree = sizer.setting.wait  # force the next exploration, and let it succeed
    verified = sizer.size(weak)
    sizer.update(verified, np.array([0, 1]))
    assert sizer.setting.wait == 4


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
    assert all(s.calibrator.proposed.sum() > 0 for s in auto.sizer.calibrators.values())
    with pytest.raises(AdaspecError, match="budget"):
        Generator(model, budget="big")
    with pytest.raises(AdaspecError, match="not a latency profile"):
        Generator(model, budget="auto", profile=tmp_path / "missing.json")


def test_a_step_the_drafter_found_nothing_for_is_plain_and_teaches_only_that_it_saved_nothing() -> None:
    sizer = TreeSizer(CPU, explore_every=4).begin("greedy")
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
    assert sizer.setting.draft_ms == 1.0 and sizer.shared.plain_steps == MIN_DRAFT_SAMPLES
