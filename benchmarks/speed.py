"""Headline speed benchmark: 12 prompts x 256 tokens, every method, one process.

A fixed prompt set (8 chat prompts of our own and 4 HumanEval completions) run through
``adaspec.bench`` (interleaved, rotating order, warm-up excluded; adaspec's drafters keep
their state across prompts, as in a session).

    python benchmarks/speed.py --out benchmarks/results            # ~15 min on 2 cores
    python benchmarks/speed.py --limit 2 --new-tokens 16 --out /tmp/b  # smoke run

Writes results.json, results.md and speed.png (tokens/s per method, speedup per prompt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import adaspec
from adaspec.bench.metrics import RunRecord, summarise
from adaspec.bench.prompts import BenchPrompt, humaneval_problems
from adaspec.bench.report import write_report
from adaspec.bench.runner import build_methods, method_names, run_benchmark
from adaspec.bench.system import report_meta

ROOT = Path(__file__).resolve().parents[1]
CHAT_PROMPTS = [
    ("chat-code", "Write a Python function that checks whether a string is a palindrome, with a docstring and three tests."),
    ("chat-explain", "Explain how a CPU cache works, in detail."),
    ("chat-list", "List the countries of Europe with their capitals."),
    ("chat-story", "Write a story about a robot who learns to paint."),
    ("chat-opinion", "What are the pros and cons of remote work?"),
    ("chat-script", "Write a bash script that backs up a directory and keeps the last seven copies."),
    ("chat-math", "A shop sells pens at 3 dollars each and notebooks at 5 dollars each. Ann buys 4 pens and 3 notebooks. How much does she pay? Explain step by step."),
    ("chat-rewrite", "Rewrite this paragraph in simpler words:\n" + (ROOT / "adaspec" / "tree.py").read_text()[:700]),
]
HUMANEVAL_IDS = ["HumanEval/0", "HumanEval/12", "HumanEval/35", "HumanEval/100"]


def headline_prompts() -> list[BenchPrompt]:
    """The 12 prompts, chat first."""
    problems = dict(humaneval_problems())
    prompts = [BenchPrompt(pid, "chat", (text,)) for pid, text in CHAT_PROMPTS]
    return prompts + [BenchPrompt(pid, "humaneval", (problems[pid],), chat=False) for pid in HUMANEVAL_IDS]


def plot_speed(out_dir: Path, records: list[RunRecord], summary: dict, title: str) -> None:
    """speed.png: tokens/s per method, and the speedup of each method on each prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    prompt_ids = list(dict.fromkeys(r.prompt_id for r in records))
    speed = {(r.method, r.prompt_id): r.new_tokens / r.seconds for r in records}
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ["#999999" if m in ("none", "hf-generate") else "#4c72b0" if m.startswith("hf") else "#dd8452" for m in methods]
    bars.bar(methods, [summary[m]["overall"]["tokens_per_s"] for m in methods], color=colors)
    bars.set_ylabel("tokens / s")
    bars.set_title("Decoding speed")
    bars.tick_params(axis="x", rotation=30)
    for m in methods:
        lines.plot(range(len(prompt_ids)), [speed[(m, p)] / speed[("none", p)] for p in prompt_ids], marker="o", label=m)
    lines.axhline(1.0, color="black", lw=0.8)
    lines.set_xticks(range(len(prompt_ids)), prompt_ids, rotation=60, ha="right", fontsize=7)
    lines.set_ylabel("speedup vs plain decoding")
    lines.set_title("Speedup per prompt")
    lines.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "speed.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if (args.limit is not None and args.limit <= 0) or args.new_tokens <= 0:
        print("speed.py: error: --limit and --new-tokens must be positive", file=sys.stderr)
        return 2

    model = adaspec.load(args.model, device=args.device, dtype=args.dtype)
    prompts = headline_prompts()[: args.limit]
    methods = build_methods(model, method_names(), args.budget)
    records = run_benchmark(model, prompts, methods, args.new_tokens)
    summary = summarise(records)
    command = " ".join(["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])])
    meta = report_meta(command, model.name, prompts, [m.name for m in methods],
                       args.new_tokens, args.budget, args.dtype, args.device)
    write_report(args.out, records, summary, meta)
    plot_speed(args.out, records, summary, f"{model.name} · {args.dtype} · {meta['machine']['cpu_threads']} CPU threads")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
