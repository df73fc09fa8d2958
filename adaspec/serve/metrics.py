"""The server's Prometheus metrics, named as vLLM names them where the two overlap, so existing
dashboards work unchanged; adaspec's own carry an ``adaspec:`` prefix."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from adaspec.request import Generation, StepReport
from adaspec.tree import MAX_TREE_NODES

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
                   20.0, 40.0, 80.0)


class ServerMetrics:
    """Counters, gauges and histograms of one server, in a registry of its own, recorded through
    verbs named for what happened (``request_started``, ``step_finished``...).

    Args:
        model_name: the served model name (every metric's ``model_name`` label).
    """

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        label = ["model_name"]

        def counter(name: str, doc: str, extra: list[str] | None = None) -> Counter:
            return Counter(name, doc, label + (extra or []), registry=self.registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, label, registry=self.registry).labels(model_name)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, label, buckets=LATENCY_BUCKETS, registry=self.registry).labels(model_name)

        # the children of this model's label, bound once
        self.running = gauge("vllm:num_requests_running", "Requests being decoded now.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests queued for a decoding slot.")
        self.success = counter("vllm:request_success", "Finished requests, by finish reason.", ["finished_reason"])
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens run.").labels(model_name)
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated.").labels(model_name)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "From arrival to the first token.")
        self.itl = histogram("vllm:inter_token_latency_seconds", "Between successive output tokens.")
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "From arrival to the last token.")
        self.drafts = counter("vllm:spec_decode_num_drafts", "Verification steps that checked a draft.").labels(model_name)
        self.draft_tokens = counter("vllm:spec_decode_num_draft_tokens", "Draft tokens verified.").labels(model_name)
        self.accepted_tokens = counter("vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted.").labels(model_name)
        self.accepted_per_pos = counter("vllm:spec_decode_num_accepted_tokens_per_pos",
                                        "Draft tokens accepted at each depth of the accepted path.", ["position"])
        self.rejected = counter("adaspec:requests_rejected", "Requests turned away, by reason.", ["reason"])
        self.failed = counter("adaspec:requests_failed", "Requests ended by an error, timeout or disconnect.",
                              ["reason"])
        self.steps = counter("adaspec:verify_steps", "Verification steps (with or without a draft).").labels(model_name)
        self.forwards = counter("adaspec:verify_forwards", "Model forwards that verified trees (one per step "
                                "when requests are verified alone, fewer when batched).").labels(model_name)
        self.batching = Gauge("adaspec:batched_verification", "1 when the active requests' trees are verified "
                              "together (exact on this machine), 0 when one per forward; the label says why or how.",
                              label + ["detail"], registry=self.registry)
        self.running.set(0)
        self.waiting.set(0)

    def set_batching(self, enabled: bool, detail: str) -> None:
        """Records whether requests are verified together, and why or how.

        Args:
            enabled: True when batched.
            detail: the reason batching is off, or how it is exact.
        """
        self.batching.labels(self.model_name, detail).set(1 if enabled else 0)

    def request_rejected(self, reason: str) -> None:
        """Counts a request turned away before it was queued.

        Args:
            reason: ``queue_full``, ``stopping``, ``scheduler_down``...
        """
        self.rejected.labels(self.model_name, reason).inc()

    def request_failed(self, reason: str) -> None:
        """Counts a request ended without a result.

        Args:
            reason: ``bad_request``, ``internal``, ``timeout``, ``disconnected``...
        """
        self.failed.labels(self.model_name, reason).inc()

    def queue_changed(self, waiting: int, running: int) -> None:
        """Records how many requests wait and run now.

        Args:
            waiting: queued requests.
            running: requests being decoded.
        """
        self.waiting.set(waiting)
        self.running.set(running)

    def forward_run(self) -> None:
        """Counts one model forward that verified trees."""
        self.forwards.inc()

    def step_finished(self, report: StepReport, seconds: float) -> None:
        """Records one verification step.

        Args:
            report: what the step drafted and accepted.
            seconds: the time since the request's previous output.
        """
        self.steps.inc()
        if report.draft_tokens > 0:
            self.drafts.inc()
            self.draft_tokens.inc(report.draft_tokens)
            self.accepted_tokens.inc(report.accepted_depth)
            for position in range(min(report.accepted_depth, MAX_TREE_NODES)):
                self.accepted_per_pos.labels(self.model_name, str(position)).inc()
        if report.new_tokens > 0:
            self.generation_tokens.inc(report.new_tokens)
            for _ in range(report.new_tokens):  # the step's tokens arrive together: share its time
                self.itl.observe(seconds / report.new_tokens)

    def request_started(self, prompt_tokens: int, seconds_to_first_token: float) -> None:
        """Records a request's prefill and first token.

        Args:
            prompt_tokens: its prompt length.
            seconds_to_first_token: from arrival to the first token.
        """
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(1)
        self.ttft.observe(seconds_to_first_token)

    def request_finished(self, generation: Generation, seconds: float) -> None:
        """Records a finished request.

        Args:
            generation: its result.
            seconds: from arrival to the last token.
        """
        reason = "length" if generation.finish_reason == "length" else "stop"
        self.success.labels(self.model_name, reason).inc()
        self.e2e.observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
