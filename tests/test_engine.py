"""Engine behaviour on the real model: EOS, stop strings, streaming, stats, contract checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from adaspec import AdaspecError, DraftTree, Generator, GenerationStats
from adaspec.drafters import PlainDrafter
from adaspec.tree import Source
from conftest import plain_generate


def test_eos_ends_generation_where_plain_decoding_does(model) -> None:
    generator = Generator(model, drafter="recycling", budget=8)
    prompt = generator.encode("Reply with only the word yes.", chat=True)
    out = generator.generate(prompt, max_new_tokens=64)
    assert out.finish_reason == "eos"
    assert out.token_ids[-1] in model.eos_token_ids
    assert out.token_ids == plain_generate(model, prompt.tolist(), 64)
    assert "<|im_end|>" not in out.text


@pytest.mark.parametrize("drafter", ["none", "lookup", "recycling", "hybrid"])
def test_stop_string_cuts_exactly_where_plain_decoding_stops(model, drafter) -> None:
    generator = Generator(model, drafter=drafter, budget=8)
    prompt = generator.encode("Count from 1 to 30, separated by commas.", chat=True)
    stop = "7. 7"
    out = generator.generate(prompt, max_new_tokens=80, stop=[stop])
    expected = plain_generate(model, prompt.tolist(), 80, stop_strings=[stop], tokenizer=model.tokenizer)
    assert out.finish_reason == "stop"
    assert out.token_ids == expected  # ids end with the token that completes the stop string
    full = model.tokenizer.decode(expected, skip_special_tokens=True)
    assert out.text == full[: full.index(stop)]  # the text ends just before it


def test_stream_yields_the_same_text_as_generate(model) -> None:
    prompt = "List the planets of the solar system in order from the sun."
    pieces_stream = Generator(model, drafter="lookup", budget=8).stream(prompt, max_new_tokens=40, stop=["Saturn"])
    pieces = list(pieces_stream)
    result = Generator(model, drafter="lookup", budget=8).generate(prompt, max_new_tokens=40, stop=["Saturn"])
    assert "".join(pieces) == result.text == pieces_stream.result.text
    assert len(pieces) > 2  # text arrives step by step, not at the end


def test_stats_count_what_the_steps_did(model) -> None:
    """Stats against an independent tally: each step's report, watched from outside."""
    request = Generator(model, drafter="lookup", budget=8).open(
        "Repeat the sentence 'The cat sat on the mat.' five times.", max_new_tokens=48
    )
    tick = time.perf_counter()
    request.start()
    reports = []
    while not request.finished:
        request.step()
        reports.append(request.last_step)
    out = request.result()
    request.close()
    wall = time.perf_counter() - tick
    stats = out.stats
    assert stats.new_tokens == len(out.token_ids) == 1 + sum(r.new_tokens for r in reports)  # the prefill gave one
    assert stats.num_steps == len(reports)
    assert stats.num_accepted_tokens == sum(r.accepted_depth for r in reports)
    assert stats.num_draft_tokens == sum(r.draft_tokens for r in reports)
    assert stats.num_accepted_tokens_per_pos[0] == sum(r.accepted_depth >= 1 for r in reports)
    assert stats.mat > 1.5  # repeated text is what prompt lookup is for
    assert 0 < stats.draft_s + stats.verify_s + stats.prefill_s <= stats.total_s <= wall


def test_stats_arithmetic_on_hand_made_steps() -> None:
    def chain(size: int, sources: list[int] | None = None) -> DraftTree:
        return DraftTree(np.arange(size), np.arange(-1, size - 1), sources=sources)

    stats = GenerationStats()
    context, learned = int(Source.CONTEXT), int(Source.LEARNED)
    stats.record_step(chain(8, [0] + [context] * 3 + [learned] * 4), np.arange(3))  # accepted depths 1, 2
    stats.record_step(chain(8), np.arange(1))  # only the root
    stats.record_step(chain(4), np.arange(4))  # depths 1, 2, 3
    assert stats.num_steps == 3 and stats.num_drafts == 3
    assert stats.num_draft_tokens == 7 + 7 + 3
    assert stats.num_accepted_tokens == 2 + 0 + 3
    assert stats.num_accepted_tokens_per_pos == [2, 2, 1]
    assert stats.mat == pytest.approx(8 / 3)
    assert stats.acceptance_rate_per_pos == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert stats.draft_tokens_by_source == {"learned": 4 + 7 + 3, "context": 3, "prediction": 0, "history": 0}
    assert stats.accepted_tokens_by_source == {"learned": 3, "context": 2, "prediction": 0, "history": 0}
    assert GenerationStats().mat == 1.0
    stats.record_step(chain(1), np.arange(1))  # a plain step: a step, not a draft
    assert (stats.num_steps, stats.num_drafts, stats.num_plain_steps) == (4, 3, 1)
    assert stats.mat == pytest.approx(9 / 4)


class OversizedDrafter(PlainDrafter):
    name = "oversized"

    def propose(self, context, budget, state=None):
        return DraftTree(np.full(budget + 1, context[-1]), np.arange(-1, budget))


def test_a_drafter_breaking_the_budget_is_caught(model) -> None:
    with pytest.raises(ValueError, match="budget"):
        Generator(model, drafter=OversizedDrafter(), budget=4).generate("Hello", max_new_tokens=8)


@pytest.mark.parametrize(
    "prompt, kwargs, message",
    [
        ("", {}, "empty"),
        ("   \n", {}, "empty"),
        ([], {}, "empty"),
        ("Hello", {"max_new_tokens": 0}, "max_new_tokens"),
        ([5, 10**7], {}, "vocabulary"),
    ],
)
def test_bad_requests_are_clear_errors(model, prompt, kwargs, message) -> None:
    with pytest.raises(AdaspecError, match=message):
        Generator(model, drafter="none").generate(prompt, **kwargs)


def test_bad_generator_options_are_clear_errors(model) -> None:
    with pytest.raises(AdaspecError, match="budget"):
        Generator(model, budget=0)
    with pytest.raises(AdaspecError, match="unknown drafter"):
        Generator(model, drafter="telepathy", budget=8)
