"""What a new user sees: ``adaspec generate PROMPT --compare`` in a fresh process with a cold
drafter (``--no-state``), the defaults of each runtime, on prompts this project did not write
(MT-Bench, HumanEval), on edits of standard-library functions, and on free-form prompts this
project wrote and froze before tuning the cold start (``first-run/free-form-prompts.json``).

Each run is one process per prompt and runtime, as a user would type it; its speedup is the one
``--compare`` prints (the same process decodes plainly, then speculatively). Every prompt runs
``--reps`` times (runtimes and prompts interleaved within each repetition); a prompt's figure is
the mean of its runs, and the report gives each prompt's spread beside it. Beside every run, the
same ``--compare`` with ``--drafter none`` times plain decoding against itself in the same order:
its figures are the measurement's own noise floor (order effects and the shared machine). Run it alone:

    .venv/bin/python benchmarks/first_run.py --out benchmarks/first-run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from adaspec.bench.prompts import load_prompts
from adaspec.bench.system import machine_description

TOKENS = 128
FREE_FORM = Path(__file__).parent / "first-run" / "free-form-prompts.json"


def prompts(count: int) -> list[tuple[str, str, str]]:
    """(set, label, prompt text): MT-Bench and HumanEval first turns, stdlib edits, and the frozen free-form prompts."""
    chosen = []
    for category, limit in (("mt-bench", count), ("humaneval-chat", count), ("stdlib-edit", max(1, count // 2))):
        chosen += [(category, f"{category}:{p.id}", p.turns[0]) for p in load_prompts([category], limit=limit)]
    free = json.loads(FREE_FORM.read_text())["prompts"]
    chosen += [("free-form", f"free-form:{i}", text) for i, text in enumerate(free)]
    return chosen


DEFAULT, FLOOR = "default", "plain-vs-plain"  # the arms: the runtime's defaults, and --drafter none


def per_prompt(rows: list[dict], arm: str = DEFAULT) -> list[dict]:
    """Each (prompt, runtime)'s runs of one arm folded into one figure: the mean speedup, and its spread."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("arm", DEFAULT) == arm:
            groups.setdefault((row["prompt"], row["backend"]), []).append(row)
    return [{"prompt": prompt, "backend": backend, "set": runs[0].get("set", ""), "drafter": runs[0]["drafter"],
             "runs": len(runs), "speedup": statistics.mean(r["speedup"] for r in runs),
             "low": min(r["speedup"] for r in runs), "high": max(r["speedup"] for r in runs),
             "mat": statistics.mean(r["mat"] for r in runs),
             "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in runs),
             "baseline_tokens_per_s": statistics.mean(r["baseline_tokens_per_s"] for r in runs),
             "identical": all(r["identical"] for r in runs)} for (prompt, backend), runs in groups.items()]


