"""A drafter state file that is corrupt, truncated or foreign (bit flips, wrong shapes, tokens
outside the vocabulary, a broken deflate stream) costs one warning line and a cold start, never
a crash or a failing request; a save that fails is tried again at the next tick."""

from __future__ import annotations

import io
import logging
import zipfile

import httpx2 as httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaspec import Generator
from adaspec.drafters import DraftRequest, StepFeedback, make_drafter
from adaspec.serve.saver import StateSaver
from adaspec.session import check_tree_contract
from adaspec.state_store import FORMAT, DrafterStateStore
from adaspec.tree import DraftTree
from server_harness import live_server

VOCAB = 500
SPECS = ("aded:capacity=4096", "suffix", "hybrid:copy=suffix", "recycling")
CONTEXTS = [np.array([1, 2, 3, 1, 2, 3, 1, 2], dtype=np.int64), np.array([7, 7, 7, 7], dtype=np.int64)]


def learned(spec: str):
    """A drafter of ``spec`` that learned a little from made-up requests."""
    drafter = make_drafter(spec, VOCAB)
    rng = np.random.default_rng(0)
    for request in range(3):
        state = drafter.begin(DraftRequest(rng.integers(0, VOCAB, 20), ""))
        tree = DraftTree(np.array([5, 6, 7]), np.array([-1, 0, 1]))
        topk = rng.integers(0, VOCAB, (3, drafter.feedback_width))
        probs = np.full(topk.shape, 1.0 / max(1, topk.shape[1]), dtype=np.float32)
        drafter.observe(StepFeedback(tree, np.array([0, 1]), 9, topk, probs, 4), state)
        drafter.end(state, rng.integers(0, VOCAB, 40))
    return drafter


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """A good state file per drafter spec, as bytes."""
    folder = tmp_path_factory.mktemp("states")
    out = {}
    for spec in SPECS:
        store = DrafterStateStore(folder, "m", spec)
        assert store.save(learned(spec))
        out[spec] = store.path.read_bytes()
    return out


def drafts_cleanly(drafter) -> None:
    """Drafting after a load never breaks the tree contract (a bad table would fail every request)."""
    for context in CONTEXTS:
        state = drafter.begin(DraftRequest(context, ""))
        tree = drafter.propose(context, 16, state)
        check_tree_contract(tree, int(context[-1]), 16, VOCAB, drafter.name)


def rewrite(data: bytes, change) -> bytes:
    """The file with its arrays changed by ``change(arrays)``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 10**9), st.just(0)),
    st.tuples(st.sampled_from(["oov", "shape", "dtype", "drop", "nan", "scalar"]), st.integers(0, 10**9), st.just(0)),
)


@pytest.mark.timeout(600)
@settings(derandomize=True, max_examples=160, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=st.sampled_from(SPECS), mutation=MUTATIONS)
def test_a_damaged_state_file_is_one_warning_and_a_cold_start(files, tmp_path, caplog, spec, mutation) -> None:
    kind, where, bit = mutation
    data = bytearray(files[spec])
    if kind == "flip":
        data[where % len(data)] ^= 1 << bit
    elif kind == "cut":
        data = data[: where % len(data)]
    else:
        def change(arrays: dict) -> None:
            names = sorted(n for n in arrays if not n.startswith("meta."))
            name = names[where % len(names)]
            value = arrays[name]
            arrays[name] = {"oov": lambda: np.full_like(value, VOCAB + 7) if value.dtype.kind in "iu" else value,
                            "shape": lambda: np.atleast_1d(value)[..., None].repeat(2, axis=-1),
                            "dtype": lambda: np.full(value.shape, "x"),
                            "nan": lambda: np.full(value.shape, np.nan),
                            "scalar": lambda: np.array(3),
                            "drop": lambda: None}[kind]()
            if arrays[name] is None:
                del arrays[name]
        data = bytearray(rewrite(bytes(data), change))
    store = DrafterStateStore(tmp_path, "m", spec)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(bytes(data))
    drafter = make_drafter(spec, VOCAB)
    cold = drafter.state()
    with caplog.at_level(logging.WARNING, logger="adaspec"):
        caplog.clear()
        loaded = store.load_into(drafter)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if not loaded:
        assert len(warnings) == 1 and "ignoring drafter state" in warnings[0].getMessage()
        assert "\n" not in warnings[0].getMessage()
        assert all(np.array_equal(cold[name], value) for name, value in drafter.state().items())  # cold, as it was
    drafts_cleanly(drafter)


def broken_deflate(data: bytes) -> bytes:
    """The file with one member's deflate stream garbled past its header (``zlib.error`` on read)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            raw = source.read(info.filename)
            if info.filename.endswith("tokens.0.npy") or info.filename.endswith("keys.npy"):
                raw = raw[:20] + bytes(b ^ 0x5A for b in raw[20:])
            target.writestr(info, raw, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


@pytest.mark.parametrize("damage", ["deflate", "type"])
def test_a_server_starts_clean_on_a_file_that_raises_zlib_or_type_errors(model, tmp_path, files, caplog,
                                                                           damage) -> None:
    spec = "suffix"
    store = DrafterStateStore(tmp_path, model.name, spec)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    good = DrafterStateStore(tmp_path / "good", model.name, spec)
    good.save(learned(spec))
    data = good.path.read_bytes()
    if damage == "deflate":
        data = broken_deflate(data)
    else:  # scope names that are not a sequence: iterating them raises TypeError
        data = rewrite(data, lambda arrays: arrays.update({"scopes": np.array(5)}))
    store.path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="adaspec"):
        caplog.clear()
        with live_server(model, drafter=spec, state_dir=tmp_path, batch=False) as (url, _):
            body = {"prompt": "Hi there", "max_tokens": 2, "temperature": 0}
            assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
    assert [r.getMessage() for r in caplog.records if "ignoring drafter state" in r.getMessage()]
    with np.load(store.path) as saved:  # rewritten whole on shutdown
        assert str(saved["meta.format"]) == FORMAT


class FlakyStore(DrafterStateStore):
    """A store whose first write fails (a full disk), the next succeed."""

    failures = 1

    def save_arrays(self, state) -> bool:
        if self.failures:
            self.failures -= 1
            return False
        return super().save_arrays(state)


def test_a_failed_save_is_tried_again_at_the_next_tick(model, tmp_path) -> None:
    generator = Generator(model, drafter="aded", budget=8)
    generator.generate("def add(a, b):", max_new_tokens=8, chat=False)
    saver = StateSaver(generator.session, FlakyStore(tmp_path, model.name, "aded"))
    saver.mark_changed()
    assert not saver.save_if_changed()  # the disk was full
    assert saver.save_if_changed() and saver.store.path.is_file()  # nothing new was learned; written anyway
    assert not saver.save_if_changed()  # and not again until something changes
