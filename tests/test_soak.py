"""A few minutes of a shared server under mixed honest and hostile clients (CI's slow tier:
``ADASPEC_SLOW=1 pytest -m slow``): several keys, streamed and whole answers, cache reuse within a
scope, and clients that send no key, oversized or malformed bodies, or walk away mid-request.
Every honest answer equals its solo output, nothing gets a 5xx, no request's ``cached_tokens``
exceeds what its own scope's earlier prompts could give it, and memory comes back after the load."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from adaspec import Generator
from adaspec.serve import ApiKeys
from server_harness import PROMPTS, TOKENS, live_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("ADASPEC_SLOW") != "1", reason="the slow tier: set ADASPEC_SLOW=1")]

KEYS = ("sk-soak-one", "sk-soak-two", "sk-soak-three")
HOSTILE_KEY = "sk-soak-hostile"  # a scope of its own: what it caches bounds no honest scope's cached_tokens
SECONDS = 150  # the load's duration
MOST_HONEST = 60  # requests per honest client


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class Honest:
    """A client of one key asking its own prompts, streamed or not, and checking every answer."""

    def __init__(self, url: str, key: str, prompts: list[int], solo: list[str], ids: list[list[int]], seed: int):
        self.url, self.key, self.prompts, self.solo, self.ids = url, key, prompts, solo, ids
        self.rng = random.Random(seed)
        self.sent: list[int] = []  # prompt indices this scope has sent
        self.problems: list[str] = []
        self.done = 0

    def run(self, until: float) -> None:
        try:
            self._run(until)
        except Exception as error:  # noted, so the test sees it (a thread's exception would be lost)
            self.problems.append(f"{self.key}: {type(error).__name__}: {error}")

    def _run(self, until: float) -> None:
        while time.monotonic() < until and self.done < MOST_HONEST:
            index = self.rng.choice(self.prompts)
            bound = max([shared_prefix(self.ids[index], self.ids[i]) for i in self.sent] or [0])
            self.sent.append(index)
            body = {"messages": [{"role": "user", "content": PROMPTS[index]}], "max_tokens": TOKENS, "temperature": 0}
            text, usage, status = self.ask(body, stream=self.rng.random() < 0.5)
            self.done += 1
            if status == 429:
                continue
            if status != 200 or text != self.solo[index]:
                self.problems.append(f"{self.key} #{index}: {status} {text!r}")
            elif usage["prompt_tokens_details"]["cached_tokens"] > bound:  # reused another scope's cache
                self.problems.append(f"{self.key} #{index}: cached {usage['prompt_tokens_details']} > {bound}")

    def ask(self, body: dict, stream: bool) -> tuple[str, dict | None, int]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if not stream:
            response = httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=300)
            if response.status_code != 200:
                return response.text, None, response.status_code
            reply = response.json()
            return reply["choices"][0]["message"]["content"], reply["usage"], 200
        pieces, usage = [], None
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=300) as reply:
            if reply.status_code != 200:
                return reply.read().decode(), None, reply.status_code
            for line in reply.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        return json.dumps(chunk), None, 500
                    usage = chunk.get("usage") or usage
                    pieces += [c["delta"].get("content") or "" for c in chunk.get("choices", [])]
        return "".join(pieces), usage, 200


def hostile(url: str, until: float, statuses: list, seed: int) -> None:
    """Sends what strangers send, and walks away from what it started."""
    rng = random.Random(seed)
    key = {"Authorization": f"Bearer {HOSTILE_KEY}"}
    long = {"prompt": "Count from one to one thousand in words:", "max_tokens": 2000}
    while time.monotonic() < until:
        kind = rng.choice(["nokey", "wrongkey", "huge", "json", "messages", "max_tokens", "garbage", "leave",
                           "leave-stream"])
        try:
            if kind == "nokey":
                response = httpx.post(f"{url}/v1/completions", json=long, timeout=60)
            elif kind == "wrongkey":
                response = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=60)
            elif kind == "huge":
                response = httpx.post(f"{url}/v1/completions", headers=key, timeout=60,
                                      content=b'{"prompt": "' + b"x" * (3 << 20) + b'"}')
            elif kind == "json":
                response = httpx.post(f"{url}/v1/chat/completions", headers=key, content=b'{"messages": [', timeout=60)
            elif kind == "messages":
                response = httpx.post(f"{url}/v1/chat/completions", headers=key, timeout=60,
                                      json={"messages": [{"role": "user", "content": "hi"}] * 20_000})
            elif kind == "max_tokens":
                response = httpx.post(f"{url}/v1/completions", headers=key, json={**long, "max_tokens": 10**9},
                                      timeout=60)
            elif kind == "garbage":
                response = httpx.post(f"{url}/v1/completions", headers=key, content=os.urandom(256), timeout=60)
            elif kind == "leave":  # gives up after half a second: the server cancels it
                response = httpx.post(f"{url}/v1/completions", headers=key, json=long,
                                      timeout=httpx.Timeout(30, read=0.5))
            else:
                with httpx.stream("POST", f"{url}/v1/completions", headers=key, json={**long, "stream": True},
                                  timeout=60) as stream:
                    next(stream.iter_lines())
                continue
            statuses.append((kind, response.status_code))
        except httpx.ReadTimeout:
            if kind != "leave":
                statuses.append((kind, "read timeout"))
        except Exception as error:  # noted, so the test sees it (a thread's exception would be lost)
            statuses.append((kind, f"{type(error).__name__}: {error}"))


@pytest.mark.timeout(900)
def test_a_shared_server_under_mixed_load(model) -> None:
    plain = Generator(model, drafter="none")
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    solo = [plain.generate(c, max_new_tokens=TOKENS).text for c in chats]
    ids = [plain.encode(c).tolist() for c in chats]
    options = dict(state_dir=None, keys=ApiKeys(KEYS + (HOSTILE_KEY,)), max_active=4, max_waiting=16, idle_release=2.0,
                   max_body_mb=2.0)
    with live_server(model, drafter="hybrid:copy=suffix", **options) as (url, srv):
        warm = {"messages": chats[0], "max_tokens": 4, "temperature": 0}
        httpx.post(f"{url}/v1/chat/completions", json=warm, headers={"Authorization": f"Bearer {HOSTILE_KEY}"},
                   timeout=120).raise_for_status()
        time.sleep(4)  # idle release
        before = resident_mb()
        until = time.monotonic() + SECONDS
        honest = [Honest(url, key, list(range(i, len(PROMPTS), len(KEYS))), solo, ids, seed=i)
                  for i, key in enumerate(KEYS)]
        statuses: list = []
        threads = [threading.Thread(target=h.run, args=(until,)) for h in honest]
        threads += [threading.Thread(target=hostile, args=(url, until, statuses, 100 + i)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after_load = resident_mb()
        time.sleep(8)  # idle caches are freed after 2 s
        after_idle = resident_mb()
        assert srv.scheduler.alive
    print(f"soak: {sum(h.done for h in honest)} honest requests, {len(statuses)} hostile ones; resident memory "
          f"{before:.0f} MB before, {after_load:.0f} MB right after, {after_idle:.0f} MB after the idle release")
    problems = [p for h in honest for p in h.problems]
    assert not problems, problems[:5]
    assert sum(h.done for h in honest) >= 20
    bad = [s for s in statuses if not isinstance(s[1], int) or s[1] >= 500]
    assert statuses and not bad, bad[:5]
    assert after_idle <= 1.2 * before, (before, after_load, after_idle)
