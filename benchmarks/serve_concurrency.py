"""Throughput and time to first token of ``adaspec serve`` at 1, 2, 4 and 8 concurrent streams.

Each configuration runs in a fresh ``adaspec serve`` process (cold drafter, ``--no-state``) on
127.0.0.1, driven by the official ``openai`` client: the same real prompts (MT-Bench first turns
and HumanEval as chat) are sent with N clients at a time, greedy, streaming. Concurrency 1 is
"one request at a time". Every output is compared with the concurrency-1 output of the same
prompt. Run it alone on the machine (nothing else busy):

    .venv/bin/python benchmarks/serve_concurrency.py --out benchmarks/serve-concurrency
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker
import openai

from adaspec.bench.prompts import load_prompts
from adaspec.bench.server_process import start_server

SETTINGS = ["--drafter", "hybrid", "--budget", "8"]  # what the committed table was measured with

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run_level(url: str, prompts: list[str], streams: int, tokens: int) -> dict:
    """Sends every prompt with ``streams`` clients at a time; returns throughput and each reply."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)

    def one(prompt: str) -> dict:
        sent = time.monotonic()
        first, pieces, usage = None, [], None
        for chunk in client.chat.completions.create(model="bench", messages=[{"role": "user", "content": prompt}],
                                                    max_tokens=tokens, temperature=0, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.monotonic()
                pieces.append(chunk.choices[0].delta.content)
        return {"text": "".join(pieces), "ttft_s": (first or time.monotonic()) - sent,
                "tokens": usage.completion_tokens if usage else 0}

    one(prompts[0])  # warm-up: first calls are slow
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(one, prompts))
    wall = time.monotonic() - started
    tokens_total = sum(r["tokens"] for r in results)
    return {"streams": streams, "wall_s": wall, "tokens": tokens_total, "tokens_per_s": tokens_total / wall,
            "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/serve-concurrency"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--replot", action="store_true", help="redraw the plot from OUT/results.json and stop")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if args.replot:
        plot(json.loads((args.out / "results.json").read_text()), levels, args.out / "concurrency.png")
        return
    mt = [p.turns[0] for p in load_prompts(["mt-bench"], limit=args.prompts // 2)]
    code = [p.turns[0] for p in load_prompts(["humaneval-chat"], limit=args.prompts - len(mt))]
    prompts = [p for pair in zip(mt, code) for p in pair]
    modes = {"batched": [], "one per forward": ["--no-batch"]}
    report: dict = {"prompts": len(prompts), "max_tokens": args.tokens, "modes": {}}
    for mode, extra in modes.items():
        rows = []
        for streams in levels:
            process, url = start_server(SETTINGS + extra + ["--max-concurrency", str(max(levels))])
            try:
                rows.append(run_level(url, prompts, streams, args.tokens))
            finally:
                process.terminate()
                process.wait(timeout=60)
            print(f"{mode}: {streams} streams {rows[-1]['tokens_per_s']:.1f} tok/s", flush=True)
        report["modes"][mode] = rows
    solo = report["modes"]["batched"][0]["results"]
    for mode, rows in report["modes"].items():
        for row in rows:
            row["identical_to_solo"] = sum(r["text"] == s["text"] for r, s in zip(row["results"], solo))
            row["speedup"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
            ratios = [r["ttft_s"] / s["ttft_s"] for r, s in zip(row["results"], solo)]
            row["ttft_ratio_median"] = sorted(ratios)[len(ratios) // 2]
            row["ttft_ratio_max"] = max(ratios)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    lines = ["| mode | streams | tok/s | vs 1 stream | outputs identical to solo | TTFT vs solo (median / worst) |",
             "|---|---|---|---|---|---|"]
    for mode, rows in report["modes"].items():
        for row in rows:
            lines.append(f"| {mode} | {row['streams']} | {row['tokens_per_s']:.1f} | {row['speedup']:.2f}x | "
                         f"{row['identical_to_solo']}/{len(prompts)} | {row['ttft_ratio_median']:.2f}x / "
                         f"{row['ttft_ratio_max']:.2f}x |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(report, levels, args.out / "concurrency.png")


def plot(report: dict, levels: list[int], path: Path) -> None:
    """Throughput and median TTFT ratio against concurrency, one line per mode."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in report["modes"].items():
        left.plot([r["streams"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=mode)
        right.plot([r["streams"] for r in rows], [r["ttft_ratio_median"] for r in rows], marker="o", label=mode)
    left.set(xlabel="concurrent streams", ylabel="aggregate tokens/s", title="Throughput", xscale="log", xticks=levels)
    left.set_xticklabels(levels)
    right.set(xlabel="concurrent streams", ylabel="median TTFT / solo TTFT", title="Time to first token",
              xscale="log", xticks=levels)
    right.set_xticklabels(levels)
    for axis in (left, right):
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