def table(rows: list[dict], backends: list[str]) -> str:
    """The summary table: per runtime and prompt set, the median over prompts of each prompt's mean
    speedup, the worst and best prompt, and the widest spread of one prompt's runs; then, per
    runtime, the same figures for plain decoding against itself (the noise floor), where measured."""
    lines = ["| runtime (default drafter) | prompts | runs each | plain tok/s | adaspec tok/s | median speedup | worst - best "
             "prompt | widest spread of one prompt | median MAT | outputs identical |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    figures, floors = per_prompt(rows), per_prompt(rows, FLOOR)
    for backend in backends:
        mine = [f for f in figures if f["backend"] == backend]
        if not mine:
            continue
        floor = [f for f in floors if f["backend"] == backend]
        groups = [("all", mine)] + sorted({f["set"]: [g for g in mine if g["set"] == f["set"]] for f in mine}.items())
        for label, group in groups + ([(FLOOR, floor)] if floor else []):
            speedups = [f["speedup"] for f in group]
            widest = max(group, key=lambda f: f["high"] - f["low"])
            if label == FLOOR:
                name = f"{backend}: plain vs plain, the noise floor"
            else:
                name = f"{backend} ({group[-1]['drafter']})" + ("" if label == "all" else f", {label}")
            lines.append(
                f"| {name} | {len(group)} | {min(f['runs'] for f in group)} | "
                f"{statistics.median(f['baseline_tokens_per_s'] for f in group):.1f} | "
                f"{statistics.median(f['tokens_per_s'] for f in group):.1f} | {statistics.median(speedups):.2f}x | "
                f"{min(speedups):.2f}x - {max(speedups):.2f}x | {widest['low']:.2f}x - {widest['high']:.2f}x | "
                f"{statistics.median(f['mat'] for f in group):.2f} | "
                f"{sum(f['identical'] for f in group)}/{len(group)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], backends: list[str], path: Path) -> None:
    """Each prompt's mean speedup per runtime, with the range of its runs, to ``path`` (PNG)."""
    figures = per_prompt(rows)
    labels = list(dict.fromkeys(f["prompt"] for f in figures))
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(labels)), 4.5))
    width = 0.8 / len(backends)
    for offset, backend in enumerate(backends):
        mine = {f["prompt"]: f for f in figures if f["backend"] == backend}
        xs = [i + offset * width for i, label in enumerate(labels) if label in mine]
        chosen = [mine[label] for label in labels if label in mine]
        means = [f["speedup"] for f in chosen]
        spread = [[m - f["low"] for m, f in zip(means, chosen)], [f["high"] - m for m, f in zip(means, chosen)]]
        ax.bar(xs, means, width, yerr=spread, capsize=2, label=f"{backend} ({chosen[0]['drafter']})")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(labels))], labels, rotation=70, fontsize=7)
    ax.set_ylabel("speedup over plain (mean of runs)")
    ax.set_title("A new user's first run: fresh process, cold drafter, defaults")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_once(label: str, text: str, backend: str, extra: list[str]) -> dict:
    """One fresh ``adaspec generate --compare --json --no-state`` process (``extra``: more options)."""
    run = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", text, "--backend", backend,
                          "--max-new-tokens", str(TOKENS), "--compare", "--json", "--no-state", *extra],
                         capture_output=True, text=True, timeout=1200)
    if run.returncode != 0:
        raise SystemExit(f"{label} on {backend}: {run.stderr.strip()}")
    return json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/first-run"))
    parser.add_argument("--prompts", type=int, default=4, help="prompts per prompt set")
    parser.add_argument("--reps", type=int, default=3, help="fresh-process runs per prompt and runtime")
    parser.add_argument("--backends", default="hf,llama.cpp")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the plain-vs-plain runs that measure the noise floor (halves the time)")
    parser.add_argument("--retable", action="store_true", help="rewrite OUT/table.md from OUT/results.json and stop")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if args.retable:
        rows = json.loads((args.out / "results.json").read_text())["runs"]
        (args.out / "table.md").write_text(table(rows, backends))
        plot(rows, backends, args.out / "speedup.png")
        return
    rows = []
    chosen = prompts(args.prompts)
    arms = [DEFAULT] + ([FLOOR] if args.floor else [])
    progress = tqdm(total=args.reps * len(chosen) * len(backends) * len(arms), unit="run")
    for rep in range(args.reps):
        for index, (prompt_set, label, text) in enumerate(chosen):
            for backend in backends if (index + rep) % 2 == 0 else backends[::-1]:
                for arm in arms if (index + rep) % 2 == 0 else arms[::-1]:  # each arm goes first as often
                    progress.set_description(f"{label} on {backend} ({arm})")
                    out = run_once(label, text, backend, ["--drafter", "none"] if arm == FLOOR else [])
                    progress.update()
                    rows.append({"set": prompt_set, "prompt": label, "backend": backend, "rep": rep, "arm": arm,
                                 "drafter": out["drafter"], "speedup": out["speedup"], "mat": out["mat"],
                                 "tokens_per_s": out["tokens_per_s"],
                                 "baseline_tokens_per_s": out["baseline_tokens_per_s"], "identical": out["identical"]})
    progress.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"tokens": TOKENS, "reps": args.reps, "machine": machine_description(),
                                                       "runs": rows}, indent=1))
    summary = table(rows, backends)
    (args.out / "table.md").write_text(summary)
    plot(rows, backends, args.out / "speedup.png")
    print(summary)


if __name__ == "__main__":
    main()
