"""Runs an adaspec server in a background thread on a free loopback port, for tests."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx2 as httpx
import uvicorn

from adaspec import Generator, LoadedModel
from adaspec.bench.server_process import free_port
from adaspec.serve import OpenAIServer, build_server
from adaspec.state_store import open_state

MODEL_NAME = "smollm2-test"
PROMPTS = [  # greedy answers equal plain decoding's at any concurrency on these (test_server)
    "Write a Python function that returns the n-th Fibonacci number.",
    "List the planets of the solar system in order.",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "What is the capital of France? Answer in one sentence.",
    "Give three tips for writing clear code.",
    "Translate 'good morning' into Spanish, French and German.",
    "Write a SQL query that counts the rows of a table named users.",
]
TOKENS = 32  # new tokens per answer


@contextmanager
def live_server(model: LoadedModel, drafter: str = "hybrid", budget: int | None = 8,
                state_dir: Path | None = None, **options) -> Iterator[tuple[str, OpenAIServer]]:
    """Serves ``model`` on 127.0.0.1 until the block ends.

    Args:
        model: the loaded model.
        drafter: the drafter spec.
        budget: the tree budget (None: the backend's default).
        state_dir: where the drafter's learned state is kept (None: not kept).
        options: ``build_server`` options (max_active, max_waiting, request_timeout...).

    Yields:
        The base URL (``http://127.0.0.1:PORT``) and the server object.
    """
    generator = Generator(model, drafter=drafter, budget=budget)
    store = open_state(generator.drafter, state_dir, model.name, drafter)
    server = build_server(generator, MODEL_NAME, store, **options)
    with live_app(server.app) as url:
        yield url, server


@contextmanager
def live_app(app) -> Iterator[str]:
    """Serves an ASGI app with uvicorn on a free loopback port until the block ends.

    Args:
        app: the application (its lifespan runs).

    Yields:
        The base URL.
    """
    port = free_port()
    runner = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not runner.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start within 30 s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        runner.should_exit = True
        thread.join(timeout=30)


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample's value from ``/metrics`` (0 when absent).

    Args:
        url: the server's base URL.
        name: the sample name, e.g. ``vllm:num_requests_running``.
        labels: text that must appear in the sample's label set, e.g. ``reason="timeout"``.

    Returns:
        The value.
    """
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
