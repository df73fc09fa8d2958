"""adaspec serve, through real clients (the official ``openai`` package and raw HTTP) on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import threading
import time

import httpx2 as httpx
import numpy as np
import openai
import pytest

from adaspec import Generation, Generator
from adaspec.drafters import make_drafter
from adaspec.state_store import DrafterStateStore
from server_harness import MODEL_NAME, PROMPTS, TOKENS, live_server, metric

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}  # OpenAI's names for a Generation's finish


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    with live_server(model, state_dir=tmp_path_factory.mktemp("state"), max_active=8, max_waiting=16) as (url, srv):
        yield url, srv


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def solo(model) -> list[Generation]:
    """Each prompt's greedy chat answer from plain decoding, alone."""
    plain = Generator(model, drafter="none")
    return [plain.generate([{"role": "user", "content": p}], max_new_tokens=TOKENS) for p in PROMPTS]


def test_chat_and_completions_equal_generate_through_the_openai_client(client, model, solo) -> None:
    chat = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": PROMPTS[0]}],
                                          max_tokens=TOKENS, temperature=0)
    assert chat.choices[0].message.content == solo[0].text
    assert chat.choices[0].finish_reason == FINISH_REASONS[solo[0].finish_reason]
    assert chat.usage.completion_tokens == len(solo[0].token_ids) and chat.usage.prompt_tokens == len(solo[0].prompt_ids)

    expected = Generator(model, drafter="none").generate("def fibonacci(n):", max_new_tokens=24, chat=False)
    completion = client.completions.create(model=MODEL_NAME, prompt="def fibonacci(n):", max_tokens=24, temperature=0)
    assert completion.choices[0].text == expected.text
    assert completion.choices[0].finish_reason == FINISH_REASONS[expected.finish_reason]
    assert completion.usage.completion_tokens == len(expected.token_ids)

    pieces, reasons, usages = [], [], []
    for chunk in client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": PROMPTS[1]}],
                                                max_tokens=TOKENS, temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == solo[1].text
    assert reasons[-1] == FINISH_REASONS[solo[1].finish_reason] and all(r is None for r in reasons[:-1])
    assert len(usages) == 1 and usages[0].completion_tokens == len(solo[1].token_ids)

    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL_NAME, prompt="def fibonacci(n):", max_tokens=24, temperature=0, stream=True) if c.choices)
    assert streamed == expected.text


def test_seeded_sampling_through_the_server_equals_generate(client, model) -> None:
    messages = [{"role": "user", "content": PROMPTS[3]}]
    expected = Generator(model, drafter="none").generate(messages, max_new_tokens=TOKENS, temperature=0.8, top_p=0.95,
                                                         seed=7)
    got = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=TOKENS, temperature=0.8,
                                         top_p=0.95, seed=7)
    assert got.choices[0].message.content == expected.text


def batching_path_used(url: str, steps: float, forwards: float) -> str:
    """Checks that the server verified on the path ``/health`` names, from its step and forward counts.

    Batched: some forward verified several requests' trees, and on average at least
    ``MIN_TREES_PER_FORWARD`` of them. Serial: exactly one tree per forward.

    Args:
        url: the server's base URL.
        steps: verification steps taken over the span checked.
        forwards: model forwards over the same span.

    Returns:
        ``batched`` or ``serial``.
    """
    batching = httpx.get(f"{url}/health", timeout=5).json()["batching"]
    if batching["enabled"]:
        assert forwards * MIN_TREES_PER_FORWARD <= steps, (steps, forwards, batching["detail"])
        return "batched"
    assert forwards == steps, (steps, forwards, batching["detail"])
    return "serial"


# trees verified per forward when batching is on, measured here: 5.2 with 8 streams of hybrid at
# budget 8, 4.8 and 3.0 with 8 and 4 streams of lookup; the serial path gives exactly 1
MIN_TREES_PER_FORWARD = 2.0
# 8 streams, hybrid at budget 8: MAT measured 1.168 on a fresh server (this test alone), 1.470 after the
# module's earlier tests taught the drafter; the floor keeps 80% of the lower one's excess over 1
SERVER_MAT_FLOOR = 1.13


