"""Offline priors for ``aded``: counting tri-grams into a table, and ``adaspec prior build``."""

from __future__ import annotations

import pytest

import json

import numpy as np

from adaspec.cli import main
from adaspec.drafters.aded import AdedConfig, AdedDrafter
from adaspec.prior import build_prior, successor_distributions

VOCAB = 40


def test_successor_distributions_are_relative_frequencies_most_frequent_first() -> None:
    contexts = np.array([5, 5, 5, 5, 9])
    followers = np.array([1, 2, 2, 3, 4])
    keys, ids, freqs, totals = successor_distributions(contexts, followers, slots=2)
    assert keys.tolist() == [5, 9] and totals.tolist() == [4, 1]
    assert ids.tolist() == [[2, 1], [4, -1]]  # 3 ties with 1 but does not fit in 2 slots
    assert np.allclose(freqs, [[0.5, 0.25], [1.0, 0.0]])


def test_prior_holds_the_corpus_trigrams_and_keeps_the_most_frequent_contexts() -> None:
    corpus = [np.array([1, 2, 3, 1, 2, 3, 1, 2, 4]), np.array([7, 8, 9])]
    table = build_prior(corpus, VOCAB)
    ids, weights = table.successors(1, 2)
    assert ids.tolist() == [3, 4] and np.allclose(weights, [2 / 3, 1 / 3])
    assert table.successors(-1, 8)[0].tolist() == [9]  # bigram row
    small = build_prior([np.array([1, 2, 1, 3, 1, 2, 1, 5])], VOCAB, capacity=1)
    assert len(small) == 1  # only the most frequent context: token 1, followed 4 times
    ids, weights = small.successors(-1, 1)
    assert ids[0] == 2 and np.isclose(weights[0], 0.5) and sorted(ids[1:].tolist()) == [3, 5]


@pytest.mark.slow
def test_prior_build_command_writes_a_table_the_drafter_starts_from(tmp_path, capsys, model) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 5
    (tmp_path / "corpus.txt").write_text(text)
    out = tmp_path / "prior.npz"
    assert main(["prior", "build", str(tmp_path / "corpus.txt"), "-o", str(out)]) == 0
    assert "contexts" in capsys.readouterr().err
    drafter = AdedDrafter(model.vocab_size, AdedConfig(prior_path=str(out), prompt_rate=0))
    ids = model.tokenizer(" The quick brown fox jumps", add_special_tokens=False).input_ids
    tree = drafter.propose(np.array(ids[:2]), budget=4)
    assert tree.tokens.tolist() == ids[1:5] and tree.parents.tolist() == [-1, 0, 1, 2]
    code = main(["generate", "Say hi.", "--max-new-tokens", "8", "--drafter", f"aded:prior_path={out}", "--json", "--compare"])
    assert code == 0 and json.loads(capsys.readouterr().out)["identical"] is True


def test_prior_build_bad_input_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00junk")
    cases = [
        (["prior", "build", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "p.npz")], "no such file"),
        (["prior", "build", str(tmp_path / "binary.txt"), "-o", str(tmp_path / "p.npz")], "not UTF-8"),
        (["prior", "build", str(tmp_path / "binary.txt"), "-o", str(tmp_path / "no" / "p.npz")], "does not exist"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("adaspec: error:") and message in err and "\n" not in err
    assert not list(tmp_path.glob("*.npz"))
