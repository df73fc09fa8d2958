"""adaspec serve under what strangers send and what can go wrong inside: random and malformed
bodies, a scheduler that dies, state saving beside live streams, memory after a burst."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaspec import Generator
from adaspec.backends.base import SerialVerifier
from adaspec.serve import OpenAIServer, Scheduler, ServerMetrics
from adaspec.state_store import DrafterStateStore
from server_harness import live_app, live_server, metric

OK_BODY = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def server(model):
    with live_server(model, state_dir=None, max_active=4, max_waiting=8, request_timeout=20.0) as (url, srv):
        yield url, srv


# values of every kind a client might put in a field: wrong types, extremes, NaN, odd Unicode
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2, -1, 2**31, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["\u0000", "\ud800", "\U0010ffff", "\u202e\u200b", "💥" * 20, "é" * 300]),
    st.lists(st.integers(-5, 60000), max_size=6), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
          "seed", "stop", "stream", "stream_options", "n", "logit_bias", "user", "echo", "logprobs", "tools"]
SHORT_TEXT = st.text(min_size=1, max_size=60)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "wizard", ""]),
                                 "content": st.one_of(SHORT_TEXT, ODD_VALUES)})
# a valid length is kept small so that a well-formed body finishes in a moment (a missing or null
# one means "up to the context", which is valid and slow)
LENGTH = st.one_of(st.integers(-3, 3), st.sampled_from([10**12, 2**63, -(2**63), "2", 1.5, float("nan"), [2]]))
BODY = st.fixed_dictionaries(
    {"max_tokens": LENGTH},
    optional={
        **{name: ODD_VALUES for name in FIELDS if name not in ("max_tokens", "max_completion_tokens")},
        "max_completion_tokens": LENGTH,
        "prompt": st.one_of(SHORT_TEXT, ODD_VALUES),
        "messages": st.one_of(st.lists(MESSAGE, max_size=3), ODD_VALUES),
    },
)


@pytest.mark.timeout(600)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]), body=BODY,
       raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_random_and_malformed_bodies_never_get_a_5xx(server, path, body, raw) -> None:
    url, _ = server
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    response = httpx.post(f"{url}{path}", content=content, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and "\n" not in error["message"]


def test_the_server_answers_a_good_request_after_the_fuzzing(server) -> None:
    url, _ = server
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.post(f"{url}/v1/completions", json=OK_BODY, timeout=60).json()["usage"]["completion_tokens"] == 2


class CrashingScheduler(Scheduler):
    """A scheduler whose loop hits a bug on its first request (to test what happens after)."""

    def _admit_waiting(self) -> None:
        with self._wake:
            if self._waiting:
                raise RuntimeError("a bug in the scheduling loop")


def test_a_dead_scheduler_makes_new_requests_fail_fast(model) -> None:
    """After the scheduling thread dies, a new request is refused at submission (its own message and
    a ``scheduler_down`` rejection), never queued to wait for an answer that cannot come."""
    generator = Generator(model, drafter="lookup", budget=8)
    scheduler = CrashingScheduler(generator, ServerMetrics("m"), request_timeout=600.0)
    with live_app(OpenAIServer(scheduler, "m", max_context=generator.max_context).app) as url:
        first = httpx.post(f"{url}/v1/completions", json=OK_BODY, timeout=30)  # the one that kills it
        assert first.status_code == 503 and "scheduler stopped" in first.json()["error"]["message"]
        assert httpx.get(f"{url}/health").status_code == 503
        later = httpx.post(f"{url}/v1/completions", json=OK_BODY, timeout=30)
        assert later.status_code == 503 and "not running" in later.json()["error"]["message"]
        assert metric(url, "adaspec:requests_rejected_total", 'reason="scheduler_down"') == 1  # refused, not queued


class RecordingStore(DrafterStateStore):
    """A state store that notes which thread writes it."""

    writers: list[str]

    def save_arrays(self, state) -> bool:
        self.writers.append(threading.current_thread().name)
        return super().save_arrays(state)


def test_state_is_saved_by_its_own_thread_while_requests_run(model, tmp_path) -> None:
    from adaspec.serve.saver import StateSaver

    generator = Generator(model, drafter="aded", budget=8)
    store = RecordingStore(tmp_path, model.name, "aded")
    store.writers = []
    saver = StateSaver(generator.session, store, every=0.05)
    scheduler = Scheduler(generator, ServerMetrics("m"), saver=saver)
    with live_app(OpenAIServer(scheduler, "m", max_context=generator.max_context).app) as url:
        body = {"prompt": "def add(a, b):", "max_tokens": 48, "temperature": 0}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=120).status_code == 200
        deadline = time.monotonic() + 5
        while not store.writers and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.writers and set(store.writers) <= {"adaspec-state-saver", "MainThread"}
    assert store.writers[0] == "adaspec-state-saver"  # periodic saves never run on the scheduler's thread
    assert store.path.is_file()


def test_idle_caches_are_freed_after_an_idle_spell(model) -> None:
    with live_server(model, state_dir=None, idle_release=0.3, batch=False) as (url, srv):
        bodies = [{"prompt": f"Count to {n}:", "max_tokens": 8, "temperature": 0} for n in (5, 6, 7)]
        threads = [threading.Thread(target=httpx.post, args=(f"{url}/v1/completions",), kwargs={"json": b, "timeout": 60})
                   for b in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pool = srv.scheduler.generator.pool
        deadline = time.monotonic() + 10
        while pool.idle > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.in_use == 0 and pool.idle <= 1


def test_health_says_whether_requests_are_verified_together(server) -> None:
    url, srv = server
    health = httpx.get(f"{url}/health").json()
    assert health["batching"]["enabled"] == srv.scheduler.batched
    assert health["batching"]["detail"]
    metrics = httpx.get(f"{url}/metrics").text
    assert "adaspec:batched_verification{" in metrics
    assert not math.isnan(float(next(line for line in metrics.splitlines()
                                     if line.startswith("adaspec:batched_verification{")).rsplit(" ", 1)[1]))


class StepRecordingScheduler(Scheduler):
    """Notes, at every step, whether each stream's first text had been written by then."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_text_written: list[bool | None] = []  # None: no first text sent yet, or not a stream

    def _verify(self, group) -> None:
        for job, _, _ in group:
            self.first_text_written.append(None if job.first_text is None else job.first_text.is_set())
        super()._verify(group)


