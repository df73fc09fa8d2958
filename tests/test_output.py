"""Incremental detokenisation: the text built a few tokens at a time equals a full decode, the
streamed pieces add up to it, and stop strings cut at the same token as a from-scratch search."""

from __future__ import annotations

import numpy as np
import pytest

from adaspec.output import OutputTracker

TEXTS = [
    "def mean(values):\n    return sum(values) / len(values)\n",
    "émigré naïve café, 東京タワー and 🙂🙃 emoji, then ASCII again.",
    "  leading spaces, tabs\tand\nnew lines\n\n  indented",
    "Ünïcödé ßtraße — “quotes” and ‘single’ … ellipsis; 한국어 텍스트.",
]


def feed(tracker: OutputTracker, ids: list[int], seed: int) -> str:
    """Feeds ids in random steps of 1-5 tokens; returns the streamed text."""
    rng = np.random.default_rng(seed)
    streamed, done = [], 0
    while done < len(ids) and not tracker.finished:
        step = ids[done : done + int(rng.integers(1, 6))]
        tracker.extend(step)
        streamed.append(tracker.text_delta())
        done += len(step)
    return "".join(streamed)


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_text_equals_a_full_decode_and_the_stream_adds_up(model, text) -> None:
    ids = model.tokenizer(text, add_special_tokens=False).input_ids
    for seed in range(3):
        tracker = OutputTracker(model.tokenizer, frozenset(), [], limit=len(ids))
        streamed = feed(tracker, ids, seed)
        assert tracker.text == model.tokenizer.decode(ids, skip_special_tokens=True) == text
        assert streamed == tracker.text and tracker.finish_reason == "length"


def test_a_length_cut_inside_a_character_ends_like_a_full_decode(model) -> None:
    ids = model.tokenizer("🙂🙃🙂", add_special_tokens=False).input_ids
    for limit in range(1, len(ids) + 1):
        tracker = OutputTracker(model.tokenizer, frozenset(), [], limit=limit)
        streamed = feed(tracker, ids, limit)
        assert tracker.text == model.tokenizer.decode(ids[:limit], skip_special_tokens=True)
        assert streamed == tracker.text


@pytest.mark.parametrize("stop", ["return", "\n", "a", "東京", "🙃", "ASCII again", "never there"])
def test_stop_strings_cut_at_the_first_token_that_completes_them(model, stop) -> None:
    text = " ".join(TEXTS)
    ids = model.tokenizer(text, add_special_tokens=False).input_ids
    expected_count = next((count for count in range(1, len(ids) + 1)
                           if stop in model.tokenizer.decode(ids[:count], skip_special_tokens=True)), None)
    for seed in range(3):
        tracker = OutputTracker(model.tokenizer, frozenset(), [stop], limit=len(ids))
        streamed = feed(tracker, ids, seed)
        if expected_count is None:
            assert tracker.finish_reason == "length" and tracker.text == text
        else:
            assert tracker.finish_reason == "stop" and len(tracker.ids) == expected_count
            assert tracker.text == text[: text.index(stop)]
        assert streamed == tracker.text  # nothing past the stop string was ever streamed


def test_eos_ends_the_text_without_decoding_it(model) -> None:
    ids = model.tokenizer("Hello there", add_special_tokens=False).input_ids
    eos = next(iter(model.eos_token_ids))
    tracker = OutputTracker(model.tokenizer, model.eos_token_ids, [], limit=100)
    tracker.extend(ids + [eos, ids[0]])
    assert tracker.finish_reason == "eos" and tracker.ids == ids + [eos] and tracker.text == "Hello there"


def test_the_rust_decode_shortcut_is_taken_only_where_it_decodes_alike(model) -> None:
    from adaspec.output import rust_decode

    tokenizer = model.tokenizer
    decode = rust_decode(tokenizer)
    assert decode is not None  # the embedded model's fast tokenizer cleans nothing up
    ids = tokenizer("def f(x):\n    return x  # 🙂 <|im_end|>", add_special_tokens=False).input_ids
    for end in range(1, len(ids) + 1):
        assert decode(ids[:end], skip_special_tokens=True) == tokenizer.decode(ids[:end], skip_special_tokens=True)

    class Fast:  # the shape rust_decode looks for: the class that holds the Rust tokenizer
        backend_tokenizer = tokenizer.backend_tokenizer
        clean_up_tokenization_spaces = False

    class Plain(Fast):
        pass

    class OwnDecoding(Fast):  # decoding of its own, as Whisper's tokenizer has
        def _decode(self, ids: list[int]) -> str:
            return ""

    assert rust_decode(Plain()) is not None and rust_decode(OwnDecoding()) is None
