"""Writes every table of figures in README.md and docs/*.md from the committed benchmark results,
so that no table can drift from the results it reports.

A table lives between two markers naming its source::

    <!-- table: bench-summary benchmarks/llamacpp-categories -->
    ...generated...
    <!-- /table -->

    python scripts/docs.py           # rewrite every table
    python scripts/docs.py --check   # exit 1, naming each table that differs from its results (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"(<!-- table: (?P<kind>[\w-]+)(?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def results(folder: str) -> dict:
    """A results folder's ``results.json``."""
    return json.loads((ROOT / folder / "results.json").read_text())


def pick(methods: list[str], wanted: str) -> list[str]:
    """The methods named in ``wanted`` (comma-separated; empty: all), in that order."""
    if not wanted:
        return methods
    names = wanted.split(",")
    missing = [n for n in names if n not in methods]
    if missing:
        raise ValueError(f"no method {missing[0]!r} in the results (have: {', '.join(methods)})")
    return names


def bench_summary(folder: str, wanted: str = "") -> str:
    """Overall figures per method of an ``adaspec bench`` run."""
    data = results(folder)
    summary = data["summary"]
    lines = ["| method | tokens/s | speedup | MAT | plain steps | outputs equal to plain decoding |",
             "|---|---|---|---|---|---|"]
    for method in pick(list(summary), wanted):
        overall = summary[method]["overall"]
        mat, plain = overall.get("mat"), overall.get("plain_step_share")
        differing = len(overall.get("differing_from_baseline") or {})  # turn -> first differing position
        lines.append(f"| {method} | {overall['tokens_per_s']:.1f} | {overall['speedup']:.2f}x | "
                     f"{'–' if mat is None else f'{mat:.2f}'} | {'–' if plain is None else f'{plain:.0%}'} | "
                     f"{overall['runs'] - differing}/{overall['runs']} |")
    return "\n".join(lines)


