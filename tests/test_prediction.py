"""Predicted Outputs: the client's expected text only drafts; the output is the model's own, and
OpenAI's accepted / rejected prediction counts say how much of the prediction it kept."""

from __future__ import annotations

import pytest

import json
import subprocess
import sys

import numpy as np

from adaspec import Generator
from adaspec.drafters.prediction import PredictionDrafter

TOKENS = 48
EDIT = ("Add type hints to this function and return the whole function.\n\n"
        "def scale(values, factor):\n    result = []\n    for value in values:\n        result.append(value * factor)\n"
        "    return result\n")


def test_a_prediction_changes_speed_not_output(model) -> None:
    plain = Generator(model, drafter="none").generate(EDIT, max_new_tokens=TOKENS)
    with_prediction = Generator(model, budget=32).generate(EDIT, max_new_tokens=TOKENS, prediction=plain.text)
    assert with_prediction.token_ids == plain.token_ids
    stats = with_prediction.stats
    assert stats.mat > 4  # the output is the prediction: long drafts accepted whole
    assert stats.accepted_prediction_tokens > 0.9 * len(plain.token_ids) - 2
    wrong = Generator(model, budget=32).generate(EDIT, max_new_tokens=TOKENS, prediction="nothing like it at all")
    assert wrong.token_ids == plain.token_ids and wrong.stats.rejected_prediction_tokens > 0


def test_seeded_sampling_with_a_prediction_equals_plain_sampling(model) -> None:
    options = dict(max_new_tokens=TOKENS, temperature=0.7, seed=4)
    plain = Generator(model, drafter="none").generate(EDIT, **options)
    assert Generator(model, budget=32).generate(EDIT, prediction=plain.text, **options).token_ids == plain.token_ids


def test_prediction_accounting_follows_openais_meaning() -> None:
    source = PredictionDrafter(np.array([1, 2, 3, 4, 5, 6]), prompt_size=0)
    assert source.accounting([1, 2, 3, 4, 5, 6]) == (6, 0)
    assert source.accounting([1, 2, 9, 9, 5, 6, 7]) == (4, 2)  # 3 and 4 did not end up in the completion
    assert source.accounting([]) == (0, 6)


@pytest.mark.slow
def test_cli_prediction_file(tmp_path) -> None:
    expected = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", EDIT, "--drafter", "none",
                               "--max-new-tokens", str(TOKENS), "--json", "--no-state"],
                              capture_output=True, text=True, timeout=300)
    plain = json.loads(expected.stdout)
    (tmp_path / "predicted.py").write_text(plain["text"])
    run = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", EDIT, "--prediction", str(tmp_path / "predicted.py"),
                          "--budget", "32", "--max-new-tokens", str(TOKENS), "--json", "--no-state"],
                         capture_output=True, text=True, timeout=300)
    out = json.loads(run.stdout)
    assert out["token_ids"] == plain["token_ids"] and out["stats"]["accepted_prediction_tokens"] > 0
    missing = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", "hi", "--prediction", str(tmp_path / "no.txt")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "prediction file" in missing.stderr
