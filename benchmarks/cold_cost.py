"""What speculation costs where it finds little: a cold default request against plain decoding.

On free text the default drafter finds few matches, so a request should cost what plain decoding
(``--drafter none``) costs. This runs the frozen free-form prompts (``first-run/
free-form-prompts.json``, 128 new tokens, greedy) through each runtime, one process per runtime,
three arms per prompt and repetition: plain, the default (a fresh generator each time: a cold
drafter and a cold calibration, warmed like every arm by one 8-token request, as ``--compare``
does, so that a new context's first decodes are not timed), and plain again, in an order that
rotates, so drift on a noisy machine falls on every arm alike. A pair's figure is the default's decode time per token over the
mean of the two plain runs'; plain's second run over its first is the noise floor. Beside it, the
per-step profile: where a token's time goes (forward, drafter, sizer, emitting text, the rest).

    .venv/bin/python benchmarks/cold_cost.py --out benchmarks/cold-cost
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

FREE_FORM = Path(__file__).parent / "first-run" / "free-form-prompts.json"
TOKENS = 128
ARMS = ("none", "default", "none-again")
PARTS = ("forward", "drafter", "sizer", "emit", "other")  # where a decoded token's time goes


def measure(backend: str, reps: int, out: Path) -> None:
    """The child process: runs every (repetition, prompt, arm) and writes one row per run.

    Args:
        backend: the runtime ("hf" or "llama.cpp").
        reps: repetitions of every prompt.
        out: the JSON file to write.
    """
    import adaspec
    from tqdm import tqdm

    from adaspec.bench.system import machine_description

    model = adaspec.load(backend=backend)
    prompts = json.loads(FREE_FORM.read_text())["prompts"]
    rows = []
    with tqdm(total=reps * len(prompts) * len(ARMS), desc=f"{backend} cold cost", unit="run") as progress:
        for rep in range(reps):
            for index, prompt in enumerate(prompts):
                shift = (rep * len(prompts) + index) % len(ARMS)
                for arm in ARMS[shift:] + ARMS[:shift]:
                    generator = adaspec.Generator(model) if arm == "default" else adaspec.Generator(model, drafter="none")
                    generator.generate("Say hello.", max_new_tokens=8)  # a new context's first decodes are slow: alike for all
                    result = generator.generate(prompt, max_new_tokens=TOKENS)
                    rows.append(row(result, backend, rep, index, arm, generator.drafter.name))
                    progress.update()
    out.write_text(json.dumps({"machine": machine_description(), "backend": backend, "rows": rows}, indent=1))


def row(result: "adaspec.Generation", backend: str, rep: int, prompt: int, arm: str, drafter: str) -> dict:
    """One run's figures: decode time per token and its parts, in milliseconds, and the counts."""
    stats = result.stats
    tokens = max(stats.new_tokens, 1)
    decode_s = stats.total_s - stats.prefill_s
    parts = {"forward": stats.verify_s, "drafter": stats.draft_s - getattr(stats, "sizer_s", 0.0), "sizer": getattr(stats, "sizer_s", 0.0),
             "emit": getattr(stats, "emit_s", 0.0)}  # (an older checkout, for a before-and-after, has neither)
    parts["other"] = max(decode_s - sum(parts.values()), 0.0)
    return {"backend": backend, "rep": rep, "prompt": prompt, "arm": arm, "drafter": drafter,
            "new_tokens": stats.new_tokens, "steps": stats.num_steps, "draft_tokens": stats.num_draft_tokens,
            "accepted_tokens": stats.num_accepted_tokens, "ms_per_token": 1000 * decode_s / tokens,
            **{f"{part}_ms_per_token": 1000 * seconds / tokens for part, seconds in parts.items()},
            "token_ids": result.token_ids}


def pairs(rows: list[dict]) -> list[dict]:
    """Per (runtime, repetition, prompt): the default over plain, and plain again over plain."""
    runs = {(r["backend"], r["rep"], r["prompt"], r["arm"]): r for r in rows}
    out = []
    for (backend, rep, prompt, arm), first in runs.items():
        if arm != "none":
            continue
        default, again = runs[(backend, rep, prompt, "default")], runs[(backend, rep, prompt, "none-again")]
        plain = (first["ms_per_token"] + again["ms_per_token"]) / 2
        out.append({"backend": backend, "rep": rep, "prompt": prompt, "ratio": default["ms_per_token"] / plain,
                    "control": again["ms_per_token"] / first["ms_per_token"],
                    "identical": default["token_ids"] == first["token_ids"] == again["token_ids"]})
    return out


