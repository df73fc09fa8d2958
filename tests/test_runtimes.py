"""A runtime is one module and one registry line: a test double over the transformers runtime,
added with one line, runs through the API, the CLI and the server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

import adaspec
from adaspec import AdaspecError, Generator
from adaspec.backends import RUNTIMES
from adaspec.backends.base import BatchSupport
from adaspec.backends.hf import HFBackend
from adaspec.backends.hf_runtime import HFRuntime, load_hf
from adaspec.cli import main
from adaspec.models.loaded import LoadedModel, LoadOptions
from server_harness import live_server

PROMPT = "List the first five prime numbers, then list them again in reverse order."


class CountingBackend(HFBackend):
    """The transformers backend, counting the trees it verifies and their nodes."""

    verified: list[int]

    def verify(self, tree, pick):
        self.verified.append(tree.size)
        return super().verify(tree, pick)


class ToyRuntime(HFRuntime):
    """A runtime of its own name, limits and defaults over a transformers model."""

    name = "toy"
    max_tree_nodes = 16
    default_drafter = "lookup"
    default_budget = 4

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.verified: list[int] = []  # tree sizes verified by all its backends

    def label(self) -> str:
        return "toy runtime"

    def new_backend(self) -> CountingBackend:
        backend = CountingBackend(self.model, model_name=self.model_name, head=self.head)
        backend.verified = self.verified
        return backend

    def batch_support(self) -> BatchSupport:
        return BatchSupport(None, "the toy runtime verifies one request per forward")


def load_toy(path: Path, name: str, options: LoadOptions) -> LoadedModel:
    """The toy runtime's loader: the transformers loader, with the runtime swapped."""
    loaded = load_hf(path, name, options)
    base = loaded.runtime
    return dataclasses.replace(loaded, runtime=ToyRuntime(base.model, name, base.attention, base.check_folder))


@pytest.fixture
def toy(monkeypatch) -> LoadedModel:
    monkeypatch.setitem(RUNTIMES, "toy", load_toy)  # the one registry line
    return adaspec.load(backend="toy")


def test_a_registered_runtime_decodes_with_its_own_defaults_and_limits(toy, model) -> None:
    generator = Generator(toy)
    assert (generator.drafter.name, generator.budget, toy.runtime.label()) == ("lookup", 4, "toy runtime")
    out = generator.generate(PROMPT, max_new_tokens=40)
    plain = Generator(model, drafter="none").generate(PROMPT, max_new_tokens=40)
    assert out.token_ids == plain.token_ids
    assert max(toy.runtime.verified) == 4 and out.stats.num_accepted_tokens > 0  # it drafted, through its backends
    with pytest.raises(AdaspecError, match=r"1\.\.16 \(the most the toy runtime"):
        Generator(toy, budget=17)


def test_a_registered_runtime_runs_from_the_command_line_and_the_server(toy, capsys) -> None:
    assert main(["generate", PROMPT, "--backend", "toy", "--max-new-tokens", "12", "--no-state", "--json"]) == 0
    assert '"drafter": "lookup"' in capsys.readouterr().out
    before = len(toy.runtime.verified)
    with live_server(toy, drafter="lookup", budget=None) as (url, server):
        assert not server.scheduler.batched
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0},
                           timeout=120).json()
    assert reply["usage"]["completion_tokens"] == 12
    assert len(toy.runtime.verified) > before
    assert np.all(np.array(toy.runtime.verified) <= 4)
