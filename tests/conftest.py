"""Shared fixtures: the real embedded model, loaded once per test session (float32, CPU)."""

from __future__ import annotations

import pytest
import torch

import adaspec
import adaspec.models.cache


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
