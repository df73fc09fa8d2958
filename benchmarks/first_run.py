"""What a new user sees: ``adaspec generate PROMPT --compare`` in a fresh process with a cold
drafter (``--no-state``), the defaults of each runtime, on prompts this project did not write
(MT-Bench, HumanEval) and on one edit of a standard-library function.

Each line runs one process per prompt and runtime, as a user would type it; the speedup is the
one ``--compare`` prints (the same process decodes plainly, then speculatively). Run it alone:

    .venv/bin/python benchmarks/first_run.py --out benchmarks/first-run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from adaspec.bench.prompts import load_prompts

TOKENS = 128


def prompts(count: int) -> list[tuple[str, str]]:
    """(label, prompt text) pairs: MT-Bench and HumanEval first turns, and stdlib edits."""
    chosen = []
    for category, limit in (("mt-bench", count), ("humaneval-chat", count), ("stdlib-edit", max(1, count // 2))):
        chosen += [(f"{category}:{p.id}", p.turns[0]) for p in load_prompts([category], limit=limit)]
    return chosen


def table(rows: list[dict], backends: list[str]) -> str:
    """The summary table: per runtime, medians over the prompts (each prompt's speedup is its own ratio)."""
    lines = ["| runtime (default drafter) | prompts | plain tok/s | adaspec tok/s | median speedup | range | median MAT "
             "| outputs identical |", "|---|---|---|---|---|---|---|---|"]
    for backend in backends:
        mine = [r for r in rows if r["backend"] == backend]
        speedups = [r["speedup"] for r in mine]
        plain = statistics.median(r["baseline_tokens_per_s"] for r in mine)
        fast = statistics.median(r["tokens_per_s"] for r in mine)
        lines.append(f"| {backend} ({mine[-1]['drafter']}) | {len(mine)} | {plain:.1f} | {fast:.1f} | "
                     f"{statistics.median(speedups):.2f}x | "
                     f"{min(speedups):.2f}x - {max(speedups):.2f}x | {statistics.median(r['mat'] for r in mine):.2f} | "
                     f"{sum(r['identical'] for r in mine)}/{len(mine)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/first-run"))
    parser.add_argument("--prompts", type=int, default=4, help="prompts per prompt set")
    parser.add_argument("--backends", default="hf,llama.cpp")
    parser.add_argument("--retable", action="store_true", help="rewrite OUT/table.md from OUT/results.json and stop")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if args.retable:
        rows = json.loads((args.out / "results.json").read_text())["runs"]
        (args.out / "table.md").write_text(table(rows, backends))
        return
    rows = []
    for label, text in prompts(args.prompts):
        for backend in backends:
            run = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", text, "--backend", backend,
                                  "--max-new-tokens", str(TOKENS), "--compare", "--json", "--no-state"],
                                 capture_output=True, text=True, timeout=1200)
            if run.returncode != 0:
                raise SystemExit(f"{label} on {backend}: {run.stderr.strip()}")
            out = json.loads(run.stdout)
            rows.append({"prompt": label, "backend": backend, "drafter": out["drafter"], "speedup": out["speedup"],
                         "mat": out["mat"], "tokens_per_s": out["tokens_per_s"],
                         "baseline_tokens_per_s": out["baseline_tokens_per_s"], "identical": out["identical"]})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"tokens": TOKENS, "runs": rows}, indent=1))
    summary = table(rows, backends)
    (args.out / "table.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
