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


def test_a_weak_prediction_match_leaves_room_for_the_shared_drafters_strong_one() -> None:
    from adaspec.drafters import make_drafter
    from adaspec.drafters.base import DraftRequest
    from adaspec.drafters.prediction import with_prediction
    from adaspec.tree import Source

    copied = list(range(100, 140))  # a passage of the prompt the output is copying
    prompt = np.array([1, 2, 3] + copied, dtype=np.int64)
    output = np.array(copied[:12], dtype=np.int64)  # 12 tokens into the copy: a strong context match
    # the prediction holds the output's last token (111), then something else: a one-token match
    prediction = PredictionDrafter(np.array([7, 111] + [9] * 10, dtype=np.int64), prompt.size)
    suffix = make_drafter("suffix", 1000)
    merged = with_prediction(suffix, prediction)
    context = np.concatenate((prompt, output))
    state = merged.begin(DraftRequest(prompt))
    assert prediction.propose(context, 8).size == 8  # alone, the weak match would fill the budget
    tree = merged.propose(context, 8, state)
    assert tree.size == 8
    chain = tree.first_chain()
    assert chain.tokens[1:].tolist()[:6] == copied[12:18]  # the copy continues in the tree
    assert set(tree.sources[1:].tolist()) == {int(Source.CONTEXT)}  # no room went to the prediction's weak guess
    # an output that began with two tokens the prompt lacks, then copied: the prediction holds them
    # all, so its match (14 tokens) is longer than the prompt's (12) and its nodes win
    context = np.concatenate((prompt, [50, 51], output))
    strong = PredictionDrafter(np.array([50, 51] + copied, dtype=np.int64), prompt.size)
    tree = with_prediction(suffix, strong).propose(context, 8, merged.begin(DraftRequest(prompt)))
    assert tree.first_chain().tokens[1:7].tolist() == copied[12:18]
    assert set(tree.sources[1:].tolist()) == {int(Source.PREDICTION)}


def test_merging_by_score_keeps_the_best_nodes_with_their_ancestors() -> None:
    from adaspec.drafters.base import Drafter
    from adaspec.drafters.hybrid import HybridDrafter
    from adaspec.tree import DraftTree

    class Fixed(Drafter):
        name = "fixed"

        def __init__(self, tokens: list[int], parents: list[int], scores: list[float]) -> None:
            self.tree = DraftTree(np.array(tokens), np.array(parents), np.array(scores))

        def propose(self, context: np.ndarray, budget: int, state: None = None) -> DraftTree:
            return self.tree

    # a weak first node with a confident child, and a stronger chain of the second part
    weak = Fixed([5, 10, 11], [-1, 0, 1], [1.0, 0.2, 0.9])
    strong = Fixed([5, 20, 21], [-1, 0, 1], [1.0, 0.5, 0.45])
    merged = HybridDrafter([weak, strong], shares=[1.0, 1.0], by_score=True)
    context = np.array([1, 2, 5], dtype=np.int64)
    assert merged.propose(context, 3).tokens.tolist() == [5, 20, 21]  # the child ranks no higher than its parent
    four = merged.propose(context, 4)
    assert four.tokens.tolist() == [5, 10, 20, 21] and four.parents.tolist() == [-1, 0, 0, 2]
    assert merged.propose(context, 8).size == 5  # room for all: the merged trie whole


def test_a_long_prediction_drafts_from_its_start() -> None:
    """An output that begins like a 600-token prediction is drafted from it at once: the
    prediction's index finds its oldest windows too (sized at two table slots per token, it
    held only its newest windows, and drafted nothing here)."""
    rng = np.random.default_rng(7)
    predicted = rng.permutation(40_000)[:600] + 10  # [600] distinct tokens
    prompt = np.array([1, 2, 3], dtype=np.int64)
    drafter = PredictionDrafter(predicted, prompt.size)
    for start in (5, 100, 300, 590):
        context = np.concatenate((prompt, predicted[:start]))  # the output so far agrees with the prediction
        tree = drafter.propose(context, 9)
        expected = predicted[start : start + 8]
        assert tree.first_chain().tokens[1 : 1 + expected.size].tolist() == expected.tolist()
