"""The ``adaspec`` command line: ``adaspec generate "prompt"`` and friends.

Bad input ends with one line on stderr (``adaspec: error: ...``) and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from adaspec.bench.checkpoint import Checkpoint
from adaspec.bench.metrics import summarise
from adaspec.bench.prompts import CATEGORIES, load_prompts
from adaspec.bench.report import write_report
from adaspec.bench.runner import (AdaspecMethod, BenchInterrupted, build_methods, check_method_names,
                                  default_method_names, method_names, run_benchmark)
from adaspec.bench.system import report_meta
from adaspec.drafters import AdedConfig, drafter_names, parse_drafter_spec
from adaspec.drafters.trigram import MAX_CAPACITY
from adaspec.bench.report import write_profile_plot
from adaspec.budget import PROFILE_SIZES, default_profile_path, load_or_measure_profile, measure_profile
from adaspec.backends.base import DEFAULT_BUDGET
from adaspec.engine import AUTO, Generation, Generator
from adaspec.errors import AdaspecError
from adaspec.loading import BACKENDS, DTYPES, load
from adaspec.prior import build_prior, read_texts, write_prior
from adaspec.options import RequestOptions
from adaspec.sampling import SamplingParams
from adaspec.state_store import DrafterStateStore, default_state_dir

EXIT_BAD_INPUT = 2


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = OneLineParser(prog="adaspec", description="Lossless speculative decoding on transformers or llama.cpp.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    gen = commands.add_parser("generate", help="generate text from a prompt, speculatively")
    gen.add_argument("prompt", help='the prompt text ("-" reads it from stdin)')
    gen.add_argument("--model", default=None, help="a .gguf file, a Hugging Face model directory, or qwen2.5-coder-0.5b after make qwen (default: embedded SmolLM2-135M-Instruct)")
    gen.add_argument("--drafter", default=None, help=f"one of: {', '.join(drafter_names())}, optionally with config overrides "
        "as NAME:key=value,... (default: hybrid:copy=suffix on hf, suffix on llama.cpp)")
    gen.add_argument("--budget", type=budget_value, default=None,
                     help=f"tree nodes per step, root included, or 'auto' to size each step from measured cost "
                          "(default: auto)")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="the most tokens to generate (default: 256)")
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None, help="wrap the prompt in the chat template (default: when the model has one)")
    gen.add_argument("--stop", action="append", default=[], help="a string that ends generation (repeatable)")
    gen.add_argument("--compare", action="store_true", help="also decode plainly in the same process and report the speedup")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 for greedy (default), else sample at this temperature")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens only (default: 0, all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="sample from the most likely tokens holding this probability (default: 1.0)")
    gen.add_argument("--seed", type=int, default=None, help="seed for sampling; the same seed gives the same text (default: random)")
    gen.add_argument("--prediction", type=Path, default=None,
                     help="a text file the output is expected to be close to (the file being edited): it is drafted "
                          "from, so matching spans are verified many tokens at a time; the output is unchanged")
    gen.add_argument("--state-dir", type=Path, default=None,
                     help="where the drafter's learned state is kept between runs (default: $ADASPEC_STATE_DIR or "
                          "$ADASPEC_CACHE/drafter-state)")
    gen.add_argument("--no-state", action="store_true", help="start the drafter cold and keep nothing")
    add_backend_options(gen)
    gen.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    gen.add_argument("--dtype", default="float32", help=f"one of: {', '.join(DTYPES)} (default: float32)")

    bench = commands.add_parser("bench", help="benchmark drafters against plain decoding and transformers' methods")
    bench.add_argument("--model", default=None, help="a .gguf file, a Hugging Face model directory, or qwen2.5-coder-0.5b after make qwen (default: embedded model)")
    bench.add_argument("--categories", default=None, help=f"comma-separated, from: {', '.join(CATEGORIES)} (default: all)")
    bench.add_argument("--methods", default=None, help=f"comma-separated, from: {', '.join(method_names())}; NAME@N sets a budget; hf-* run on --backend hf, llama.cpp-* on --backend llama.cpp (default: every drafter and the backend's peers)")
    bench.add_argument("--limit", type=int, default=None, help="the most prompts per category")
    bench.add_argument("--new-tokens", type=int, default=256, help="the most tokens per generation (default: 256)")
    bench.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help=f"tree nodes per step (default: {DEFAULT_BUDGET})")
    bench.add_argument("--temperature", type=float, default=0.0, help="0 for greedy (default); else every method samples, one seed per turn")
    bench.add_argument("--out", type=Path, default=Path("bench-out"), help="report folder (default: bench-out)")
    bench.add_argument("--resume", action="store_true",
                       help="go on from the records an interrupted run left in --out (same settings), running only the missing turns")
    add_backend_options(bench)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", default="float32")

    profile = commands.add_parser("profile", help="show (and measure) the verify cost by tree size that --budget auto uses")
    profile.add_argument("--model", default=None, help="a .gguf file, a Hugging Face model directory, or qwen2.5-coder-0.5b after make qwen (default: embedded model)")
    add_backend_options(profile)
    profile.add_argument("--device", default="cpu")
    profile.add_argument("--dtype", default="float32")
    profile.add_argument("--remeasure", action="store_true", help="measure again instead of using the cached profile")
    profile.add_argument("--plot", type=Path, default=None, help="also write the curve as a PNG")

    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    serve.add_argument("--model", default=None, help="a .gguf file, a Hugging Face directory or a named model "
                       "(default: the embedded SmolLM2-135M-Instruct)")
    serve.add_argument("--drafter", default=None, help="drafter spec (default: the backend's default)")
    serve.add_argument("--budget", type=budget_value, default=None, help="tree nodes per step, or auto")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--served-model-name", default=None, help="the model name clients use (default: the model's)")
    serve.add_argument("--max-concurrency", type=int, default=8, help="requests decoded at once (default: 8)")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="requests waiting beyond those; more get 429 + Retry-After (default: 64)")
    serve.add_argument("--request-timeout", type=float, default=600.0, help="seconds a request may take (default: 600)")
    serve.add_argument("--state-dir", type=Path, default=None,
                       help="where the drafter's learned state is kept (default: $ADASPEC_CACHE/drafter-state)")
    serve.add_argument("--no-state", action="store_true", help="start cold and keep nothing")
    serve.add_argument("--save-every", type=float, default=300.0, help="seconds between state saves (default: 300)")
    serve.add_argument("--history-scope", default="server", choices=["server", "user", "key"],
                       help="whose requests share the suffix drafter's history: everyone (server), requests with "
                            "the same OpenAI user field (user) or the same API key (key) (default: server)")
    serve.add_argument("--no-batch", action="store_true",
                       help="verify one request per forward (default: all active requests in one forward, where a "
                            "start-up check shows it gives each request exactly its solo logits)")
    serve.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N, mps)")
    serve.add_argument("--dtype", default="float32", choices=list(DTYPES))
    add_backend_options(serve)

    prior = commands.add_parser("prior", help="build a tri-gram prior for the aded drafter")
    prior_commands = prior.add_subparsers(dest="prior_command", required=True, parser_class=OneLineParser)
    build = prior_commands.add_parser("build", help="count tri-grams of text files, tokenised by the model's tokenizer")
    build.add_argument("files", nargs="+", type=Path, help="UTF-8 text files")
    build.add_argument("--model", default=None, help="whose tokenizer and vocabulary (default: embedded model)")
    build.add_argument("-o", "--out", type=Path, required=True, help="the .npz file to write (use as aded:prior_path=FILE)")
    build.add_argument("--capacity", type=int, default=AdedConfig.capacity, help=f"the most contexts kept (default: {AdedConfig.capacity})")
    return parser


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """Adds ``--backend`` and ``--exact/--no-exact`` to a subcommand.

    Args:
        parser: the subcommand's parser.
    """
    parser.add_argument("--backend", default="hf", choices=BACKENDS,
                        help="the runtime: hf (transformers) or llama.cpp (a GGUF file; make llamacpp) (default: hf)")
    parser.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                        help="llama.cpp only: batch-invariant chain verification (equals plain decoding) or, with "
                             "--no-exact, trees on the default kernels (default: exact when the build allows it)")


def load_for(args: argparse.Namespace):
    """Loads the model a subcommand's options name (``--model``, ``--backend``, ``--device``...).

    Args:
        args: the parsed command line.

    Returns:
        The ``LoadedModel``.

    Raises:
        AdaspecError: as ``adaspec.load``.
    """
    return load(args.model, device=args.device, dtype=args.dtype, backend=args.backend, exact=args.exact)


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


def run_profile(args: argparse.Namespace) -> int:
    """Runs ``adaspec profile``.

    Args:
        args: the parsed command line.

    Returns:
        The exit code.
    """
    model = load_for(args)
    backend = model.new_backend()
    path = default_profile_path(backend.profile_key)
    if args.remeasure or not path.exists():
        print(f"measuring tree forwards of {', '.join(map(str, PROFILE_SIZES))} nodes...", file=sys.stderr)
        measure_profile(backend).save(path)
    profile = load_or_measure_profile(backend, path)
    print(f"verify cost by tree size · {profile.key} · {path}")
    print("| nodes | " + " | ".join(str(s) for s in profile.sizes) + " |")
    print("|---|" + "---|" * len(profile.sizes))
    print("| ms | " + " | ".join(f"{m:.1f}" for m in profile.ms) + " |")
    print("| × one node | " + " | ".join(f"{m / profile.ms[0]:.2f}" for m in profile.ms) + " |")
    if args.plot is not None:
        write_profile_plot(profile, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def backend_label(model) -> str:
    """The runtime a benchmark ran on, as its report names it (``hf``, ``llama.cpp exact``...).

    Args:
        model: the loaded model.

    Returns:
        The label.
    """
    if model.weights is None:
        return model.runtime
    return f"{model.runtime} {model.weights.configuration}"


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated option as a list.

    Args:
        value: the option's text, or None when it was not given.

    Returns:
        The non-empty items, stripped (None stays None).
    """
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def run_bench(args: argparse.Namespace) -> int:
    """Runs ``adaspec bench``.

    Args:
        args: the parsed command line.

    Returns:
        The exit code (130 when interrupted, after writing a partial report).

    Raises:
        AdaspecError: for a bad option, model or checkpoint.
    """
    if args.new_tokens < 1:
        raise AdaspecError(f"--new-tokens must be at least 1, got {args.new_tokens}")
    if args.budget < 1:
        raise AdaspecError(f"--budget must be at least 1, got {args.budget}")
    SamplingParams(args.temperature)  # validates the temperature
    prompts = load_prompts(split_list(args.categories), args.limit)  # validates categories and limit
    names = split_list(args.methods) or default_method_names(args.backend)
    check_method_names(names)
    model = load_for(args)
    methods = build_methods(model, names, args.budget, args.temperature)
    meta = report_meta(" ".join(["adaspec"] + sys.argv[1:]), model.name, prompts, [m.name for m in methods],
                       args.new_tokens, args.budget, args.dtype, args.device, args.temperature, backend_label(model))
    checkpoint = Checkpoint(args.out / "records.jsonl", model.name, meta["config"])
    done = checkpoint.resume() if args.resume else checkpoint.start()
    interrupted = False
    with sigterm_as_interrupt():
        try:
            records = run_benchmark(model, prompts, methods, args.new_tokens, on_record=checkpoint.append, done=done)
        except BenchInterrupted as stop:
            records, interrupted = stop.records, True
    if not records:
        raise KeyboardInterrupt
    meta["config"] |= {"generations_done": len(records) // len(methods), "generations_reused": len(done) // len(methods)}
    figures = summarise(records, baseline=methods[0].name)
    auto = [m for m in methods if isinstance(m, AdaspecMethod) and m.generator.sizer is not None]
    calibration = {m.name: m.calibration() for m in auto}
    profile = auto[0].generator.sizer.profile if auto else None
    written = write_report(args.out, records, figures, meta, calibration, profile)
    print((args.out / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if interrupted:
        print(f"adaspec: interrupted; the report covers the {meta['config']['generations_done']} of "
              f"{meta['config']['generations']} turns finished; add --resume to go on", file=sys.stderr)
        return 130
    return 0


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM (a session or job ending) interrupts like Ctrl-C, so work done is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_prior_build(args: argparse.Namespace) -> int:
    """Runs ``adaspec prior build``.

    Args:
        args: the parsed command line.

    Returns:
        The exit code.

    Raises:
        AdaspecError: for a bad capacity, an unreadable text file or an unwritable output.
    """
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


def read_prompt(prompt: str) -> str:
    """The prompt argument's text.

    Args:
        prompt: the argument; ``-`` reads standard input.

    Returns:
        The prompt.
    """
    return sys.stdin.read() if prompt == "-" else prompt


def run_generate(args: argparse.Namespace) -> int:
    """Runs ``adaspec generate``.

    Args:
        args: the parsed command line.

    Returns:
        The exit code.

    Raises:
        AdaspecError: for a bad option or model.
    """
    if args.drafter is not None:
        parse_drafter_spec(args.drafter)  # a bad drafter fails before the model loads
    if args.max_new_tokens < 1:
        raise AdaspecError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    # one seed for the run and its --compare baseline, so both sample the same text
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    prediction = None
    if args.prediction is not None:
        try:
            prediction = args.prediction.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise AdaspecError(f"cannot read the prediction file {args.prediction}: "
                               f"{getattr(error, 'strerror', None) or error}") from None
    options = RequestOptions(max_new_tokens=args.max_new_tokens, stop=tuple(args.stop), chat=args.chat,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed,
                             prediction=prediction)
    prompt = read_prompt(args.prompt)
    if not prompt.strip():
        raise AdaspecError("the prompt is empty")
    model = load_for(args)
    generator = Generator(model, drafter=args.drafter, budget=args.budget)
    label = args.drafter or generator.pool.prototype.default_drafter  # the backend's default spec when none was given
    store = None if args.no_state else DrafterStateStore(args.state_dir or default_state_dir(), model.name, label)
    if store is not None:
        store.load_into(generator.drafter)  # warm: what earlier runs learned
    generator.encode(prompt, args.chat)  # reject a bad prompt before any warm-up
    baseline: Generation | None = None
    if args.compare:
        plain = Generator(model, drafter="none")
        # both warmed alike (a new context's first decodes of each shape are slow), on another
        # prompt: the same one would leave its prefix cached and skip the prefill being compared
        for warming in (plain, generator):
            warming.generate("Say hello.", options, max_new_tokens=8, chat=None, prediction=None)
        baseline = plain.generate(prompt, options)

    if args.json:
        result = generator.generate(prompt, options)
    else:
        stream = generator.stream(prompt, options)
        for piece in stream:
            print(piece, end="", flush=True)
        print()
        result = stream.result
    assert result is not None
    if store is not None:
        store.save(generator.drafter)

    if args.json:
        print(json.dumps(json_summary(label, result, baseline)))
    else:
        print(stats_line(label, result, baseline), file=sys.stderr)
    return 0


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
    """The one-line human summary printed after streamed text.

    Args:
        drafter: the drafter's name.
        result: the speculative generation.
        baseline: plain decoding's generation, with ``--compare``.

    Returns:
        Tokens, tokens/s and MAT, plus the speedup and equality when there is a baseline.
    """
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


def run_serve(args: argparse.Namespace) -> int:
    """Runs ``adaspec serve`` until interrupted.

    Args:
        args: the parsed command line.

    Returns:
        The exit code.

    Raises:
        AdaspecError: for a bad option or model.
    """
    from adaspec.serve import build_server, run_server, served_name

    if args.drafter is not None:
        parse_drafter_spec(args.drafter)
    if not 0 < args.port < 65536:
        raise AdaspecError(f"--port must lie in 1..65535, got {args.port}")
    if args.max_concurrency < 1 or args.max_queue < 0 or args.request_timeout <= 0 or args.save_every <= 0:
        raise AdaspecError("--max-concurrency must be >= 1, --max-queue >= 0, --request-timeout and --save-every > 0")
    model = load_for(args)
    generator = Generator(model, drafter=args.drafter, budget=args.budget, max_requests=args.max_concurrency,
                          max_idle_backends=args.max_concurrency)
    spec = args.drafter or generator.pool.prototype.default_drafter
    state_dir = None if args.no_state else (args.state_dir or default_state_dir())
    name = args.served_model_name or served_name(model.name)
    aliases = tuple(a for a in (args.model, model.name) if a)
    if not args.no_batch:
        print("adaspec: checking that batched verification is exact on this machine (cached after the first time)...",
              file=sys.stderr, flush=True)
    server = build_server(generator, name, spec, aliases=aliases, max_active=args.max_concurrency,
                          max_waiting=args.max_queue, request_timeout=args.request_timeout, state_dir=state_dir,
                          save_every=args.save_every, batch=not args.no_batch, history_scope=args.history_scope)
    saver = server.scheduler.saver
    print(f"adaspec: serving {name!r} on http://{args.host}:{args.port}/v1 (drafter {spec}, budget "
          f"{generator.sizer and 'auto' or generator.budget}, {args.max_concurrency} at once, "
          f"{'batched' if server.scheduler.batch else 'one request per forward: ' + server.batching.reason}; "
          f"state: {saver.store.path if saver else 'not kept'})", file=sys.stderr, flush=True)
    run_server(server, args.host, args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaspec`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad input, 130 when interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
        if args.command == "generate":
            return run_generate(args)
        if args.command == "bench":
            return run_bench(args)
        if args.command == "profile":
            return run_profile(args)
        if args.command == "prior":
            return run_prior_build(args)
        if args.command == "serve":
            return run_serve(args)
        raise AdaspecError(f"unknown command {args.command!r}")
    except AdaspecError as error:
        print(f"adaspec: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("adaspec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
