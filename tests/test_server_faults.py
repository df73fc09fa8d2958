"""One request's failure costs that request alone: a failure injected at each point of a request's
life in the scheduler (start, draft, verify alone and in a group, finish, result) ends it with a
500 while the requests beside it get exactly their solo output, and a failure releasing idle
memory costs nothing; the scheduler keeps serving after each."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from adaspec import Generator
from adaspec.backends.base import SerialVerifier
from adaspec.request import Request
from adaspec.serve import OpenAIServer, Scheduler, ServerMetrics
from server_harness import live_app

PROMPTS = ["List four fruits, one per line:", "Count from one to ten in words:", "Name three colours:"]
TOKENS = 20
POINTS = ("start", "draft", "verify", "batch", "finish", "result")


def mark(point: str) -> str:
    """The stop string that marks a request to fail at ``point`` (it never occurs in any output)."""
    return f"\u2407fail-at-{point}\u2407"


def marked(request: Request, point: str) -> bool:
    return mark(point) in request.options.stop


class InjectedFault(RuntimeError):
    """The failure the tests inject."""


class FaultyVerifier(SerialVerifier):
    """Verifies each request on its own backend, in groups of up to 4 as a batch verifier takes
    them. A group holding a request marked ``verify`` fails (alone or not); a group of several
    holding one marked ``batch`` fails *after* every member's forward ran, so each cache grew
    (the scheduler must roll them back before verifying each alone)."""

    max_requests = 4
    max_rows = 1 << 30

    def __init__(self) -> None:
        self.marks: dict[int, tuple[str, ...]] = {}  # id(backend) -> its request's stop strings
        self.batch_failures = 0

    def verify(self, backends, trees, picks):
        points = {point for backend in backends for point in POINTS if mark(point) in self.marks.get(id(backend), ())}
        if "verify" in points:
            raise InjectedFault("verify")
        outputs = super().verify(backends, trees, picks)
        if "batch" in points and len(backends) > 1:
            self.batch_failures += 1
            raise InjectedFault("a batched forward")
        return outputs


@pytest.fixture
def faults(monkeypatch):
    """Makes marked requests fail at their point; returns the verifier that must be used."""
    verifier = FaultyVerifier()
    original = {name: getattr(Request, name) for name in ("start", "draft", "finish", "result")}

    def failing(name):
        def method(self, *args, **kwargs):
            if marked(self, name):
                raise InjectedFault(name)
            result = original[name](self, *args, **kwargs)
            if name == "start":
                verifier.marks[id(self.backend)] = self.options.stop
            return result
        return method

    for name in original:
        monkeypatch.setattr(Request, name, failing(name))
    return verifier


@pytest.fixture(scope="module")
def solo(model) -> list[str]:
    plain = Generator(model, drafter="none")
    return [plain.generate(p, max_new_tokens=TOKENS, chat=False).text for p in PROMPTS]


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_failure_at_any_point_costs_only_its_request(model, faults, solo) -> None:
    generator = Generator(model, drafter="lookup", budget=8)  # trees depend on the request's own text only
    scheduler = Scheduler(generator, ServerMetrics("m"), max_active=4, verifier=faults)
    with live_app(OpenAIServer(scheduler, "m").app) as url:
        def ask(prompt: str, stop: list[str]) -> httpx.Response:
            return httpx.post(f"{url}/v1/completions", timeout=120, json={
                "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "stop": stop})

        for point in POINTS:
            with ThreadPoolExecutor(4) as pool:
                doomed = pool.submit(ask, "Write the alphabet:", [mark(point)])
                honest = [pool.submit(ask, prompt, ["\u2407never\u2407"]) for prompt in PROMPTS]
                replies = [future.result() for future in honest]
            assert [r.status_code for r in replies] == [200] * 3, (point, [r.text for r in replies])
            assert [r.json()["choices"][0]["text"] for r in replies] == solo, point
            reply = doomed.result()
            if point == "batch":  # its group failed; alone, after a rollback, it succeeds unchanged
                assert reply.status_code == 200, reply.text
            else:
                assert reply.status_code == 500 and "InjectedFault" in reply.json()["error"]["message"], reply.text
            assert scheduler.alive
        assert faults.batch_failures > 0  # a group with several requests did fail
        expected = Generator(model, drafter="none").generate("Write the alphabet:", max_new_tokens=TOKENS, chat=False)
        again = ask("Write the alphabet:", [])
        assert again.status_code == 200 and again.json()["choices"][0]["text"] == expected.text


@pytest.mark.timeout(300)
def test_a_failure_releasing_idle_memory_leaves_the_server_serving(model, monkeypatch) -> None:
    generator = Generator(model, drafter="lookup", budget=8)
    calls = []

    def failing_trim(keep: int = 0) -> int:
        calls.append(threading.current_thread().name)
        raise InjectedFault("trim")

    monkeypatch.setattr(generator.pool, "trim", failing_trim)
    scheduler = Scheduler(generator, ServerMetrics("m"), idle_release=0.2)
    with live_app(OpenAIServer(scheduler, "m").app) as url:
        body = {"prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == ["adaspec-scheduler"] and scheduler.alive
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