def test_eight_concurrent_streams_each_get_their_solo_output(server, client, solo) -> None:
    url, _ = server
    drafts_before, accepted_before = metric(url, "vllm:spec_decode_num_drafts_total"), \
        metric(url, "vllm:spec_decode_num_accepted_tokens_total")
    steps_before, forwards_before = metric(url, "adaspec:verify_steps_total"), metric(url, "adaspec:verify_forwards_total")
    order, lock = itertools.count(), threading.Lock()  # one sequence of the streams' events, as the clients saw them

    def run(prompt: str) -> tuple[str, int, int]:
        pieces, first = [], None
        stream = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=TOKENS, temperature=0, stream=True)
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text and first is None:
                with lock:
                    first = next(order)
            pieces.append(text or "")
        with lock:
            return "".join(pieces), first, next(order)

    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        results = list(pool.map(run, PROMPTS))
    assert [text for text, _, _ in results] == [g.text for g in solo]  # nothing lost, mixed or changed
    # continuous scheduling: every stream had its first text before any stream ended (no timing involved)
    firsts, ends = [first for _, first, _ in results], [end for _, _, end in results]
    assert None not in firsts and max(firsts) < min(ends), (firsts, ends)
    assert metric(url, "vllm:num_requests_running") == 0
    steps = metric(url, "adaspec:verify_steps_total") - steps_before
    forwards = metric(url, "adaspec:verify_forwards_total") - forwards_before
    path = batching_path_used(url, steps, forwards)
    mat = 1 + (metric(url, "vllm:spec_decode_num_accepted_tokens_total") - accepted_before) / steps
    print(f"eight streams: {path}, {steps / forwards:.2f} trees per forward, MAT {mat:.3f}, "
          f"drafts {metric(url, 'vllm:spec_decode_num_drafts_total') - drafts_before:g}")
    assert mat > SERVER_MAT_FLOOR


def test_metrics_use_vllm_names(server, client) -> None:
    url, _ = server
    client.completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4, 5,", max_tokens=16, temperature=0)
    text = httpx.get(f"{url}/metrics").text
    for name in ("vllm:spec_decode_num_drafts_total", "vllm:spec_decode_num_draft_tokens_total",
                 "vllm:spec_decode_num_accepted_tokens_total", "vllm:spec_decode_num_accepted_tokens_per_pos_total",
                 "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        assert name in text, name
    accepted = metric(url, "vllm:spec_decode_num_accepted_tokens_total")
    per_position = sum(metric(url, "vllm:spec_decode_num_accepted_tokens_per_pos_total", f'position="{p}"')
                       for p in range(256))
    assert accepted > 0 and per_position == accepted  # depth counts add up, however deep the accepted paths
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == MODEL_NAME


BAD_REQUESTS = [
    ("malformed JSON", "/v1/chat/completions", b'{"messages": [', 400),
    ("non-UTF-8 bytes", "/v1/chat/completions", b'{"messages": "\xff\xfe"}', 400),
    ("max_tokens of the wrong type", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}, 400),
    ("messages of the wrong type", "/v1/chat/completions", {"messages": "hi"}, 400),
    ("empty messages", "/v1/chat/completions", {"messages": []}, 400),
    ("messages without text", "/v1/chat/completions", {"messages": [{"role": "user", "content": "  "}]}, 400),
    ("an unknown role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ("huge max_tokens", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**12}, 400),
    ("n > 1", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400),
    ("presence_penalty", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 0.5}, 400),
    ("frequency_penalty", "/v1/completions", {"prompt": "hi", "frequency_penalty": 1.0}, 400),
    ("logit_bias", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"42": 5}}, 400),
    ("logprobs", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400),
    ("an unknown parameter", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temprature": 0}, 400),
    ("a negative temperature", "/v1/completions", {"prompt": "hi", "temperature": -1}, 400),
    ("top_p of zero", "/v1/completions", {"prompt": "hi", "top_p": 0}, 400),
    ("an empty prompt", "/v1/completions", {"prompt": ""}, 400),
    ("two prompts", "/v1/completions", {"prompt": ["a", "b"]}, 400),
    ("token ids outside the vocabulary", "/v1/completions", {"prompt": [1, 2, 10**9]}, 400),
    ("a prompt longer than the context", "/v1/completions", {"prompt": "word " * 9000, "max_tokens": 4}, 400),
    ("another model", "/v1/completions", {"model": "gpt-4", "prompt": "hi"}, 404),
]


