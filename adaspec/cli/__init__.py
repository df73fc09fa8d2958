"""The ``adaspec`` command line: ``adaspec generate "prompt"`` and friends, one module per
subcommand, the options they share declared once (``adaspec.cli.options``).

Each subcommand's module has ``add_parser(commands)``, which adds the subcommand and its options
and sets ``run``, and a run function taking the parsed ``argparse.Namespace`` and returning the
exit code. Bad input raises ``AdaspecError``, which ``main`` prints as one line on stderr
(``adaspec: error: ...``) with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from adaspec.cli import bench, generate, prior, profile, serve
from adaspec.cli.options import OneLineParser
from adaspec.errors import AdaspecError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand; each sets ``run``, the function that runs it."""
    parser = OneLineParser(prog="adaspec", description="Lossless speculative decoding on transformers or llama.cpp.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for subcommand in (generate, bench, profile, serve, prior):
        subcommand.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaspec`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad input, 130 when interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except AdaspecError as error:
        print(f"adaspec: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("adaspec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
