"""adaspec on llama.cpp against adaspec on transformers, on the same benchmark turns.

Reads a llama.cpp report's records and the committed full HF run (benchmarks/full) and prints,
per category and overall, tokens/s of each llama.cpp method beside HF's on exactly the turns
both ran (token-weighted: total tokens / total seconds). The two ran in different processes at
different times on the same machine, so the ratio carries that machine's drift (plain HF decoding
measured 15.4-19.7 tok/s across our runs).

Usage: python benchmarks/against_hf.py benchmarks/llamacpp-categories [--hf benchmarks/full] [--hf-method hybrid]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def read_records(folder: Path) -> list[dict]:
    """The run records of a report folder (records.jsonl, header line skipped)."""
    lines = (folder / "records.jsonl").read_text().splitlines()[1:]
    return [json.loads(line) for line in lines if line.strip()]


def rates(records: list[dict], turns: set, method: str) -> dict[str, float]:
    """Tokens per second of ``method`` per category and overall, over ``turns`` only."""
    tokens, seconds = defaultdict(float), defaultdict(float)
    for r in records:
        key = (r["category"], r["prompt_id"], r["turn"])
        if r["method"] == method and key in turns:
            for group in (r["category"], "overall"):
                tokens[group] += r["new_tokens"]
                seconds[group] += r["seconds"]
    return {group: tokens[group] / seconds[group] for group in tokens}


def main() -> None:
    """Prints the comparison as a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("llamacpp", type=Path)
    parser.add_argument("--hf", type=Path, default=Path("benchmarks/full"))
    parser.add_argument("--hf-method", default="hybrid")
    args = parser.parse_args()
    ours = read_records(args.llamacpp)
    theirs = read_records(args.hf)
    turns = {(r["category"], r["prompt_id"], r["turn"]) for r in ours} & {(r["category"], r["prompt_id"], r["turn"]) for r in theirs}
    hf = rates(theirs, turns, args.hf_method)
    methods = list(dict.fromkeys(r["method"] for r in ours))
    groups = sorted(hf, key=lambda g: (g == "overall", g))
    print(f"{len(turns)} turns in both; tokens/s, and in brackets × HF {args.hf_method} on the same turns\n")
    print("| method | " + " | ".join(groups) + " |")
    print("|---|" + "---|" * len(groups))
    print(f"| HF {args.hf_method} | " + " | ".join(f"{hf[g]:.1f}" for g in groups) + " |")
    for method in methods:
        mine = rates(ours, turns, method)
        print(f"| {method} | " + " | ".join(f"{mine[g]:.1f} ({mine[g] / hf[g]:.1f}x)" for g in groups) + " |")


if __name__ == "__main__":
    main()