def bench_categories(folder: str, wanted: str = "") -> str:
    """Speedup (and MAT) per method and category of an ``adaspec bench`` run."""
    summary = results(folder)["summary"]
    methods = pick(list(summary), wanted)
    categories = [c for c in summary[methods[0]] if c != "overall"]
    lines = ["| method | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
    for method in methods:
        cells = []
        for category in categories:
            figures = summary[method].get(category)
            if figures is None:
                cells.append("–")
                continue
            mat = figures.get("mat")
            cells.append(f"{figures['speedup']:.2f}x" + ("" if mat is None else f" ({mat:.2f})"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_vs_peer(folder: str, peer: str, wanted: str = "") -> str:
    """Each method against a peer run in its own process, per category.

    A cell is the method's speedup over plain decoding divided by the peer's (both over the same
    plain runs); the last column is the geometric mean over the categories both have. The last
    row is the peer's own speedup over adaspec's plain decoding: on the same kernels ideally
    1.00x, so its spread is the noise floor.

    Args:
        folder: the ``adaspec bench`` results folder.
        peer: the peer's method name (e.g. ``llama.cpp-generate``).
        wanted: the methods to show, comma-separated (empty: all but the peer).

    Returns:
        The markdown table.
    """
    summary = results(folder)["summary"]
    methods = [m for m in pick(list(summary), wanted) if m != peer]
    categories = [c for c in summary[peer] if c != "overall"]
    lines = ["| method | " + " | ".join(categories) + " | geometric mean |", "|---|" + "---|" * (len(categories) + 1)]

    def row(label: str, ratios: list[float | None]) -> str:
        known = [r for r in ratios if r is not None]
        mean = math.exp(sum(map(math.log, known)) / len(known)) if known else None
        cells = ["–" if r is None else f"{r:.2f}x" for r in ratios + [mean]]
        return f"| {label} | " + " | ".join(cells) + " |"

    for method in methods:
        lines.append(row(f"{method} / {peer}", [summary[method][c]["speedup"] / summary[peer][c]["speedup"]
                                                if c in summary[method] else None for c in categories]))
    lines.append(row(f"noise floor: {peer} / none", [summary[peer][c]["speedup"] for c in categories]))
    return "\n".join(lines)


def bench_setting(folder: str) -> str:
    """One line saying what an ``adaspec bench`` run measured."""
    data = results(folder)
    config = data["config"]
    machine = data.get("machine", {})
    cpu = machine.get("cpu", "?") + (f" ({machine['isa']})" if machine.get("isa") else "")
    return (f"{data['model']} · {config.get('backend', 'hf')} · {config.get('new_tokens')} new tokens · "
            f"{config.get('generations_done', config.get('generations'))} turns · {cpu}, "
            f"{machine.get('cpu_threads', '?')} threads · `{data['command']}`")


def learning_curve(folder: str, wanted: str = "", size: str = "4") -> str:
    """How a run's learned drafters improve over its requests: MAT and speedup over the first and
    the last ``size`` requests, in the order they ran (one category of near-identical requests)."""
    lines = (ROOT / folder / "records.jsonl").read_text().splitlines()[1:]  # the first line is the settings
    records = [json.loads(line) for line in lines if line.strip()]
    by_method: dict[str, list[dict]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    count = int(size)

    def figures(runs: list[dict], plain: list[dict]) -> tuple[str, str]:
        tokens, seconds = sum(r["new_tokens"] for r in runs), sum(r["seconds"] for r in runs)
        speedup = (tokens / seconds) / (sum(r["new_tokens"] for r in plain) / sum(r["seconds"] for r in plain))
        steps = sum(r["steps"] or 0 for r in runs)
        mat = f"{1 + sum(sum(r['accepted_per_pos']) for r in runs) / steps:.2f}" if steps else "–"
        return mat, f"{speedup:.2f}x"

    plain = by_method["none"]
    out = [f"| method | MAT, first {count} requests | MAT, last {count} | speedup, first {count} | speedup, last {count} |",
           "|---|---|---|---|---|"]
    for method in pick([m for m in by_method if m != "none"], wanted):
        runs = by_method[method]
        first_mat, first_speed = figures(runs[:count], plain[:count])
        last_mat, last_speed = figures(runs[-count:], plain[-count:])
        out.append(f"| {method} | {first_mat} | {last_mat} | {first_speed} | {last_speed} |")
    return "\n".join(out)


def plain_table(folder: str, file: str = "table.md") -> str:
    """A results folder's own ``table.md`` (scripts that write their table beside their results)."""
    return (ROOT / folder / file).read_text().strip()


TABLES: dict[str, Callable[..., str]] = {
    "bench-summary": bench_summary,
    "bench-categories": bench_categories,
    "bench-vs-peer": bench_vs_peer,
    "bench-setting": bench_setting,
    "table": plain_table,
    "learning-curve": learning_curve,
}


def render(kind: str, args: str) -> str:
    """The generated text of one table."""
    if kind not in TABLES:
        raise ValueError(f"unknown table kind {kind!r}")
    return TABLES[kind](*args.split()).strip() + "\n"


def update(text: str) -> tuple[str, list[str], list[str]]:
    """The text with every table regenerated, the tables that changed, and those that could not
    be made (a missing results file, an unknown method), each with its reason; those are left as
    they are."""
    changed: list[str] = []
    failed: list[str] = []

    def replace(match: re.Match) -> str:
        name = f"{match['kind']}{match['args']}"
        try:
            body = render(match["kind"], match["args"])
        except (OSError, ValueError, KeyError) as error:
            failed.append(f"{name}: {error}")
            return match.group(0)
        if body != match["body"]:
            changed.append(name)
        return match.group(1) + body + match.group(5)

    return MARKER.sub(replace, text), changed, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a table is stale")
    args = parser.parse_args()
    stale, broken = [], []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        new, changed, failed = update(text)
        stale += [f"{path.relative_to(ROOT)}: {name}" for name in changed]
        broken += [f"{path.relative_to(ROOT)}: {name}" for name in failed]
        if changed and not args.check:
            path.write_text(new)
    if broken:
        print("tables that cannot be made from the committed results:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    if args.check and stale:
        print("tables that differ from their committed results (run: make docs):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(stale)} table(s) {'stale' if args.check else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
