"""``adaspec generate``: one prompt, streamed, with the speedup over plain decoding on request."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from adaspec.cli.options import add_drafting_options, add_model_options, add_state_options, open_generator
from adaspec.engine import Generation, Generator
from adaspec.errors import AdaspecError
from adaspec.options import RequestOptions


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommand (see ``adaspec.cli``)."""
    gen = commands.add_parser("generate", help="generate text from a prompt, speculatively")
    gen.add_argument("prompt", help='the prompt text ("-" reads it from stdin)')
    gen.add_argument("--max-new-tokens", type=int, default=256, help="the most tokens to generate (default: 256)")
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                     help="wrap the prompt in the chat template (default: when the model has one)")
    gen.add_argument("--stop", action="append", default=[], help="a string that ends generation (repeatable)")
    gen.add_argument("--compare", action="store_true",
                     help="also decode plainly in the same process and report the speedup")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 for greedy (default), else sample at this temperature")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens only (default: 0, all)")
    gen.add_argument("--top-p", type=float, default=1.0,
                     help="sample from the most likely tokens holding this probability (default: 1.0)")
    gen.add_argument("--seed", type=int, default=None,
                     help="seed for sampling; the same seed gives the same text (default: random)")
    gen.add_argument("--prediction", type=Path, default=None,
                     help="a text file the output is expected to be close to (the file being edited): it is drafted "
                          "from, so matching spans are verified many tokens at a time; the output is unchanged")
    add_drafting_options(gen)
    add_state_options(gen)
    add_model_options(gen)
    gen.set_defaults(run=run_generate)


def read_prediction(path: Path | None) -> str | None:
    """The text of ``--prediction``.

    Args:
        path: the file, or None.

    Returns:
        Its text, or None.

    Raises:
        AdaspecError: if the file cannot be read as text.
    """
    if path is None:
        return None
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise AdaspecError(f"cannot read the prediction file {path}: "
                           f"{getattr(error, 'strerror', None) or error}") from None


def run_generate(args: argparse.Namespace) -> int:
    """Runs ``adaspec generate`` (see ``adaspec.cli``)."""
    if args.max_new_tokens < 1:
        raise AdaspecError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    # one seed for the run and its --compare baseline, so both sample the same text
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    options = RequestOptions(max_new_tokens=args.max_new_tokens, stop=tuple(args.stop), chat=args.chat,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed,
                             prediction=read_prediction(args.prediction))
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise AdaspecError("the prompt is empty")
    opened = open_generator(args)
    generator = opened.generator
    generator.encode(prompt, args.chat)  # reject a bad prompt before any warm-up
    baseline = plain_baseline(generator, prompt, options) if args.compare else None
    if args.json:
        result = generator.generate(prompt, options)
    else:
        stream = generator.stream(prompt, options)
        for piece in stream:
            print(piece, end="", flush=True)
        print()
        result = stream.result
    if opened.store is not None:
        opened.store.save(generator.drafter)
    if args.json:
        print(json.dumps(json_summary(opened.spec, result, baseline)))
    else:
        print(stats_line(opened.spec, result, baseline), file=sys.stderr)
    return 0


def plain_baseline(generator: Generator, prompt: str, options: RequestOptions) -> Generation:
    """Plain decoding of the same request through the same runtime, for ``--compare``.

    Both generators are warmed alike first (a new context's first decodes of each shape are
    slow), on another prompt: the same one would leave its prefix cached and skip the prefill
    being compared.

    Args:
        generator: the speculative generator.
        prompt: the prompt.
        options: the request's options.

    Returns:
        Plain decoding's generation.
    """
    plain = Generator(generator.model, drafter="none")
    for warming in (plain, generator):
        warming.generate("Say hello.", options, max_new_tokens=8, chat=None, prediction=None)
    return plain.generate(prompt, options)


def json_summary(drafter: str, result: Generation, baseline: Generation | None) -> dict:
    """The JSON object ``generate --json`` prints.

    Args:
        drafter: the drafter's name.
        result: the speculative generation.
        baseline: plain decoding's generation, with ``--compare``.

    Returns:
        Text, tokens and stats, plus the speedup and equality when there is a baseline.
    """
    stats = result.stats
    out = {
        "drafter": drafter,
        "text": result.text,
        "token_ids": result.token_ids,
        "finish_reason": result.finish_reason,
        "prompt_tokens": stats.prompt_tokens,
        "new_tokens": stats.new_tokens,
        "tokens_per_s": stats.tokens_per_s,
        "mat": stats.mat,
        "acceptance_rate_per_pos": stats.acceptance_rate_per_pos,
        "stats": stats.to_dict(),
    }
    if baseline is not None:
        out.update(
            baseline_tokens_per_s=baseline.stats.tokens_per_s,
            speedup=stats.tokens_per_s / baseline.stats.tokens_per_s,
            identical=baseline.token_ids == result.token_ids,
        )
    return out


def stats_line(drafter: str, result: Generation, baseline: Generation | None) -> str:
    """The one-line human summary printed after streamed text: tokens, tokens/s and MAT, plus the
    speedup and equality when there is a baseline (arguments as for ``json_summary``)."""
    stats = result.stats
    line = (
        f"[{drafter}] {stats.new_tokens} new tokens, {stats.tokens_per_s:.1f} tokens/s, "
        f"MAT {stats.mat:.2f} tokens/step"
    )
    if baseline is not None:
        same = "identical" if baseline.token_ids == result.token_ids else "DIFFERENT"
        line += (
            f" | plain decoding {baseline.stats.tokens_per_s:.1f} tokens/s"
            f" | speedup {stats.tokens_per_s / baseline.stats.tokens_per_s:.2f}x | output {same}"
        )
    return line
