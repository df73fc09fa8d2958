"""``adaspec serve``: an OpenAI-compatible HTTP server (chat and text completions, streaming,
Prometheus metrics) whose drafter learns from every request and keeps what it learned across
restarts."""

from __future__ import annotations

import logging
from pathlib import Path

from adaspec.backends.base import BatchSupport
from adaspec.engine import Generator
from adaspec.serve.admission import SchedulerDown, ServerBusy, ShuttingDown
from adaspec.serve.app import DEFAULT_MAX_BODY_MB, OpenAIServer
from adaspec.serve.auth import ApiKeys, load_keys
from adaspec.serve.jobs import JobSpec
from adaspec.serve.metrics import ServerMetrics
from adaspec.serve.saver import StateSaver
from adaspec.serve.scheduler import Scheduler
from adaspec.serve.shutdown import DEFAULT_DRAIN_S, DrainingServer
from adaspec.state_store import DrafterStateStore

log = logging.getLogger("adaspec")


def served_name(model_name: str) -> str:
    """The name a model is served under by default: its file or folder name, without "embedded ".

    Args:
        model_name: ``LoadedModel.name``.

    Returns:
        e.g. ``SmolLM2-135M-Instruct`` or ``qwen2.5-coder-0.5b-instruct-q4_k_m.gguf``.
    """
    return Path(model_name.removeprefix("embedded ")).name or model_name


def build_server(generator: Generator, model_name: str, store: DrafterStateStore | None = None,
                 aliases: tuple[str, ...] = (), max_active: int = 8, max_waiting: int = 64,
                 request_timeout: float = 600.0, save_every: float = 300.0, batch: bool = True,
                 idle_release: float = 20.0, history_scope: str | None = None, keys: ApiKeys | None = None,
                 public_metrics: bool = False, max_body_mb: float = DEFAULT_MAX_BODY_MB) -> OpenAIServer:
    """Wires a generator into a scheduler and the HTTP routes (nothing runs until started).

    Args:
        generator: the model, drafter and budget to serve.
        model_name: the name clients use.
        aliases: other model names accepted in requests.
        max_active: requests decoded at once.
        max_waiting: requests queued beyond those before 429s.
        request_timeout: seconds a request may take.
        store: where the drafter's learned state is kept (``state_store.open_state``, which has
            loaded it already); None: not kept.
        save_every: seconds between periodic saves.
        batch: verify the active requests' trees in one forward where the runtime can do it
            exactly (it checks the machine now; the answer is logged, in ``/health`` and a metric).
        idle_release: seconds without requests after which idle caches are freed.
        history_scope: whose requests share learned and cached state (``server``, ``user`` or
            ``key``; None: ``key`` with keys, else ``server``).
        keys: the API keys accepted (``load_keys``; None: the server is open).
        public_metrics: serve ``/metrics`` without a key.
        max_body_mb: the largest request body read, in MiB (413 beyond).

    Returns:
        The server; serve ``server.app`` with any ASGI server (its lifespan starts and stops the scheduler).
    """
    saver = None if store is None else StateSaver(generator.session, store, every=save_every)
    support = generator.model.runtime.batch_support() if batch else BatchSupport(None, "turned off (--no-batch)")
    if support.verifier is None:
        log.warning("adaspec: verifying requests one at a time: %s", support.reason)
    metrics = ServerMetrics(model_name)
    metrics.set_batching(support.verifier is not None, support.reason)
    scheduler = Scheduler(generator, metrics, max_active=max_active, max_waiting=max_waiting,
                          request_timeout=request_timeout, saver=saver, verifier=support.verifier,
                          idle_release=idle_release)
    return OpenAIServer(scheduler, model_name, aliases=aliases, max_context=generator.max_context,
                        batching=support, history_scope=history_scope, keys=keys, public_metrics=public_metrics,
                        max_body_bytes=int(max_body_mb * (1 << 20)))


def run_server(server: OpenAIServer, host: str, port: int, drain_timeout: float = DEFAULT_DRAIN_S) -> None:
    """Serves until SIGTERM or Ctrl-C, then drains: new requests are refused, running ones get
    ``drain_timeout`` seconds, the rest end with an error event, and the state is saved; a second
    signal saves and exits at once (``shutdown``).

    Args:
        server: from ``build_server``.
        host: the address to listen on.
        port: the port.
        drain_timeout: seconds running requests get to finish after the first signal.
    """
    import uvicorn

    config = uvicorn.Config(server.app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    DrainingServer(config, server.scheduler, drain_timeout).run()


__all__ = ["ApiKeys", "JobSpec", "OpenAIServer", "Scheduler", "SchedulerDown", "ServerBusy", "ServerMetrics",
           "ShuttingDown", "StateSaver", "build_server", "load_keys", "run_server", "served_name"]
