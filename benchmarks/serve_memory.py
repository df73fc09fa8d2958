"""Resident memory of ``adaspec serve`` before a burst of long requests, right after it, and after
an idle spell: does the server give back what a burst took?

A fresh ``adaspec serve`` process (defaults: embedded model, batching as the machine allows) gets
one short warm-up request, then 8 concurrent requests of ~1,500 tokens each (a ~1,400-token prompt
of real text, 96 new tokens), then nothing for 60 s. ``VmRSS`` is read from ``/proc`` at each
point. Run it alone on the machine:

    .venv/bin/python benchmarks/serve_memory.py --out benchmarks/serve-memory
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from pathlib import Path

import httpx2 as httpx

from adaspec.bench.server_process import resident_mb, start_server

SOURCE_FILES = ("adaspec/engine.py", "adaspec/request.py", "adaspec/serve/scheduler.py", "adaspec/tree.py",
                "adaspec/backends/hf.py", "adaspec/backends/row_plan.py", "adaspec/output.py", "adaspec/session.py")


def long_prompt(index: int, words: int) -> str:
    """A ~``words``-word prompt: a summarisation request over the project's own source files."""
    root = Path(__file__).resolve().parents[1]
    text = " ".join((root / SOURCE_FILES[index % len(SOURCE_FILES)]).read_text().split()[:words])
    return f"Summarise what this code does in three sentences:\n\n{text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/serve-memory"))
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--words", type=int, default=700, help="prompt words (~2 tokens each here)")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--extra", default="", help="more `adaspec serve` options, space-separated")
    args = parser.parse_args()
    process, url = start_server(args.extra.split())
    figures: dict = {"requests": args.requests, "prompt_words": args.words, "max_tokens": args.tokens,
                     "idle_s": args.idle, "options": args.extra}
    try:
        httpx.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 4}, timeout=120).raise_for_status()
        figures["before_mb"] = resident_mb(process.pid)

        def one(index: int) -> dict:
            body = {"messages": [{"role": "user", "content": long_prompt(index, args.words)}],
                    "max_tokens": args.tokens, "temperature": 0}
            return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1200).json()["usage"]

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.requests) as pool:
            usages = list(pool.map(one, range(args.requests)))
        figures["burst_s"] = time.monotonic() - started
        figures["tokens_per_request"] = sorted(u["total_tokens"] for u in usages)
        figures["after_burst_mb"] = resident_mb(process.pid)
        time.sleep(args.idle)
        figures["after_idle_mb"] = resident_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    figures["idle_vs_before"] = figures["after_idle_mb"] / figures["before_mb"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(figures, indent=1))
    table = ["| before the burst | right after it | after {:.0f} s idle | idle / before |".format(args.idle),
             "|---|---|---|---|",
             f"| {figures['before_mb']:,.0f} MB | {figures['after_burst_mb']:,.0f} MB | {figures['after_idle_mb']:,.0f} MB "
             f"| {figures['idle_vs_before']:.2f}x |"]
    (args.out / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