def report(rows: list[dict], out: Path, machine: dict) -> str:
    """The tables (markdown) and the plot (``cold_cost.png``) from every run."""
    figures = pairs(rows)
    backends = sorted({r["backend"] for r in rows})
    lines = [f"Machine: {machine['cpu']} ({machine['isa']}), {machine['cpu_threads']} threads; {TOKENS} new tokens, "
             "greedy.", "",
             "| runtime (default drafter) | prompts x runs | default / plain, time per token: median | mean | "
             "worst prompt (mean of its runs) | plain / plain (noise floor): median | widest | outputs identical |",
             "|---|---|---|---|---|---|---|---|"]
    for backend in backends:
        mine = [f for f in figures if f["backend"] == backend]
        drafter = next(r["drafter"] for r in rows if r["backend"] == backend and r["arm"] == "default")
        per_prompt = {}
        for f in mine:
            per_prompt.setdefault(f["prompt"], []).append(f["ratio"])
        worst = max(statistics.mean(v) for v in per_prompt.values())
        controls = [f["control"] for f in mine]
        lines.append(
            f"| {backend} ({drafter}) | {len(per_prompt)} x {len(mine) // len(per_prompt)} | "
            f"{statistics.median(f['ratio'] for f in mine):.3f}x | {statistics.mean(f['ratio'] for f in mine):.3f}x | "
            f"{worst:.3f}x | {statistics.median(controls):.3f}x | "
            f"{min(controls):.2f}x - {max(controls):.2f}x | {all(f['identical'] for f in mine)} |")
    lines += ["", "Where a decoded token's time goes (milliseconds per token, mean over runs; steps and draft "
              "tokens per 100 tokens):", "",
              "| runtime | arm | total | " + " | ".join(PARTS) + " | steps | draft tokens | accepted |",
              "|---|---|---|" + "---|" * len(PARTS) + "---|---|---|"]
    for backend in backends:
        for arm in ("none", "default"):
            mine = [r for r in rows if r["backend"] == backend and r["arm"] == arm]
            tokens = sum(r["new_tokens"] for r in mine)
            cells = " | ".join(f"{statistics.mean(r[f'{p}_ms_per_token'] for r in mine):.3f}" for p in PARTS)
            lines.append(f"| {backend} | {arm} | {statistics.mean(r['ms_per_token'] for r in mine):.2f} | {cells} | "
                         f"{100 * sum(r['steps'] for r in mine) / tokens:.1f} | "
                         f"{100 * sum(r['draft_tokens'] for r in mine) / tokens:.1f} | "
                         f"{100 * sum(r['accepted_tokens'] for r in mine) / tokens:.1f} |")
    figure, axes = plt.subplots(1, len(backends), figsize=(5 * len(backends), 3.6), squeeze=False)
    for axis, backend in zip(axes[0], backends):
        mine = [f for f in figures if f["backend"] == backend]
        prompts = sorted({f["prompt"] for f in mine})
        for offset, key, label in ((-0.15, "control", "plain / plain"), (0.15, "ratio", "default / plain")):
            axis.scatter([p + offset for f in mine for p in [f["prompt"]]], [f[key] for f in mine], s=14, label=label)
        axis.axhline(1.0, color="gray", lw=0.8)
        axis.set_xticks(prompts)
        axis.set_xlabel("free-form prompt")
        axis.set_ylabel("time per token, ratio")
        axis.set_title(f"{backend}: cold default vs plain")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "cold_cost.png", dpi=120)
    return "\n".join(lines) + "\n"


def main() -> None:
    """Runs each runtime in a process of its own, then writes results.json, results.md and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/cold-cost"))
    parser.add_argument("--backends", default="llama.cpp,hf", help="runtimes, comma-separated")
    parser.add_argument("--reps", default="llama.cpp=16,hf=2", help="repetitions per runtime (runtime=count,...)")
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "REPS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--retable", action="store_true", help="only rebuild the tables and plot from results.json")
    args = parser.parse_args()
    if args.worker:
        measure(args.worker[0], int(args.worker[1]), Path(args.worker[2]))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.json"
    if not args.retable:
        reps = dict(item.split("=") for item in args.reps.split(","))
        rows, machine = [], {}
        for backend in args.backends.split(","):
            part = args.out / f"{backend}.json"
            subprocess.run([sys.executable, __file__, "--worker", backend, reps.get(backend, "3"), str(part)], check=True)
            data = json.loads(part.read_text())
            rows += data["rows"]
            machine = data["machine"]
            part.unlink()
        results.write_text(json.dumps({"machine": machine, "tokens": TOKENS, "rows": rows}))
    data = json.loads(results.read_text())
    text = report(data["rows"], args.out, data["machine"])
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
