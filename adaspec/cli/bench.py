"""``adaspec bench``: drafters against plain decoding and other libraries' loops, on prompt sets."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from adaspec.bench.prompts import CATEGORIES
from adaspec.bench.run import BenchSettings, run_bench
from adaspec.bench.runner import method_names
from adaspec.cli.options import add_drafting_options, add_model_options, load_for, split_list


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommand (see ``adaspec.cli``)."""
    bench = commands.add_parser("bench", help="benchmark drafters against plain decoding and other libraries' loops")
    bench.add_argument("--categories", default=None, help=f"comma-separated, from: {', '.join(CATEGORIES)} (default: all)")
    bench.add_argument("--methods", default=None,
                       help=f"comma-separated, from: {', '.join(method_names())}; NAME@N sets a budget; hf-* run on "
                            "--backend hf, llama.cpp-* on --backend llama.cpp (default: every drafter and the "
                            "backend's peers)")
    bench.add_argument("--limit", type=int, default=None, help="the most prompts per category")
    bench.add_argument("--new-tokens", type=int, default=256, help="the most tokens per generation (default: 256)")
    bench.add_argument("--temperature", type=float, default=0.0,
                       help="0 for greedy (default); else every method samples, one seed per turn")
    bench.add_argument("--out", type=Path, default=Path("bench-out"), help="report folder (default: bench-out)")
    bench.add_argument("--resume", action="store_true",
                       help="go on from the records an interrupted run left in --out (same settings), running only "
                            "the missing turns")
    add_drafting_options(bench, drafter=False)
    add_model_options(bench)
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``adaspec bench`` (see ``adaspec.cli``); 130 when interrupted, after a partial report."""
    settings = BenchSettings(
        categories=split_list(args.categories), methods=split_list(args.methods), limit=args.limit,
        new_tokens=args.new_tokens, budget=args.budget, temperature=args.temperature, out=args.out,
        resume=args.resume, backend=args.backend, dtype=args.dtype, device=args.device,
        command=" ".join(["adaspec"] + sys.argv[1:]))
    return run_bench(settings, partial(load_for, args))
