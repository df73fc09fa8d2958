"""No request can make the others wait: bodies, message lists, stop strings and prompts are bounded
and refused before anything costly (checked with a spy on the tokenizer, not by timing);
tokenizing, templating and prediction accounting run off the scheduler's thread and the event
loop; and ``max_tokens`` and tiny temperatures mean what OpenAI and vLLM users expect."""

from __future__ import annotations

import json
from typing import Iterator

import httpx2 as httpx
import pytest

from adaspec import Generator
from adaspec.drafters.prediction import PredictionDrafter, aligned_tokens
from adaspec.sampling import SamplingParams
from adaspec.serve import OpenAIServer, Scheduler, ServerMetrics
from server_harness import live_app, live_server
from thread_spy import threads_calling

PROMPT = "Write a short poem about the sea."


@pytest.fixture
def calls(model) -> Iterator[dict[str, list[str]]]:
    """The names of the threads that called the tokenizer (encoding or templating) and a
    prediction's accounting, in order."""
    tokenizer = type(model.tokenizer)
    with threads_calling({"tokenizer": [tokenizer.__call__, tokenizer.apply_chat_template, tokenizer.encode],
                          "accounting": [PredictionDrafter.accounting]}) as names:
        yield names


@pytest.fixture
def spy(calls) -> list[str]:
    """The names of the threads that called the tokenizer, in order."""
    return calls["tokenizer"]


@pytest.fixture
def small(model, spy):
    with live_server(model, drafter="lookup", state_dir=None, max_body_mb=1.0, batch=False) as (url, srv):
        yield url, srv


def test_an_oversized_body_gets_413_before_any_tokenizer_call(small, spy) -> None:
    url, _ = small
    huge = json.dumps({"prompt": "word " * 300_000, "max_tokens": 4}).encode()  # 1.5 MB, over the 1 MiB limit
    declared = httpx.post(f"{url}/v1/completions", content=huge, headers={"content-type": "application/json"},
                          timeout=60)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"
    pieces = [huge[i : i + 65536] for i in range(0, len(huge), 65536)]
    chunked = httpx.post(f"{url}/v1/completions", content=iter(pieces), headers={"content-type": "application/json"},
                         timeout=60)  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413
    assert spy == []
    ok = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "temperature": 0}, timeout=60)
    assert ok.status_code == 200 and spy  # the spy does see tokenizing


def test_too_many_messages_or_too_long_stop_strings_get_400_before_any_tokenizer_call(small, spy) -> None:
    url, _ = small
    many = {"messages": [{"role": "user", "content": "hi"}] * 5000, "max_tokens": 2}
    response = httpx.post(f"{url}/v1/chat/completions", json=many, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages", response.text
    long_stop = {"prompt": PROMPT, "max_tokens": 2, "stop": ["x" * 2000]}
    response = httpx.post(f"{url}/v1/completions", json=long_stop, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "stop", response.text
    nested = {"prompt": PROMPT, "metadata": {str(i): "v" for i in range(60_000)}}
    assert httpx.post(f"{url}/v1/completions", json=nested, timeout=60).status_code == 400
    assert spy == []


def test_a_prompt_too_long_in_bytes_to_fit_is_refused_before_tokenizing(model, spy) -> None:
    with live_server(model, drafter="lookup", state_dir=None, batch=False) as (url, srv):
        limit = srv.intake.max_prompt_bytes
        text = "a" * (limit + 1)
        for path, body in (("/v1/completions", {"prompt": text}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": text}]})):
            response = httpx.post(f"{url}{path}", json=body, timeout=60)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "context_length_exceeded"
        assert spy == []


def test_tokenizing_and_accounting_run_off_the_scheduler_and_the_event_loop(model, spy, calls) -> None:
    with live_server(model, drafter="lookup", state_dir=None, batch=False) as (url, _):
        chat = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "temperature": 0,
                "prediction": {"type": "content", "content": "The sea is wide and deep."}}
        assert httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60).status_code == 200
        plain = {"prompt": PROMPT, "max_tokens": 4}
        assert httpx.post(f"{url}/v1/completions", json=plain, timeout=60).status_code == 200
    assert spy and all(name.startswith("adaspec-prepare") for name in spy), spy
    accounted = calls["accounting"]
    assert accounted and all(name.startswith("adaspec-finish") for name in accounted), accounted


def test_max_tokens_beyond_the_context_is_400_and_an_omitted_one_keeps_the_defaults(model) -> None:
    generator = Generator(model, drafter="lookup", budget=8, max_context=512)  # a small context: short prefills
    long_prompt = generator.encode("one two three four " * 200, chat=False)[: 512 - 5].tolist()  # 5 tokens of room
    with live_app(OpenAIServer(Scheduler(generator, ServerMetrics("m")), "m").app) as url:
        over = httpx.post(f"{url}/v1/completions", json={"prompt": long_prompt, "max_tokens": 6}, timeout=120)
        assert over.status_code == 400 and over.json()["error"]["code"] == "context_length_exceeded", over.text
        fits = httpx.post(f"{url}/v1/completions", json={"prompt": long_prompt, "max_tokens": 5, "temperature": 0},
                          timeout=120)
        assert fits.status_code == 200
        omitted = httpx.post(f"{url}/v1/completions", json={"prompt": "1, 2, 3, 4, 5,", "temperature": 0},
                             timeout=120).json()
        assert omitted["usage"]["completion_tokens"] == 16  # OpenAI's default on completions
        content = "one two three " * 40
        content += "four " * (512 - 3 - generator.encode([{"role": "user", "content": content}]).size)
        room = 512 - generator.encode([{"role": "user", "content": content}]).size
        left = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": content}], "temperature": 0})
        assert 0 < room < 16 and left.status_code == 200, left.text
        assert left.json()["usage"]["completion_tokens"] <= room  # chat: what is left, not a 400


def test_a_tiny_temperature_is_greedy(model) -> None:
    assert SamplingParams(5e-324).greedy and SamplingParams(9e-6).greedy and not SamplingParams(1e-4).greedy
    expected = Generator(model, drafter="none").generate("The capital of France is", max_new_tokens=8, chat=False)
    with live_server(model, drafter="lookup", state_dir=None, batch=False) as (url, _):
        reply = httpx.post(f"{url}/v1/completions", timeout=60, json={
            "prompt": "The capital of France is", "max_tokens": 8, "temperature": 5e-324, "seed": 1}).json()
    assert reply["choices"][0]["text"] == expected.text


def test_prediction_accounting_aligns_in_near_linear_time() -> None:
    assert aligned_tokens([1, 2, 3, 4, 5, 6], [1, 2, 9, 9, 5, 6, 7]) == 4
    assert aligned_tokens(list(range(50)), list(range(10)) + [99] + list(range(10, 50))) == 50  # an insertion
    assert aligned_tokens(list(range(50)), list(range(20)) + list(range(30, 50))) == 40  # a deletion
    assert aligned_tokens([], [1, 2]) == 0 and aligned_tokens([1, 2], []) == 0


@pytest.mark.timeout(60)  # difflib's quadratic matcher took minutes on this; the alignment takes well under a second
def test_prediction_accounting_on_repetitive_text_finishes() -> None:
    prediction = [7, 8] * 25_000  # a 50,000-token prediction of one repeated pair
    output = [7, 8, 9] * 2_700
    assert 0 < aligned_tokens(prediction, output) <= len(output)
