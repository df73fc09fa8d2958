"""Shared fixtures: the real embedded model, loaded once per test session (float32, CPU)."""

from __future__ import annotations

import pytest
import torch

import adaspec


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory, monkeypatch) -> None:
    """Each test keeps any drafter state it saves in a folder of its own, never in the user's cache."""
    monkeypatch.setenv("ADASPEC_STATE_DIR", str(tmp_path_factory.mktemp("drafter-state")))


@pytest.fixture(scope="session")
def model() -> adaspec.LoadedModel:
    torch.manual_seed(0)
    return adaspec.load()  # embedded SmolLM2-135M-Instruct; converted once, then cached


def plain_generate(model: adaspec.LoadedModel, prompt_ids: list[int], max_new_tokens: int, **kwargs) -> list[int]:
    """Reference output: transformers' own greedy `model.generate`, new token ids only."""
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.inference_mode():
        out = model.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=model.tokenizer.eos_token_id,
            **kwargs,
        )
    return out[0, len(prompt_ids) :].tolist()
