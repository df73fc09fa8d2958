"""Time to first token of a chat's second turn after ~1,370 tokens of history: adaspec (Python API
and ``adaspec serve``) reusing the cached prefix, against a cold prefill and against
llama-cpp-python reusing its own prefix (``Llama.generate`` without reset, in its own process).

Each conversation's first turn asks about a long list of MT-Bench questions (other people's text)
and gets a ~150-token answer; the second turn re-sends all of it plus a short follow-up, as a chat
client does. Three conversations, medians reported. Run it alone on the machine:

    .venv/bin/python benchmarks/second_turn.py --out benchmarks/second-turn
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx2 as httpx

import adaspec
from adaspec.bench.peers import Peer
from adaspec.bench.prompts import load_prompts
from adaspec.bench.server_process import start_server

FIRST_ANSWER_TOKENS = 150
FOLLOW_UP = "Thanks. Now pick the single hardest question of the list and say why, in two sentences."


def conversations(count: int, history_tokens: int, model: adaspec.LoadedModel) -> list[list[dict]]:
    """First turns: a long list of questions (sized so that prompt + answer is ~``history_tokens``)."""
    questions = [p.turns[0] for p in load_prompts(["mt-bench"])]
    out = []
    for index in range(count):
        picked, text = [], ""
        for question in questions[index * 7:] + questions[: index * 7]:
            candidate = text + f"\n{len(picked) + 1}. {question}"
            words = len(model.tokenizer(candidate).input_ids)
            if words > history_tokens - FIRST_ANSWER_TOKENS - 40:
                break
            picked.append(question)
            text = candidate
        out.append([{"role": "user", "content": "Here is a list of questions people asked an assistant:" + text
                     + "\n\nSort them into topics (maths, coding, writing, other) and give one line per topic."}])
    return out


def api_second_turn(model: adaspec.LoadedModel, first: list[dict]) -> dict:
    """adaspec's Python API: turn one, then turn two on the same generator (reuse) and on a fresh one (cold)."""
    warm = adaspec.Generator(model)
    reply = warm.generate(first, max_new_tokens=FIRST_ANSWER_TOKENS)
    second = first + [{"role": "assistant", "content": reply.text}, {"role": "user", "content": FOLLOW_UP}]
    reused = warm.generate(second, max_new_tokens=1)
    cold = adaspec.Generator(model).generate(second, max_new_tokens=1)
    return {"history_tokens": len(reply.prompt_ids) + len(reply.token_ids), "second_prompt_tokens": len(reused.prompt_ids),
            "cached_tokens": reused.stats.cached_prompt_tokens, "api_reuse_s": reused.stats.prefill_s,
            "api_cold_s": cold.stats.prefill_s, "second": second}


def peer_second_turn(peer: Peer, model: adaspec.LoadedModel, first: list[dict], second: list[dict]) -> dict:
    """llama-cpp-python in its own process: turn one, then turn two keeping its prefix, and cold."""
    encode = adaspec.Generator(model, drafter="none").encode
    peer.ask(encode(first), FIRST_ANSWER_TOKENS)
    reused = peer.ask(encode(second), 1, reuse=True)
    cold = peer.ask(encode(second), 1, reuse=False)
    return {"peer_reuse_s": reused["first_token_s"], "peer_cold_s": cold["first_token_s"]}


def server_second_turn(client: httpx.Client, url: str, first: list[dict], second: list[dict]) -> dict:
    """``adaspec serve``: turn one, then turn two streamed; the time from sending it to its first text.

    One client sends both turns over its kept-alive connection, as a chat client (the ``openai``
    package's) does; a new client per request would add its own setup (~25 ms here) to the figure.
    """
    client.post(f"{url}/v1/chat/completions", json={"messages": first, "max_tokens": FIRST_ANSWER_TOKENS,
                                                    "temperature": 0}, timeout=600).raise_for_status()
    body = {"messages": second, "max_tokens": 4, "temperature": 0, "stream": True}
    sent = time.monotonic()
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line and '"content": ""' not in line:
                return {"server_reuse_s": time.monotonic() - sent}
    raise RuntimeError("the server sent no text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/second-turn"))
    parser.add_argument("--backends", default="llama.cpp,hf")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--history", type=int, default=1370)
    args = parser.parse_args()
    report: dict = {"history_target": args.history, "backends": {}}
    for backend in args.backends.split(","):
        model = adaspec.load(backend=backend)
        rows = []
        peer = Peer(model, "llama.cpp-generate") if backend == "llama.cpp" else None
        process, url = start_server(["--backend", backend])
        client = httpx.Client()
        try:
            for first in conversations(args.conversations, args.history, model):
                row = api_second_turn(model, first)
                second = row.pop("second")
                if peer is not None:
                    row |= peer_second_turn(peer, model, first, second)
                row |= server_second_turn(client, url, first, second)
                rows.append(row)
                print(backend, json.dumps(row), flush=True)
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=60)
            if peer is not None:
                peer.close()
        medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        report["backends"][backend] = {"runs": rows, "median": medians}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    lines = ["| runtime | history tokens | adaspec API, reuse | adaspec server, reuse | adaspec, cold prefill | "
             "llama-cpp-python, its own reuse | llama-cpp-python, cold | adaspec reuse / llama-cpp-python reuse |",
             "|---|---|---|---|---|---|---|---|"]
    for backend, result in report["backends"].items():
        m = result["median"]
        peer_reuse = m.get("peer_reuse_s")
        lines.append(f"| {backend} | {m['history_tokens']:.0f} | {1000 * m['api_reuse_s']:.0f} ms | "
                     f"{1000 * m['server_reuse_s']:.0f} ms | {1000 * m['api_cold_s']:.0f} ms | "
                     + (f"{1000 * peer_reuse:.0f} ms | {1000 * m['peer_cold_s']:.0f} ms | "
                        f"API {m['api_reuse_s'] / peer_reuse:.2f}x, server {m['server_reuse_s'] / peer_reuse:.2f}x |"
                        if peer_reuse else "- | - | - |"))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