@pytest.mark.parametrize("path, body, status", [case[1:] for case in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_is_a_clean_4xx_and_the_server_keeps_serving(server, path, body, status) -> None:
    url, _ = server
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{url}{path}", content=content, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and "\n" not in error["message"] and error["type"]
    assert httpx.get(f"{url}/health").status_code == 200
    ok = httpx.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2, "temperature": 0}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


# tokens a stream that asked for 2,000 generated before the server noticed its client had gone; the
# most measured in 10 runs here was DISCONNECT_MEASURED, the bound is 4x that (2,000 if it never noticed)
DISCONNECT_MEASURED = 9
DISCONNECT_TOKEN_BOUND = 4 * DISCONNECT_MEASURED


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server) -> None:
    url, _ = server
    before = metric(url, "adaspec:requests_failed_total", 'reason="disconnected"')
    generated_before = metric(url, "vllm:generation_tokens_total")
    body = {"prompt": "Count from one to one thousand in words:", "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # generation is under way; now walk away
    deadline = time.monotonic() + 10
    while metric(url, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(url, "vllm:num_requests_running") == 0
    assert metric(url, "adaspec:requests_failed_total", 'reason="disconnected"') == before + 1
    generated = metric(url, "vllm:generation_tokens_total") - generated_before
    print(f"disconnect: {generated:g} tokens generated")
    assert generated < DISCONNECT_TOKEN_BOUND  # it stopped soon after the client left, far short of 2,000


def test_a_full_queue_answers_429_with_retry_after_then_recovers(model, tmp_path) -> None:
    with live_server(model, max_active=1, max_waiting=1, state_dir=None, batch=False) as (url, _):
        body = {"prompt": "Write a long story about a dragon.", "max_tokens": 60, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: httpx.post(f"{url}/v1/completions", json=body, timeout=120), range(4)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 2 and 429 in statuses, statuses  # one decodes, one waits, the rest are refused
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "1" and refused.json()["error"]["type"] == "rate_limit_exceeded"
        texts = {r.json()["choices"][0]["text"] for r in responses if r.status_code == 200}
        assert len(texts) == 1  # the requests that ran all got the one greedy answer
        assert metric(url, "adaspec:requests_rejected_total", 'reason="queue_full"') == statuses.count(429)
        again = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert again.status_code == 200 and again.json()["choices"][0]["text"] in texts


def test_a_request_past_its_timeout_ends_with_504_and_others_are_unharmed(model) -> None:
    with live_server(model, max_active=2, request_timeout=1.0, state_dir=None, batch=False) as (url, _):
        slow = {"prompt": "Count from one to one thousand in words:", "max_tokens": 4000, "temperature": 0}
        response = httpx.post(f"{url}/v1/completions", json=slow, timeout=60)
        assert response.status_code == 504 and "timeout" in response.json()["error"]["message"]
        quick = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "temperature": 0}, timeout=60)
        assert quick.status_code == 200
        assert metric(url, "adaspec:requests_failed_total", 'reason="timeout"') == 1


def test_learned_state_survives_a_restart_and_bad_files_are_ignored(model, tmp_path, caplog) -> None:
    with live_server(model, drafter="aded", state_dir=tmp_path, batch=False) as (url, srv):
        httpx.post(f"{url}/v1/completions", json={"prompt": "def add(a, b):", "max_tokens": 24, "temperature": 0},
                   timeout=60).raise_for_status()
        learned = len(srv.scheduler.generator.drafter.table)
    store = DrafterStateStore(tmp_path, model.name, "aded")
    assert learned > 0 and store.path.is_file()
    warm = make_drafter("aded", model.vocab_size)
    assert store.load_into(warm) and len(warm.table) == learned

    foreign = DrafterStateStore(tmp_path, "another model", "aded")
    foreign.path.parent.mkdir(parents=True, exist_ok=True)
    foreign.path.write_bytes(store.path.read_bytes())  # learned on another model
    corrupt = DrafterStateStore(tmp_path, model.name, "aded:capacity=4096")
    corrupt.path.write_bytes(store.path.read_bytes()[: store.path.stat().st_size // 2])  # cut short
    for bad in (foreign, corrupt):
        cold = make_drafter("aded", model.vocab_size)
        with caplog.at_level(logging.WARNING, logger="adaspec"):
            caplog.clear()
            assert not bad.load_into(cold)
        assert len(cold.table) == 0
        assert len(caplog.records) == 1 and "ignoring drafter state" in caplog.records[0].getMessage()
    # a server started on the bad file still serves
    with live_server(model, drafter="aded:capacity=4096", state_dir=tmp_path, batch=False) as (url, _):
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60).status_code == 200
    assert np.load(corrupt.path)["meta.drafter"] == "aded:capacity=4096"  # rewritten whole on shutdown


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_outputs_are_the_same_at_1_4_and_8_streams_and_equal_generate(model, float_noise_log) -> None:
    """The two batching properties on the equivalence prompts, greedy and seeded sampling.

    With ``lookup`` (whose tree depends on the request's own context only) a request's trees
    are the same whatever else is in flight, and batched verification gives each tree the
    logits it gets in a batch of one: outputs are identical at every concurrency, by
    construction. Against ``Generator.generate`` (one request, plain decoding) tokens may
    differ only at a near-tie, and on these prompts none is allowed (test_equivalence).
    """
    from test_equivalence import GREEDY_CASES, MAX_NEAR_TIES, explain_mismatch

    plain = Generator(model, drafter="none")
    cases = []  # (case id, request body for its endpoint, expected token ids, prompt ids)
    for index, (case_id, prompt, chat) in enumerate(GREEDY_CASES):
        sampling = {"temperature": 0.8, "top_p": 0.95, "seed": 100 + index} if index % 5 == 4 else {"temperature": 0}
        ids = plain.encode(prompt, chat)
        expected = plain.generate(ids, max_new_tokens=TOKENS, **sampling)
        if isinstance(prompt, list) or chat:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            body = ("/v1/chat/completions", {"messages": messages, "max_tokens": TOKENS, **sampling})
        else:
            body = ("/v1/completions", {"prompt": ids.tolist(), "max_tokens": TOKENS, **sampling})
        cases.append((case_id, body, expected, ids.tolist(), sampling["temperature"] == 0))
    with live_server(model, drafter="lookup", state_dir=None, max_active=8, max_waiting=16) as (url, _):
        def ask(case) -> str:
            path, body = case[1]
            reply = httpx.post(f"{url}{path}", json=body, timeout=300).json()
            choice = reply["choices"][0]
            return choice["message"]["content"] if "message" in choice else choice["text"]

        runs, paths = {}, {}
        for streams in (1, 4, 8):
            steps, forwards = metric(url, "adaspec:verify_steps_total"), metric(url, "adaspec:verify_forwards_total")
            accepted = metric(url, "vllm:spec_decode_num_accepted_tokens_total")
            with concurrent.futures.ThreadPoolExecutor(streams) as pool:
                runs[streams] = list(pool.map(ask, cases))
            steps = metric(url, "adaspec:verify_steps_total") - steps
            forwards = metric(url, "adaspec:verify_forwards_total") - forwards
            mat = 1 + (metric(url, "vllm:spec_decode_num_accepted_tokens_total") - accepted) / steps
            print(f"{streams} streams: {steps / forwards:.2f} trees per forward, MAT {mat:.3f}")
            assert mat > STREAMS_MAT_FLOOR  # lookup drafted and was accepted at every concurrency
            if streams == 1:
                assert forwards == steps  # one request at a time: one tree per forward, whatever the path
            else:
                paths[streams] = batching_path_used(url, steps, forwards)
    assert runs[1] == runs[4] == runs[8]  # whatever else was in flight
    mismatches, near_ties = [], 0
    for (case_id, _, expected, ids, greedy), text in zip(cases, runs[8]):
        if text != expected.text:
            got = plain.encode(text, chat=False).tolist() if text else []
            is_tie, what = explain_mismatch(model, ids, expected.token_ids, got) if greedy else (False, "sampled")
            near_ties += is_tie
            mismatches.append(f"{case_id}: {what}")
            if is_tie:
                float_noise_log.append(f"server {paths[8]}: {case_id}: {what}")
    assert near_ties <= MAX_NEAR_TIES and len(mismatches) == near_ties, "\n".join(mismatches)


STREAMS_MAT_FLOOR = 1.32  # lookup at budget 8 on the 13 prompts: measured 1.408 at 1, 4 and 8 streams, 80% of its excess over 1


def test_a_chats_second_turn_reuses_the_first_and_reports_cached_tokens(client, model) -> None:
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    first = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=TOKENS, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And three more?"}]
    second = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=TOKENS, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2
    cold = Generator(model, drafter="none").generate(messages, max_new_tokens=TOKENS)
    assert second.choices[0].message.content == cold.text


def test_predicted_outputs_through_the_openai_client(client, model) -> None:
    messages = [{"role": "user", "content": "Rewrite in uppercase: the cat sat on the mat and looked at the hat."}]
    plain = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=TOKENS, temperature=0)
    text = plain.choices[0].message.content
    predicted = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=TOKENS, temperature=0,
                                               prediction={"type": "content", "content": text})
    assert predicted.choices[0].message.content == text
    details = predicted.usage.completion_tokens_details
    # the prediction is the answer itself: every one of its tokens ends up in the completion
    assert details.accepted_prediction_tokens == len(model.tokenizer(text, add_special_tokens=False).input_ids)
    assert details.rejected_prediction_tokens == 0
    chunks = list(client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True}, prediction={"type": "content", "content": [{"type": "text", "text": text}]}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens_details.accepted_prediction_tokens == details.accepted_prediction_tokens
    completion = httpx.post(f"{client.base_url}completions".replace("/v1/v1", "/v1"), timeout=120, json={
        "prompt": "def add(a, b):", "max_tokens": 16, "temperature": 0,
        "prediction": {"type": "content", "content": "\n    return a + b\n"}})
    assert completion.status_code == 200 and "completion_tokens_details" in completion.json()["usage"]


