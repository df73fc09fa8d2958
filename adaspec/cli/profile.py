"""``adaspec profile``: the verify cost by tree size that ``--budget auto`` sizes trees with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaspec.bench.report import profile_rows, write_profile_plot
from adaspec.budget import PROFILE_SIZES, default_profile_path, load_or_measure_profile, measure_profile
from adaspec.cli.options import add_model_options, load_for


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommand (see ``adaspec.cli``)."""
    profile = commands.add_parser("profile", help="show (and measure) the verify cost by tree size that --budget auto uses")
    profile.add_argument("--remeasure", action="store_true", help="measure again instead of using the cached profile")
    profile.add_argument("--plot", type=Path, default=None, help="also write the curve as a PNG")
    add_model_options(profile)
    profile.set_defaults(run=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    """Runs ``adaspec profile`` (see ``adaspec.cli``)."""
    model = load_for(args)
    backend = model.new_backend()
    path = default_profile_path(backend.profile_key)
    sizes = tuple(size for size in PROFILE_SIZES if size <= model.runtime.max_tree_nodes)
    if args.remeasure or not path.exists():
        print(f"measuring tree forwards of {', '.join(map(str, sizes))} nodes...", file=sys.stderr)
        measure_profile(backend, sizes).save(path)
    profile = load_or_measure_profile(backend, path)
    print(f"verify cost by tree size · {profile.key} · {path}")
    print("\n".join(profile_rows(profile)))
    if args.plot is not None:
        write_profile_plot(profile, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
