"""How often the sampled-distribution checks of tests/test_sampling.py raise a false alarm, and how
often they catch a 2-point shift of probability between the two likeliest outcomes, by simulation.

For each toy setting the exact joint distribution of the first 3 tokens is computed as the test
computes it, and for the embedded model's real tree the plain first-token distribution (the
test's own ``real_tree``). Many samples of the test's size are drawn from each (false alarms) and
from it with 2 points moved from the likeliest outcome to the second, and back (power), and put
through the test's own check (``distribution_rejected``). With ``--size`` it finds, per check, the
smallest sample size (a multiple of 250) whose power is at least 0.95 both ways.

    python scripts/sampling_power.py [--trials 20000] [--size]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_sampling import (  # noqa: E402  the test's own distributions and check
    ALPHA, REAL_TREE_DRAWS, TOY_PROMPT, TOY_RUNS, TOY_RUNS_SLOW, TOY_TREE_DRAWS, distribution_rejected, exact_joint,
    real_tree, shifted, toy_llama, toy_tree)

import adaspec  # noqa: E402
from adaspec.sampling import SamplingParams  # noqa: E402

TARGET_POWER = 0.95
MIN_EXPECTED = 5.0  # the checks pool cells expected fewer times than this (chi_square_p_value's default)


def compact(probs: np.ndarray, runs: int) -> np.ndarray:
    """``probs`` with its small cells packed into bins that are still small, for simulating quickly.

    The checks pool every cell expected under MIN_EXPECTED times into one, so any packing of those
    cells into bins each expected under MIN_EXPECTED times gives the same statistics; impossible cells
    are dropped (neither distribution simulated here ever draws one). The likeliest two stay where
    the top-two test finds them: every bin is less likely than they are.
    """
    expected = probs * runs
    big = probs[expected >= MIN_EXPECTED]
    bins, current = [], 0.0
    for p in np.sort(probs[(expected < MIN_EXPECTED) & (probs > 0)]):
        if (current + p) * runs >= MIN_EXPECTED:
            bins.append(current)
            current = 0.0
        current += p
    if current > 0:
        bins.append(current)
    return np.concatenate([big, np.array(bins)])


def rejection_rate(probs: np.ndarray, truth: np.ndarray, runs: int, trials: int, rng: np.random.Generator) -> float:
    """Share of ``trials`` samples of ``runs`` draws from ``truth`` that the check rejects against ``probs``
    (both compacted alike: ``truth`` differs from ``probs`` in the likeliest two cells only)."""
    counts = rng.multinomial(runs, truth / truth.sum(), size=trials)  # [trials, c]
    return float(np.mean(distribution_rejected(counts, probs)))


def false_alarms(probs: np.ndarray, runs: int, trials: int, rng: np.random.Generator) -> float:
    """How often the check rejects samples of the distribution itself."""
    packed = compact(probs, runs)
    return rejection_rate(packed, packed, runs, trials, rng)


def power(probs: np.ndarray, runs: int, trials: int, rng: np.random.Generator) -> float:
    """The smaller of the two directions' power against a 2-point shift between the two likeliest."""
    packed = compact(probs, runs)
    return min(rejection_rate(packed, shifted(packed, towards_first=way), runs, trials, rng) for way in (False, True))


def smallest_runs(probs: np.ndarray, trials: int, rng: np.random.Generator) -> int:
    """The smallest multiple of 250 runs with power >= TARGET_POWER."""
    runs = 250
    while power(probs, runs, trials, rng) < TARGET_POWER:
        runs += 250
    return runs


def row(name: str, probs: np.ndarray, runs: int, trials: int, size: bool, rng: np.random.Generator) -> str:
    """One line of the table for one check."""
    if size:
        runs = smallest_runs(probs, trials, rng)
    top = np.sort(probs)[::-1][:2]
    return (f"| {name} | {top[0]:.3f}, {top[1]:.3f} | {runs} | {false_alarms(probs, runs, trials, rng):.4f} | "
            f"{power(probs, runs, trials, rng):.3f} |")


def main() -> None:
    """Prints the table (markdown) for every check the tests make."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000, help="simulated samples per figure")
    parser.add_argument("--size", action="store_true", help="find the sample sizes instead of using the tests'")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    toy_model = toy_llama()
    print(f"| check | two likeliest | runs | false alarms (α = {ALPHA:g}) | power, 2-point shift |")
    print("|---|---|---|---|---|")
    for setting, runs in {**TOY_RUNS, **TOY_RUNS_SLOW}.items():
        probs = exact_joint(toy_model, TOY_PROMPT, SamplingParams(*setting), length=3)
        print(row(f"toy, T={setting[0]} top-k={setting[1]} top-p={setting[2]}", probs, runs, args.trials, args.size, rng))
    _, _, first, _ = toy_tree(toy_model)
    print(row("toy, full two-level tree, first token", first, TOY_TREE_DRAWS, args.trials, args.size, rng))
    _, _, first, _ = real_tree(adaspec.load())
    print(row("embedded model, real tree, first token", first.astype(np.float64), REAL_TREE_DRAWS, args.trials,
              args.size, rng))


if __name__ == "__main__":
    main()
