"""Writing a benchmark report: results.json, results.md and PNG plots a person can look at."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from adaspec.bench.metrics import RunRecord


def fmt(value: float | None, pattern: str) -> str:
    """A figure for a table cell ("–" when absent)."""
    return "–" if value is None else pattern.format(value)


def markdown(summary: dict, meta: dict) -> str:
    """The overall table, then speedup (and MAT) per category."""
    methods = list(summary)
    categories = [c for c in next(iter(summary.values())) if c != "overall"]
    temperature = meta["config"].get("temperature", 0.0)
    decoding = "greedy" if not temperature else f"sampling at T={temperature:g}"
    lines = [
        f"Model: {meta['model']} · {decoding} · {meta['config']['new_tokens']} new tokens · {meta['config']['dtype']} · "
        f"{meta['machine']['cpu_threads']} threads · {meta['config']['prompts']} prompts ({meta['config']['generations']} turns)",
        "",
        "| method | tokens/s | speedup | MAT | draft ms/step | verify ms/step | other ms/step | outputs equal baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        s = summary[method]["overall"]
        same = f"{s['runs'] - len(s['differing_from_baseline'])}/{s['runs']}"
        if temperature and method.startswith("hf-"):
            same = "– (own sampler)"
        lines.append(
            f"| {method} | {s['tokens_per_s']:.1f} | {s['speedup']:.2f}x | {fmt(s['mat'], '{:.2f}')} | "
            f"{fmt(s['draft_ms_per_step'], '{:.1f}')} | {fmt(s['verify_ms_per_step'], '{:.1f}')} | "
            f"{fmt(s.get('other_ms_per_step'), '{:.1f}')} | {same} |"
        )
    lines += ["", "Speedup (MAT) per category:", "", "| method | " + " | ".join(categories) + " |",
              "|---|" + "---|" * len(categories)]
    for method in methods:
        cells = []
        for category in categories:
            s = summary[method][category]
            cells.append(f"{s['speedup']:.2f}x" + (f" ({s['mat']:.2f})" if s["mat"] is not None else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, out_dir: Path, title: str) -> list[Path]:
    """PNG plots: speedup by category, acceptance by depth, time per step, MAT against budget."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    methods = [m for m in summary if m != "none"]
    categories = [c for c in next(iter(summary.values())) if c != "overall"] + ["overall"]

    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(categories) * max(1, len(methods)) / 3), 4))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        ax.bar(np.arange(len(categories)) + i * width, [summary[method][c]["speedup"] for c in categories], width, label=method)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(categories)) + width * (len(methods) - 1) / 2, categories, rotation=20)
    ax.set_ylabel("speedup vs plain decoding")
    ax.set_title(f"Speedup by category · {title}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    written.append(out_dir / "speedup_by_category.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    drafted = [m for m in methods if summary[m]["overall"]["mat"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in drafted:
        rates = summary[method]["overall"]["acceptance_by_depth"]
        left.plot(range(1, len(rates) + 1), rates, marker="o", label=method)
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.set_ylim(bottom=0)
    left.set_xlabel("tree depth")
    left.set_ylabel("share of steps accepting a token there")
    left.set_title("Acceptance by depth")
    left.legend(fontsize=7)
    everyone = ["none"] + drafted
    draft = [summary[m]["overall"]["draft_ms_per_step"] or 0 for m in everyone]
    verify = [summary[m]["overall"]["verify_ms_per_step"] or 0 for m in everyone]
    right.bar(everyone, verify, label="verify (model forward, acceptance, KV compaction)")
    right.bar(everyone, draft, bottom=verify, label="draft (propose, observe, top-k)")
    other = [summary[m]["overall"].get("other_ms_per_step") or 0 for m in everyone]
    right.bar(everyone, other, bottom=np.add(verify, draft), label="other (output text, stop checks, loop)")
    right.set_ylabel("ms per step")
    right.set_title("Time per step")
    right.tick_params(axis="x", rotation=20)
    right.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    written.append(out_dir / "acceptance_and_step_time.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    swept: dict[str, list[tuple[int, float]]] = {}
    for method in drafted:
        drafter, _, budget = method.partition("@")
        if budget:
            swept.setdefault(drafter, []).append((int(budget), summary[method]["overall"]["mat"]))
    if swept:
        fig, ax = plt.subplots(figsize=(6, 4))
        for drafter, points in swept.items():
            points.sort()
            ax.plot([b for b, _ in points], [m for _, m in points], marker="o", label=drafter)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tree budget (nodes)")
        ax.set_ylabel("MAT")
        ax.set_title(f"MAT against tree budget · {title}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out_dir / "mat_by_budget.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_profile_plot(profile, path: Path) -> None:
    """A PNG of verify milliseconds against tree size (a ``budget.LatencyProfile``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(profile.sizes, profile.ms, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("tree nodes")
    ax.set_ylabel("verify step, ms")
    ax.set_title(f"Verify cost by tree size · {profile.key}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, records: Sequence[RunRecord], summary: dict, meta: dict) -> list[Path]:
    """Writes every file of a report; returns their paths.

    Args:
        out_dir: the folder (created if missing).
        records: every raw run.
        summary: from ``metrics.summarise``.
        meta: model, config, machine, versions and command line.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({**meta, "summary": summary, "runs": [asdict(r) for r in records]}, indent=1))
    (out_dir / "results.md").write_text(markdown(summary, meta))
    title = f"{meta['model']} · {meta['config']['dtype']}"
    return [out_dir / "results.json", out_dir / "results.md"] + plot(summary, out_dir, title)
