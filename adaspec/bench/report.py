"""Writing a benchmark report: results.json, results.md and PNG plots a person can look at."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from adaspec.bench.metrics import RunRecord

if TYPE_CHECKING:
    from adaspec.budget import LatencyProfile


def fmt(value: float | None, pattern: str) -> str:
    """A figure for a table cell.

    Args:
        value: the figure, or None when the method does not report it.
        pattern: a ``str.format`` pattern such as ``"{:.2f}"``.

    Returns:
        The formatted figure, or "–" when absent.
    """
    return "–" if value is None else pattern.format(value)


def runtime(config: dict) -> str:
    """What a report's methods ran on: ``hf float32``, ``llama.cpp exact``...

    Args:
        config: the report's config (reports made before ``backend`` was recorded ran on hf).

    Returns:
        The label.
    """
    backend = config.get("backend", "hf")
    return f"{backend} {config['dtype']}" if backend == "hf" else backend


def markdown(summary: dict, meta: dict, calibration: dict | None = None, profile=None) -> str:
    """The Markdown report.

    Args:
        summary: ``metrics.summarise``'s output.
        meta: ``system.report_meta``'s output (config, machine, versions).
        calibration: per ``@auto`` method, predicted against observed acceptance.
        profile: the ``budget.LatencyProfile`` the ``@auto`` methods used.

    Returns:
        The overall table, speedup (and MAT) per category, then, for ``@auto`` methods, the
        calibration of predicted acceptance and the verify cost profile.
    """
    methods = list(summary)
    categories = [c for c in next(iter(summary.values())) if c != "overall"]
    temperature = meta["config"].get("temperature", 0.0)
    decoding = "greedy" if not temperature else f"sampling at T={temperature:g}"
    config = meta["config"]
    done = config.get("generations_done", config["generations"])
    scope = (f"{config['prompts']} prompts ({config['generations']} turns)" if done == config["generations"] else
             f"partial run: {done} of {config['generations']} turns, taken in turn from each category")
    lines = [
        f"Model: {meta['model']} · {runtime(config)} · {decoding} · {config['new_tokens']} new tokens · "
        f"{meta['machine']['cpu_threads']} threads · {scope}",
        "",
        "| method | tokens/s | speedup | MAT | plain steps | draft ms/step | verify ms/step | other ms/step | peak MiB | outputs equal baseline |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        s = summary[method]["overall"]
        same = f"{s['runs'] - len(s['differing_from_baseline'])}/{s['runs']}"
        if temperature and method.startswith("hf-"):
            same = "– (own sampler)"
        lines.append(
            f"| {method} | {s['tokens_per_s']:.1f} | {s['speedup']:.2f}x | {fmt(s['mat'], '{:.2f}')} | "
            f"{fmt(s.get('plain_step_share'), '{:.0%}')} | "
            f"{fmt(s['draft_ms_per_step'], '{:.1f}')} | {fmt(s['verify_ms_per_step'], '{:.1f}')} | "
            f"{fmt(s.get('other_ms_per_step'), '{:.1f}')} | {fmt(s.get('peak_rss_mb'), '{:.0f}')} | {same} |"
        )
    lines += ["", "Speedup (MAT) per category:", "", "| method | " + " | ".join(categories) + " |",
              "|---|" + "---|" * len(categories)]
    for method in methods:
        cells = []
        for category in categories:
            s = summary[method][category]
            cells.append(f"{s['speedup']:.2f}x" + (f" ({s['mat']:.2f})" if s["mat"] is not None else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if calibration:
        turns = {table.get("turns") for table in calibration.values()}
        scope = f"over the {turns.pop()} turns this process ran; " if len(turns) == 1 and None not in turns else ""
        lines += ["", f"Calibration of `@auto` ({scope}verified draft nodes binned by predicted acceptance: "
                  "predicted → observed, nodes; calibration error = mean |predicted − observed| per node):", "",
                  "| method | error | " + " | ".join(f"{b / 10:.1f}–{(b + 1) / 10:.1f}" for b in range(10)) + " |",
                  "|---|---|" + "---|" * 10]
        for method, table in calibration.items():
            cells = [f"{p:.2f} → {o:.2f}, {n}" if n else "–"
                     for p, o, n in zip(table["predicted"], table["observed"], table["nodes"])]
            lines.append(f"| {method} | {fmt(table['calibration_error'], '{:.3f}')} | " + " | ".join(cells) + " |")
    if profile is not None:
        lines += ["", f"Verify cost by tree size ({profile.key}):", "", *profile_rows(profile)]
    return "\n".join(lines) + "\n"


def profile_rows(profile: LatencyProfile) -> list[str]:
    """The verify cost curve as a markdown table, with what each size gains at best, and the
    ceiling that puts on any drafter (``LatencyProfile.ceiling``).

    Args:
        profile: the verify cost curve.

    Returns:
        The table's lines, then a blank line and the ceiling's sentence.
    """
    best, size = profile.ceiling()
    return ["| nodes | " + " | ".join(str(n) for n in profile.sizes) + " |", "|---|" + "---|" * len(profile.sizes),
            "| ms | " + " | ".join(f"{m:.1f}" for m in profile.ms) + " |",
            "| × one node | " + " | ".join(f"{m / profile.ms[0]:.2f}" for m in profile.ms) + " |",
            "| speedup if every node is accepted | " + " | ".join(f"{x:.2f}x" for x in profile.speedup_if_all_accepted()) + " |",
            "", f"Ceiling on this cost curve: {best:.2f}x plain decoding (a {size}-node chain, every node accepted); "
                "no drafter gains more here."]


def plot(summary: dict, out_dir: Path, title: str) -> list[Path]:
    """Draws the report's PNG plots.

    Args:
        summary: ``metrics.summarise``'s output.
        out_dir: the folder to write into (it exists).
        title: the plots' title (model and settings).

    Returns:
        The files written: speedup by category, acceptance by depth with time per step, and
        (for a sweep of ``NAME@N`` budgets) speedup and MAT against the budget, with
        ``NAME@auto`` drawn dashed.
    """
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

    swept: dict[str, list[tuple[int, dict]]] = {}  # drafter -> (budget, overall figures) for NAME@N
    auto: dict[str, dict] = {}  # drafter -> overall figures of NAME@auto
    for method in drafted:
        drafter, _, budget = method.partition("@")
        if budget.isdigit():
            swept.setdefault(drafter, []).append((int(budget), summary[method]["overall"]))
        elif budget == "auto":
            auto[drafter] = summary[method]["overall"]
    if swept:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for (figure, label), ax in zip((("speedup", "speedup vs plain decoding"), ("mat", "MAT")), axes):
            for i, (drafter, points) in enumerate(swept.items()):
                points.sort(key=lambda point: point[0])
                colour = f"C{i}"
                ax.plot([b for b, _ in points], [f[figure] for _, f in points], marker="o", color=colour, label=f"{drafter}@N")
                if drafter in auto:
                    ax.axhline(auto[drafter][figure], color=colour, ls="--", lw=1, label=f"{drafter}@auto")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("fixed tree budget N (nodes)")
            ax.set_ylabel(label)
            ax.legend(fontsize=7)
        fig.suptitle(f"Fixed budgets against auto · {title}")
        fig.tight_layout()
        written.append(out_dir / "budget_sweep.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_profile_plot(profile, path: Path) -> None:
    """Writes a PNG of verify milliseconds against tree size.

    Args:
        profile: a ``budget.LatencyProfile``.
        path: the PNG to write.
    """
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


def write_calibration_plot(calibration: dict, path: Path) -> None:
    """Writes a reliability diagram: observed against predicted acceptance per ``@auto`` method.

    Args:
        calibration: per method, ``budget.Reliability.to_dict()`` figures.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    for method, table in calibration.items():
        seen = [(p, o, n) for p, o, n in zip(table["predicted"], table["observed"], table["nodes"]) if n]
        if seen:
            ax.plot([p for p, _, _ in seen], [o for _, o, _ in seen], marker="o", label=f"{method} (error {table['calibration_error']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted acceptance of a verified node")
    ax.set_ylabel("share accepted")
    ax.set_title("Calibration of the auto budget", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, records: Sequence[RunRecord], summary: dict, meta: dict,
                 calibration: dict | None = None, profile=None) -> list[Path]:
    """Writes every file of a report.

    Args:
        out_dir: the folder (created if missing).
        records: every raw run.
        summary: from ``metrics.summarise``.
        meta: model, config, machine, versions and command line.
        calibration: per ``@auto`` method, its ``budget.Reliability`` table (plotted too).
        profile: the ``budget.LatencyProfile`` the ``@auto`` methods used (saved and plotted).

    Returns:
        The paths written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"calibration": calibration or {}, "profile": asdict(profile) if profile is not None else None}
    (out_dir / "results.json").write_text(json.dumps({**meta, **extra, "summary": summary, "runs": [asdict(r) for r in records]}, indent=1))
    (out_dir / "results.md").write_text(markdown(summary, meta, calibration, profile))
    title = f"{meta['model']} · {runtime(meta['config'])}"
    written = [out_dir / "results.json", out_dir / "results.md"] + plot(summary, out_dir, title)
    if calibration:
        write_calibration_plot(calibration, out_dir / "calibration.png")
        written.append(out_dir / "calibration.png")
    if profile is not None:
        write_profile_plot(profile, out_dir / "profile.png")
        written.append(out_dir / "profile.png")
    return written
