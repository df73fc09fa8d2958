"""One benchmark method's vLLM, in a process of its own, as a user runs it (``benchmarks/vllm_bench.py``).

Started as ``vllm_worker.py METHOD MODEL_DIR``; builds ``vllm.LLM`` once with the method's
speculative settings, prints ``{"ready": ...}`` on stdout, then answers one JSON line per JSON line
read from stdin: ``{"jobs": [[turn, ...], ...], "chat": [bool, ...], "max_tokens": N}`` runs the
jobs concurrently through ``LLM.chat`` (a raw-completion job through ``LLM.generate``), each
job's later turns after the model's own earlier answers, and replies with the outputs, the wall
time and the deltas of vLLM's own counters (spec-decode drafts, draft and accepted tokens; generated
tokens and engine steps from the inter-token-latency histogram). ``{"quit": true}`` ends it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB (whole): ~23k tokens, 8 requests of up to ~2.9k

# method -> LLM keyword arguments (vLLM's documented n-gram settings: docs "N-gram", k=5, max n=4)
NGRAM = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}
REPLY = "@adaspec-bench "  # starts every reply line (anything else on the channel is ignored)
COUNTERS = ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens", "vllm:spec_decode_num_accepted_tokens",
            "vllm:generation_tokens")


def method_kwargs(method: str) -> dict[str, Any]:
    """The ``LLM`` arguments of a benchmark method.

    Args:
        method: ``plain``, ``plain-b`` (a second plain engine: the noise floor), ``ngram``,
            ``vllm-suffix`` (arctic-inference), ``adaspec`` (the default proposer) or
            ``adaspec:SPEC[@BUDGET]`` (a drafter spec, budget ``auto`` or a number of tokens).

    Returns:
        The keyword arguments.

    Raises:
        ValueError: for an unknown method.
    """
    from adaspec.integrations.vllm import engine_args

    if method in ("plain", "plain-b"):
        return {}
    if method == "ngram":
        return {"speculative_config": dict(NGRAM)}
    if method == "vllm-suffix":
        return {"speculative_config": {"method": "suffix", "num_speculative_tokens": 8}}
    if method == "adaspec":
        return engine_args()
    if method.startswith("adaspec:"):
        spec, _, budget = method[len("adaspec:"):].partition("@")
        return engine_args(spec, budget=int(budget) if budget.isdigit() else budget or "auto")
    raise ValueError(f"unknown method {method!r}")


def counters(llm: Any) -> dict[str, float]:
    """vLLM's cumulative counters now (and engine steps: the inter-token-latency histogram's count)."""
    found = {name: 0.0 for name in (*COUNTERS, "steps")}
    for metric in llm.get_metrics():
        if metric.name in COUNTERS:
            found[metric.name] += float(metric.value)
        elif metric.name == "vllm:inter_token_latency_seconds":
            found["steps"] += float(metric.count)
    return found


def run(llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Runs one set of concurrent jobs, turn by turn.

    Args:
        llm: the engine.
        request: ``jobs`` (per job, its user turns), ``chat`` (per job, whether it is a chat) and
            ``max_tokens``.

    Returns:
        ``outputs`` (per job, per turn, the generated token ids), ``seconds`` and ``counters``
        (deltas over the run).
    """
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=int(request["max_tokens"]))
    jobs, chats = request["jobs"], request["chat"]
    histories: list[list[dict[str, str]]] = [[] for _ in jobs]
    outputs: list[list[list[int]]] = [[] for _ in jobs]
    before = counters(llm)
    started = time.perf_counter()
    for turn in range(max(len(job) for job in jobs)):
        active = [i for i, job in enumerate(jobs) if turn < len(job)]
        chat_rows = [i for i in active if chats[i]]
        raw_rows = [i for i in active if not chats[i]]
        for i in chat_rows:
            histories[i].append({"role": "user", "content": jobs[i][turn]})
        results = {}
        if chat_rows:
            for i, out in zip(chat_rows, llm.chat([histories[i] for i in chat_rows], params, use_tqdm=False)):
                results[i] = out.outputs[0]
        if raw_rows:
            for i, out in zip(raw_rows, llm.generate([jobs[i][turn] for i in raw_rows], params, use_tqdm=False)):
                results[i] = out.outputs[0]
        for i in active:
            outputs[i].append(list(results[i].token_ids))
            if chats[i]:
                histories[i].append({"role": "assistant", "content": results[i].text})
    seconds = time.perf_counter() - started
    after = counters(llm)
    return {"outputs": outputs, "seconds": seconds, "counters": {k: after[k] - before[k] for k in after}}


def main(reply: Any) -> None:
    """Loads the engine and answers requests until told to quit.

    Args:
        reply: where the replies go (one line each, after ``REPLY``).
    """
    from vllm import LLM

    method, model = sys.argv[1], sys.argv[2]
    started = time.perf_counter()
    llm = LLM(model, dtype="float32", enforce_eager=True, disable_log_stats=False, max_model_len=4096,
              max_num_seqs=8, seed=0, **method_kwargs(method))
    reply.write(REPLY + json.dumps({"ready": method, "load_s": round(time.perf_counter() - started, 1)}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        reply.write(REPLY + json.dumps(run(llm, request)) + "\n")
        reply.flush()


if __name__ == "__main__":
    # vLLM logs to stdout: the replies get a descriptor of their own, file descriptor 1 (and so
    # every log line, the engine processes' included) goes to stderr
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    main(channel)
