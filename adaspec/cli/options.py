"""What several subcommands share: their option groups (each option declared once, with one
default), parsing helpers, and opening a generator with its learned state."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from adaspec.backends import RUNTIMES
from adaspec.backends.hf_model import DTYPES
from adaspec.drafters import drafter_names, parse_drafter_spec
from adaspec.engine import AUTO, Generator
from adaspec.errors import AdaspecError
from adaspec.loading import load
from adaspec.models.loaded import LoadedModel
from adaspec.state_store import DrafterStateStore, default_state_dir, open_state

MODEL_HELP = ("a .gguf file, a Hugging Face model directory, or qwen2.5-coder-0.5b after make qwen "
              "(default: the embedded SmolLM2-135M-Instruct)")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every other adaspec error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raises the parser's complaint as an AdaspecError, printed as one line by ``main``.

        Args:
            message: what argparse found wrong.

        Raises:
            AdaspecError: always.
        """
        raise AdaspecError(message)


def budget_value(text: str) -> int | str:
    """Parses a --budget value.

    Args:
        text: the option's text.

    Returns:
        A positive number of tree nodes, or 'auto'.

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    if text == AUTO:
        return AUTO
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of tree nodes >= 1 or 'auto', got {text!r}")
    return int(text)


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated option as a list.

    Args:
        value: the option's text, or None when it was not given.

    Returns:
        The non-empty items, stripped (None stays None).
    """
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--backend``, ``--exact/--no-exact``, ``--device`` and ``--dtype``.

    Args:
        parser: the subcommand's parser.
    """
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help=MODEL_HELP)
    group.add_argument("--backend", default="hf", choices=list(RUNTIMES),
                       help="the runtime: hf (transformers) or llama.cpp (a GGUF file; make llamacpp) (default: hf)")
    group.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                       help="llama.cpp only: batch-invariant chain verification (equals plain decoding) or, with "
                            "--no-exact, trees on the default kernels (default: exact when the build allows it)")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    group.add_argument("--dtype", default="float32", choices=list(DTYPES), help="hf only (default: float32)")


def add_drafting_options(parser: argparse.ArgumentParser, drafter: bool = True) -> None:
    """``--drafter`` and ``--budget``, whose defaults are the runtime's own.

    Args:
        parser: the subcommand's parser.
        drafter: include ``--drafter`` (``bench`` names drafters in its methods instead).
    """
    group = parser.add_argument_group("drafting")
    if drafter:
        group.add_argument("--drafter", default=None,
                           help=f"one of: {', '.join(drafter_names())}, optionally with config overrides as "
                                "NAME:key=value,... (default: the runtime's own, hybrid:copy=suffix on hf and "
                                "suffix on llama.cpp)")
    group.add_argument("--budget", type=budget_value, default=None,
                       help="tree nodes per step, root included, or 'auto' to size each step from measured cost "
                            "(default: the runtime's own, auto on both)")


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """``--state-dir`` and ``--no-state``: where the drafter's learned state is kept between runs.

    Args:
        parser: the subcommand's parser.
    """
    group = parser.add_argument_group("learned state")
    group.add_argument("--state-dir", type=Path, default=None,
                       help="where the drafter's learned state is kept between runs (default: $ADASPEC_STATE_DIR "
                            "or $ADASPEC_CACHE/drafter-state)")
    group.add_argument("--no-state", action="store_true", help="start the drafter cold and keep nothing")


def load_for(args: argparse.Namespace) -> LoadedModel:
    """Loads the model a subcommand's model options name.

    Args:
        args: the parsed command line.

    Returns:
        The model.

    Raises:
        AdaspecError: as ``adaspec.load``.
    """
    return load(args.model, device=args.device, dtype=args.dtype, backend=args.backend, exact=args.exact)


@dataclass
class OpenedGenerator:
    """A generator as ``generate`` and ``serve`` open it.

    Attributes:
        generator: the model, drafter and budget.
        spec: the drafter's spec (the runtime's default when none was given).
        store: where its learned state is kept (None with ``--no-state``).
    """

    generator: Generator
    spec: str
    store: DrafterStateStore | None


def open_generator(args: argparse.Namespace, **generator_options: object) -> OpenedGenerator:
    """Loads the model and opens a generator over it with the drafter's learned state.

    Args:
        args: the parsed command line (model, drafting and state options).
        generator_options: more ``Generator`` arguments (``max_requests``...).

    Returns:
        The generator, its drafter spec and its state store.

    Raises:
        AdaspecError: for a bad drafter, budget or model.
    """
    if args.drafter is not None:
        parse_drafter_spec(args.drafter)  # a bad drafter fails before the model loads
    model = load_for(args)
    generator = Generator(model, drafter=args.drafter, budget=args.budget, **generator_options)
    spec = args.drafter or model.runtime.default_drafter
    state_dir = None if args.no_state else (args.state_dir or default_state_dir())
    return OpenedGenerator(generator, spec, open_state(generator.drafter, state_dir, model.name, spec))
