"""``adaspec prior build``: a tri-gram table for the ``aded`` drafter, counted from text files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from adaspec.cli.options import MODEL_HELP, OneLineParser
from adaspec.drafters import AdedConfig
from adaspec.drafters.trigram import MAX_CAPACITY
from adaspec.errors import AdaspecError
from adaspec.loading import load
from adaspec.prior import build_prior, read_texts, write_prior


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommand (see ``adaspec.cli``)."""
    prior = commands.add_parser("prior", help="build a tri-gram prior for the aded drafter")
    prior_commands = prior.add_subparsers(dest="prior_command", required=True, parser_class=OneLineParser)
    build = prior_commands.add_parser("build", help="count tri-grams of text files, tokenised by the model's tokenizer")
    build.add_argument("files", nargs="+", type=Path, help="UTF-8 text files")
    build.add_argument("--model", default=None, help=f"whose tokenizer and vocabulary: {MODEL_HELP}")
    build.add_argument("-o", "--out", type=Path, required=True, help="the .npz file to write (use as aded:prior_path=FILE)")
    build.add_argument("--capacity", type=int, default=AdedConfig.capacity,
                       help=f"the most contexts kept (default: {AdedConfig.capacity})")
    build.set_defaults(run=run_prior_build)


def run_prior_build(args: argparse.Namespace) -> int:
    """Runs ``adaspec prior build`` (see ``adaspec.cli``)."""
    if not 1 <= args.capacity <= MAX_CAPACITY:
        raise AdaspecError(f"--capacity must lie in 1..{MAX_CAPACITY}, got {args.capacity}")
    if not args.out.resolve().parent.is_dir():
        raise AdaspecError(f"cannot write {args.out}: folder {args.out.resolve().parent} does not exist")
    texts = read_texts(args.files)
    model = load(args.model)
    sequences = [np.asarray(model.tokenizer(text, add_special_tokens=False).input_ids, dtype=np.int64) for text in texts]
    tokens = sum(s.size for s in sequences)
    if tokens < 3:
        raise AdaspecError("the files hold fewer than 3 tokens; nothing to count")
    table = build_prior(sequences, model.vocab_size, capacity=args.capacity, slots=AdedConfig.slots)
    write_prior(table, args.out)
    print(f"wrote {args.out}: {len(table)} contexts from {tokens} tokens in {len(texts)} files", file=sys.stderr)
    return 0
