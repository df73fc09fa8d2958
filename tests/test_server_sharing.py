"""A server many people share: API keys guard it, and nothing learned or cached from one scope's
requests reaches another scope (prefix caches and ``cached_tokens``, suffix histories, learned
tables, acceptance calibration, saved state), with memory that grows with what a scope holds."""

from __future__ import annotations

import httpx2 as httpx
import numpy as np
import pytest

from adaspec.backends.pool import BackendPool
from adaspec.budget import LatencyProfile, TreeSizer
from adaspec.cli import main
from adaspec.drafters import DraftRequest, StepFeedback, make_drafter
from adaspec.drafters.suffix_index import SuffixIndex
from adaspec.errors import AdaspecError
from adaspec.sampling import SamplingParams
from adaspec.serve import ApiKeys, load_keys
from adaspec.serve.auth import scope_name
from adaspec.session import Session
from adaspec.tree import DraftTree
from server_harness import live_server

KEYS = ("sk-alpha-0123456789", "sk-beta-9876543210")
CHAT = {"messages": [{"role": "user", "content": "Name the four seasons of the year."}], "max_tokens": 12,
        "temperature": 0}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(model):
    with live_server(model, drafter="hybrid:copy=suffix", state_dir=None, keys=ApiKeys(KEYS)) as (url, srv):
        yield url, srv


def test_keys_guard_everything_but_health(keyed) -> None:
    url, srv = keyed
    assert srv.history_scope == "key"  # the default with keys on
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                         ("GET", "/metrics")):
        for headers in ({}, bearer("sk-wrong"), {"Authorization": KEYS[0]}):  # none, unknown, not a Bearer
            response = httpx.request(method, f"{url}{path}", json=CHAT, headers=headers, timeout=30)
            assert response.status_code == 401, (path, headers, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
            assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
    for key in KEYS:
        assert httpx.get(f"{url}/v1/models", headers=bearer(key), timeout=30).status_code == 200
    metrics = httpx.get(f"{url}/metrics", headers=bearer(KEYS[1]), timeout=30).text
    assert 'adaspec:requests_rejected_total{model_name="smollm2-test",reason="unauthorized"} 12.0' in metrics


def test_metrics_can_be_public(model) -> None:
    with live_server(model, drafter="lookup", state_dir=None, keys=ApiKeys(KEYS), public_metrics=True) as (url, _):
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 200
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401


def test_keys_come_from_the_options_a_file_and_the_environment(tmp_path, capsys) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nsk-one\n\n  sk-two  \n")
    keys = load_keys(["sk-cli"], key_file, {"ADASPEC_API_KEY": "sk-env"})
    assert len(keys) == 4
    assert all(keys.identify(f"Bearer {k}".encode()) for k in ("sk-cli", "sk-one", "sk-two", "sk-env"))
    assert keys.identify(b"bearer sk-one") == keys.identify(b"Bearer sk-one")  # the scheme is case-insensitive
    assert keys.identify(b"Bearer sk-three") is None and keys.identify(None) is None
    assert load_keys([], None, {}) is None
    with pytest.raises(AdaspecError):
        load_keys([], tmp_path / "missing", {})
    with pytest.raises(AdaspecError):
        ApiKeys(["has space"])
    assert main(["serve", "--api-key-file", str(tmp_path / "missing")]) == 2  # before any model loads
    assert "cannot read the API key file" in capsys.readouterr().err


def test_scope_names_hide_what_they_name() -> None:
    alpha, beta = (ApiKeys(KEYS).identify(f"Bearer {key}".encode()) for key in KEYS)
    assert scope_name("server", alpha, "", "alice") == ""
    assert scope_name("key", alpha, "", None) != scope_name("key", beta, "", None)
    assert scope_name("user", alpha, "", "alice") != scope_name("user", beta, "", "alice")  # a user lives in its key
    assert scope_name("user", alpha, "", "alice") != scope_name("user", alpha, "", "bob")
    for name in (scope_name("user", alpha, "", "alice"), scope_name("key", alpha, "", None)):
        assert "alice" not in name and KEYS[0] not in name and len(name) <= 40


def test_cached_tokens_never_cross_scopes_and_a_cache_salt_separates_too(keyed) -> None:
    url, _ = keyed

    def ask(key: str, **extra) -> dict:
        response = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, **extra}, headers=bearer(key), timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    cached = lambda reply: reply["usage"]["prompt_tokens_details"]["cached_tokens"]  # noqa: E731
    first = ask(KEYS[0])
    again = ask(KEYS[0])
    other = ask(KEYS[1])  # the same prompt from another key: nothing of the first key's cache
    salted = ask(KEYS[0], cache_salt="project-7")
    salted_again = ask(KEYS[0], cache_salt="project-7")
    assert cached(again) > 0 and cached(salted_again) > 0  # within a scope (and salt) the prefix is reused
    assert cached(other) == 0 and cached(salted) == 0
    texts = {reply["choices"][0]["message"]["content"] for reply in (first, again, other, salted, salted_again)}
    assert len(texts) == 1  # reuse or not, the text is the same


