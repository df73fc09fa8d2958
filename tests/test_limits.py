"""Bounded everywhere: tables, settings, pools, calibrations and caches cannot grow or hang on
what a user or a client chooses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adaspec
from adaspec import AdaspecError, Generator
from adaspec.backends.hf import HFBackend
from adaspec.backends.pool import BackendPool
from adaspec.backends.tree_cache import TreeKVCache
from adaspec.budget import LatencyProfile, TreeSizer
from adaspec.drafters import make_drafter
from adaspec.drafters.trigram import MAX_CAPACITY, TrigramTable
from adaspec.models.cache import file_digest
from adaspec.options import RequestOptions

VOCAB = 500


@pytest.mark.timeout(120)
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(1, 400), min_size=1, max_size=5), st.integers(0, 2**31))
def test_a_trigram_table_stays_bounded_whatever_the_update_size(capacity, sizes, seed) -> None:
    """One update may hold many more contexts than the table can take (a long prompt learned by a
    small table); it used to fill the hash table and loop forever."""
    table = TrigramTable(VOCAB, capacity=capacity, slots=2)
    rng = np.random.default_rng(seed)
    for size in sizes:
        keys = rng.integers(0, VOCAB * VOCAB, size)  # [m] distinct-ish contexts
        table.update(keys, rng.integers(0, VOCAB, (size, 2)), np.full((size, 2), 0.5, dtype=np.float32), rate=0.5)
        assert len(table) <= capacity
        assert np.count_nonzero(table.keys >= 0) == len(table) <= table.keys.size // 2
    newest = int(keys[-1])
    assert table.successors(newest // VOCAB - 1, newest % VOCAB)[0].size > 0  # the newest context was kept


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_small_aded_table_on_a_long_prompt_returns(tmp_path) -> None:
    prompt = " ".join(f"word{i} is followed by thing{i * 7 % 13}." for i in range(60))  # ~600 tokens
    proc = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", "--drafter", "aded:capacity=16", "--no-state",
                           "--max-new-tokens", "8", "--json", prompt], capture_output=True, text=True, timeout=280,
                          env={**os.environ, "ADASPEC_CACHE": os.environ["ADASPEC_CACHE"]})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["new_tokens"] == 8


@pytest.mark.parametrize("spec, message", [
    (f"aded:capacity={MAX_CAPACITY + 1}", "capacity must lie in"),
    ("aded:capacity=1099511627776", "capacity must lie in"),
    ("aded:capacity=2**40", "must be a int"),
    ("aded:simulations=100000000", "simulations must lie in"),
    ("recycling:template_nodes=99999999", "template_nodes must lie in"),
    ("lookup:max_depth=100000", "max_depth must lie in"),
    ("hybrid:min_ngram=0", "min_ngram must lie in"),
])
def test_absurd_drafter_settings_are_one_line_errors(spec, message) -> None:
    with pytest.raises(AdaspecError, match=message) as caught:
        make_drafter(spec, VOCAB)
    assert "\n" not in str(caught.value)


def test_request_options_are_checked_in_one_place() -> None:
    assert RequestOptions.of(max_new_tokens=5, stop="x").stop == ("x",)
    for bad, message in [({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
                         ({"stop": [1]}, "stop"), ({"stop": ["s"] * 17}, "stop strings"),
                         ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                         ({"colour": "red"}, "unknown option 'colour'")]:
        with pytest.raises(AdaspecError, match=message):
            RequestOptions.of(**bad)


class Counted:
    """A stand-in backend that records whether it was closed."""

    name, chain_only, profile_key = "counted", False, "counted"

    def __init__(self) -> None:
        self.closed = False

    def release(self) -> None:
        pass

    def cached_prefix(self, prompt_ids) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def test_the_backend_pool_is_bounded_in_use_and_idle() -> None:
    pool = BackendPool(Counted, max_in_use=3, max_idle=1)
    held = [pool.acquire() for _ in range(3)]
    assert len({id(b) for b in held}) == 3
    with pytest.raises(AdaspecError, match="3 requests are in flight"):
        pool.acquire()
    for backend in held:
        pool.release(backend)
    assert pool.in_use == 0 and pool.idle == 1  # one kept warm, the others closed
    assert sum(b.closed for b in held) == 2
    assert pool.trim(keep=0) == 1 and pool.idle == 0


def test_tree_sizer_keeps_a_bounded_number_of_client_settings() -> None:
    sizer = TreeSizer(LatencyProfile((1, 2, 4, 8), (10.0, 12.0, 15.0, 20.0)), max_settings=4)
    first = sizer.begin((0.0, 0, 1.0))
    for temperature in np.linspace(0.1, 1.9, 50):
        sizer.begin((float(temperature), 0, 1.0))
    assert len(sizer.calibrators) == 4
    assert (0.0, 0, 1.0) not in sizer.calibrators and first.calibrator is not None  # the holder keeps its own


def test_a_backend_keeps_a_finished_request_only_up_to_its_bound(model) -> None:
    backend = HFBackend(model.runtime.model, max_kept_tokens=100)
    backend.prefill_logits(np.arange(10, 60))  # [50]
    backend.release()
    assert backend.cache_len == 50 and backend.cached_prefix(np.arange(10, 80)) == 50  # kept for a shared prefix
    backend.prefill_logits(np.arange(10, 10 + TreeKVCache.INITIAL_CAPACITY + 100))  # grows past the first allocation
    backend.release()
    assert backend.cache is None and backend.cached_prefix(np.arange(10, 80)) == 0  # too long to keep: freed


def test_attention_not_proven_on_tree_masks_is_refused_in_one_line() -> None:
    for implementation in ("flash_attention_2", "flex_attention"):
        with pytest.raises(AdaspecError, match="not proven on tree masks") as caught:
            adaspec.load(attn_implementation=implementation)
        assert "\n" not in str(caught.value)


def test_a_file_digest_is_computed_once_per_file_version(tmp_path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = file_digest(path)
    memos = [m for m in (adaspec.models.cache.cache_root() / "digests").glob("*.json") if str(path.resolve()) in m.read_text()]
    assert len(memos) == 1 and first in memos[0].read_text()
    assert file_digest(path) == first
    path.write_bytes(b"b" * 1001)  # a new version: new size and time
    assert file_digest(path) != first