def test_a_streams_first_text_is_written_before_the_next_forward(model) -> None:
    # the scheduler waits (here without a time limit) until the handler has written the first
    # text, so that it does not wait for a core while the next forward runs; a non-streamed
    # request is never waited for
    generator = Generator(model, drafter="none")
    scheduler = StepRecordingScheduler(generator, ServerMetrics("m"), first_text_wait=60.0)
    with live_app(OpenAIServer(scheduler, "m", max_context=generator.max_context).app) as url:
        body = {"prompt": "Count to five:", "max_tokens": 6, "temperature": 0}
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
            streamed = "".join(json.loads(line[6:])["choices"][0]["text"] for line in response.iter_lines()
                               if line.startswith("data: {"))
        assert True in scheduler.first_text_written and False not in scheduler.first_text_written
        scheduler.first_text_written.clear()
        whole = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        assert scheduler.first_text_written and all(w is None for w in scheduler.first_text_written)
    assert streamed == whole


class GroupRecordingVerifier(SerialVerifier):
    """Verifies each request alone, but takes groups of up to 2 requests and 12 rows as a batch
    verifier would, and notes every group it is given."""

    max_requests = 2
    max_rows = 12

    def __init__(self) -> None:
        self.groups: list[list[int]] = []  # tree sizes per group

    def verify(self, backends, trees, picks):
        self.groups.append([tree.size for tree in trees])
        return super().verify(backends, trees, picks)


@pytest.mark.slow  # the eight-stream server test checks the grouping in the default tier
def test_the_step_groups_requests_as_the_verifier_allows(model) -> None:
    # one step path for every runtime: requests draft in turn and their trees go to the verifier
    # in groups no bigger than it takes (a first request always fits); outputs stay solo outputs
    generator = Generator(model, drafter="hybrid", budget=8)
    verifier = GroupRecordingVerifier()
    scheduler = Scheduler(generator, ServerMetrics("m"), verifier=verifier)
    prompts = [f"List {n} fruits, one per line:" for n in (3, 4, 5)]
    with live_app(OpenAIServer(scheduler, "m", max_context=generator.max_context).app) as url:
        with ThreadPoolExecutor(3) as pool:
            texts = list(pool.map(lambda p: httpx.post(f"{url}/v1/completions", json={
                "prompt": p, "max_tokens": 24, "temperature": 0}, timeout=120).json()["choices"][0]["text"], prompts))
    assert texts == [Generator(model, drafter="none").generate(p, max_new_tokens=24, chat=False).text for p in prompts]
    assert any(len(group) == 2 for group in verifier.groups)  # the three requests overlapped
    assert all(len(group) <= 2 and (len(group) == 1 or sum(group) <= 12) for group in verifier.groups)
    assert any(sum(group) > 1 for group in verifier.groups)  # drafts were verified, not only roots