class FakeBackend:
    """Holds some tokens, like a pooled backend's cache."""

    def __init__(self) -> None:
        self.held = np.zeros(0, dtype=np.int64)

    def cached_prefix(self, prompt_ids):
        n = min(self.held.size, prompt_ids.size - 1)
        return int(np.argmin(np.append(self.held[:n] == prompt_ids[:n], False))) if n > 0 else 0

    def forget(self) -> None:
        self.held = self.held[:0]

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_pool_reuses_a_cache_only_within_its_partition() -> None:
    pool = BackendPool(FakeBackend, max_in_use=4, max_idle=2)
    prompt = np.arange(10)
    first = pool.acquire(prompt, "a")
    first.held = prompt.copy()
    pool.release(first)
    assert pool.acquire(prompt, "a") is first and first.cached_prefix(prompt) == 9  # same partition: reused
    pool.release(first)
    other = pool.acquire(prompt, "b")
    assert other is first and other.cached_prefix(prompt) == 0  # another partition: made to forget first


def test_learned_tables_are_taught_by_the_shared_scope_only() -> None:
    tree = DraftTree(np.array([5, 6]), np.array([-1, 0]))
    for spec in ("aded", "recycling"):
        for scope, teaches in (("key:0123", False), ("", True)):
            drafter = make_drafter(spec, 100)
            width = drafter.feedback_width
            topk = np.array([np.arange(6, 6 + width), np.arange(7, 7 + width)])  # [2, K]
            step = StepFeedback(tree, np.array([0, 1]), 7, topk, np.full(topk.shape, 1.0 / width, dtype=np.float32), 4)
            cold = {name: array.copy() for name, array in drafter.state().items()}
            state = drafter.begin(DraftRequest(np.array([1, 2, 3, 4, 5]), scope))
            drafter.observe(step, state)
            changed = any(not np.array_equal(cold[name], array) for name, array in drafter.state().items())
            assert changed == teaches, (spec, scope)


def test_acceptance_calibration_is_kept_per_scope() -> None:
    sizer = TreeSizer(LatencyProfile((1, 2, 4, 8), (10.0, 11.0, 12.0, 14.0)))
    session = Session(make_drafter("lookup", 100), 8, sizer, 100)
    greedy = SamplingParams()
    a, b, a_again = (session.begin(np.arange(1, 6), greedy, scope) for scope in ("key:a", "key:b", "key:a"))
    assert a.sizer.calibrator is a_again.sizer.calibrator
    assert a.sizer.calibrator is not b.sizer.calibrator


def test_a_scopes_history_costs_memory_for_its_tokens(model) -> None:
    drafter = make_drafter("suffix", model.vocab_size)
    for user in range(16):  # sixteen made-up scopes
        drafter.end(drafter.begin(DraftRequest(np.arange(1, 50), f"user:{user}")), np.arange(100, 400))
    assert sum(history.nbytes for history in drafter.histories.values()) < 16 * (2 << 20)  # was 16 x ~212 MiB


def test_a_growing_index_finds_true_matches_and_once_grown_what_a_full_one_finds() -> None:
    rng = np.random.default_rng(3)
    grown, full = SuffixIndex(1 << 12, 4, initial=16), SuffixIndex(1 << 12, 4)
    for _ in range(150):
        sequence = rng.integers(0, 30, rng.integers(5, 60))
        grown.add_sequence(sequence)
        full.add_sequence(sequence)
        assert grown.capacity <= full.capacity and np.array_equal(grown.recent_tokens(), full.recent_tokens())
        query = rng.integers(0, 30, 12)
        held = grown.recent_tokens()  # [size] oldest first; held[k] is at position written - size + k
        ends, lengths = grown.matches(query)
        for end, length, following in zip(ends, lengths, grown.following(ends, 8)):
            at = end - (grown.written - held.size)
            assert np.array_equal(held[at - length + 1 : at + 1], query[-length:])  # a real match
            after = held[at + 1 : at + 9]
            stop = np.flatnonzero(after < 0)
            after = after[: stop[0]] if stop.size else after
            assert np.array_equal(following[: after.size], after)  # what really followed it
        if grown.capacity == full.capacity:  # rebuilt at the full size, it is the full one
            found = [sorted(zip(index.matches(query)[1].tolist(),
                                map(tuple, index.following(index.matches(query)[0], 8).tolist())))
                     for index in (grown, full)]
            assert found[0] == found[1]
    assert grown.capacity == full.capacity  # it grew to the limit, and wraps like the full one from there


def test_saved_state_holds_no_raw_user_strings(model, tmp_path) -> None:
    secret = "alice.secret@example.com"
    with live_server(model, drafter="suffix", state_dir=tmp_path, history_scope="user") as (url, _):
        body = {"prompt": "Write a haiku about snow.", "max_tokens": 8, "temperature": 0, "user": secret}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
    files = list(tmp_path.rglob("*.npz"))
    assert files and all(secret not in str(path) for path in files)
    with np.load(files[0]) as data:
        for name in data.files:
            assert secret not in name
            if data[name].dtype.kind in "US":
                assert all(secret not in str(value) for value in data[name].ravel())
