"""Shared fixtures: the real embedded model, loaded once per test session (float32, CPU); the
switch that makes llama.cpp tests fail rather than skip; Hypothesis' derandomized profile; the
fixed cost curve and the acceptance measure the equivalence tests share."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import adaspec
import adaspec.models.cache
from adaspec.budget import LatencyProfile

# CI sets this (``.ci/run``): a llama.cpp test that cannot run (llama-cpp-python missing, a build that
# is not batch-invariant or cannot say whether it is) fails instead of skipping, so the exactness
# claims for llama.cpp can never pass unrun.
REQUIRE_LLAMACPP = os.environ.get("ADASPEC_REQUIRE_LLAMACPP", "") not in ("", "0")

# Hypothesis: the same examples on every run (derived from each test's name), no example database, and
# the reproducing blob printed on a failure. HYPOTHESIS_PROFILE=explore draws new examples each run
# (and prints the seed of a failing run) for local fuzzing.
# (The vLLM venv runs tests/test_vllm*.py alone and has no hypothesis: there is nothing to set up.)
if importlib.util.find_spec("hypothesis") is not None:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.register_profile("explore", derandomize=False, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A verify-cost curve fixed in the tests, not measured on the machine at hand: a plain step costs
# 1 s and a 64-node tree 1.8 times that, so trees pay and ``@auto`` sizing drafts whenever the
# drafter has something. At these costs the drafter's own time (measured by the sizer, about a
# millisecond even on a loaded machine) is far under the line below which a plain streak looks
# for a match on every step (0.5% of a plain step: 5 ms), so the trees chosen do not depend on how
# fast this machine is.
FIXED_PROFILE = LatencyProfile((1, 2, 4, 8, 16, 32, 64), (1000.0, 1020.0, 1050.0, 1100.0, 1200.0, 1400.0, 1800.0),
                               "tests-fixed")


def skip_or_fail(reason: str) -> None:
    """Skips the calling test, or fails it when ``ADASPEC_REQUIRE_LLAMACPP`` is set (CI).

    Args:
        reason: why the test cannot run here.
    """
    if REQUIRE_LLAMACPP:
        pytest.fail(f"ADASPEC_REQUIRE_LLAMACPP is set but {reason}", pytrace=False)
    pytest.skip(reason)


def slow_except(values, fast) -> list:
    """Parametrize values, those not in ``fast`` marked for the slow tier: they prove for one more
    drafter what the fast ones prove, so ``make test`` leaves them to CI's ``make test-slow``.

    Args:
        values: the parameter values.
        fast: the values the default tier runs.

    Returns:
        The values, each outside ``fast`` wrapped in ``pytest.param(..., marks=slow)``.
    """
    return [value if value in fast else pytest.param(value, marks=pytest.mark.slow) for value in values]


def mean_accepted(results) -> float:
    """MAT over several generations: 1 + draft tokens accepted per verification step, root counted.

    Args:
        results: ``Generation`` objects.

    Returns:
        The pooled MAT (1.0 for plain decoding).
    """
    steps = sum(r.stats.num_steps for r in results)
    return 1.0 + sum(r.stats.num_accepted_tokens for r in results) / max(steps, 1)



FLOAT_NOISE = pytest.StashKey[list]()  # mismatches forgiven as floating-point noise, for the summary
# content-keyed conversions, file digests and per-machine batching checks, written atomically: safe to share
SHARED_CACHE_PARTS = ("models", "tokenizers", "digests", "batch-checks")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test gets its own ``ADASPEC_CACHE``: a latency profile measured under test load or a
    drafter state learned by a test never lands in the user's cache. Converted models and
    tokenizers are linked from the user's cache, so they are converted once, not per test."""
    user_cache = adaspec.models.cache.cache_root()
    private = tmp_path_factory.mktemp("adaspec-cache")
    for part in SHARED_CACHE_PARTS:
        (user_cache / part).mkdir(parents=True, exist_ok=True)
        (private / part).symlink_to(user_cache / part, target_is_directory=True)
    monkeypatch.setenv("ADASPEC_CACHE", str(private))
    monkeypatch.delenv("ADASPEC_STATE_DIR", raising=False)


@pytest.fixture(scope="session")
def model() -> adaspec.LoadedModel:
    torch.manual_seed(0)
    return adaspec.load()  # embedded SmolLM2-135M-Instruct; converted once, then cached


def plain_generate(model: adaspec.LoadedModel, prompt_ids: list[int], max_new_tokens: int, **kwargs) -> list[int]:
    """Reference output: transformers' own greedy `model.generate`, new token ids only."""
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.inference_mode():
        out = model.runtime.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=model.tokenizer.eos_token_id,
            **kwargs,
        )
    return out[0, len(prompt_ids) :].tolist()


@pytest.fixture(scope="session")
def float_noise_log(request) -> list[str]:
    """Where tests record each mismatch they forgave as floating-point noise (a greedy near-tie,
    a sampling uniform at a CDF boundary); pytest's summary prints them, even under ``-q``."""
    return request.config.stash.setdefault(FLOAT_NOISE, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    forgiven = config.stash.get(FLOAT_NOISE, None)
    if forgiven is None:  # no test that compares against plain decoding ran
        return
    terminalreporter.section("mismatches forgiven as floating-point noise")
    terminalreporter.write_line(f"{len(forgiven)} forgiven")
    for line in forgiven:
        terminalreporter.write_line(f"  {line}")