def stop_across_two_steps(model, prompt: str, chat: bool, prediction: str) -> tuple[str, str]:
    """A stop string that begins in one speculative step's accepted tokens and ends in the next step's.

    ``lookup`` at budget 8 with a prediction drafts from the request alone (its context and the
    prediction), so a request's steps are the same in this generator and in a server running that
    drafter. The stop string is the last two characters of one step and the first two of the next,
    both steps having accepted drafted tokens, at the first such boundary whose four characters
    occur nowhere earlier in the text.

    Args:
        model: the embedded model.
        prompt: the prompt text.
        chat: whether it goes through the chat template.
        prediction: the predicted output (the answer itself, so that steps accept several tokens).

    Returns:
        The stop string, and the text plain decoding gives before it (without any stop).
    """
    request = Generator(model, drafter="lookup", budget=8).open(prompt, max_new_tokens=TOKENS, chat=chat,
                                                                prediction=prediction)
    request.start()
    ends, sizes = [1], [1]  # output tokens after the prefill and after each step; tokens each step added
    while not request.finished:
        request.step()
        sizes.append(request.last_step.new_tokens)
        ends.append(ends[-1] + sizes[-1])
    ids = request.result().token_ids
    request.close()
    full = model.tokenizer.decode(ids, skip_special_tokens=True)
    for step in range(1, len(sizes) - 1):
        if sizes[step] < 2 or sizes[step + 1] < 2:  # both chunks hold accepted drafts
            continue
        cut = len(model.tokenizer.decode(ids[: ends[step]], skip_special_tokens=True))
        stop = full[cut - 2 : cut + 2]
        if len(stop) == 4 and full.find(stop) == cut - 2 and len(stop.strip()) >= 2:
            return stop, full[: cut - 2]
    raise AssertionError(f"no two consecutive multi-token steps with a usable boundary: {sizes} in {full!r}")


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_stop_string_split_across_two_accepted_chunks_ends_the_text_streamed_or_not(model, endpoint) -> None:
    """``stop`` through a live server and the official client: the text ends just before the stop
    string, whose first half came in one step's accepted drafts and the rest in the next; streamed,
    no piece of it is sent. Plain decoding with the same stop string agrees."""
    chat = endpoint == "chat"
    prompt = PROMPTS[1] if chat else "The planets of the solar system, in order from the sun: Mercury,"
    answer = Generator(model, drafter="none").generate(prompt, max_new_tokens=TOKENS, chat=chat).text
    stop, expected = stop_across_two_steps(model, prompt, chat, prediction=answer)
    plain = Generator(model, drafter="none").generate(prompt, max_new_tokens=TOKENS, chat=chat, stop=[stop])
    assert plain.text == expected and plain.finish_reason == "stop"
    with live_server(model, drafter="lookup", budget=8, state_dir=None) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        options = dict(model=MODEL_NAME, max_tokens=TOKENS, temperature=0, stop=[stop])
        if chat:
            messages = [{"role": "user", "content": prompt}]
            options["prediction"] = {"type": "content", "content": answer}
            reply = client.chat.completions.create(messages=messages, **options)
            text, reason = reply.choices[0].message.content, reply.choices[0].finish_reason
            chunks = list(client.chat.completions.create(messages=messages, stream=True, **options))
            pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        else:
            options["extra_body"] = {"prediction": {"type": "content", "content": answer}}
            reply = client.completions.create(prompt=prompt, **options)
            text, reason = reply.choices[0].text, reply.choices[0].finish_reason
            chunks = list(client.completions.create(prompt=prompt, stream=True, **options))
            pieces = [c.choices[0].text for c in chunks if c.choices]
        assert (text, reason) == (expected, "stop")
        assert "".join(pieces) == expected and chunks[-1].choices[0].finish_reason == "stop"
        assert sum(1 for piece in pieces if piece) >= 2  # it really streamed, step by step
