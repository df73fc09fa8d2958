"""``adaspec serve``: the model behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaspec.cli.options import add_drafting_options, add_model_options, add_state_options, open_generator
from adaspec.errors import AdaspecError

DEFAULT_MAX_BODY_MB = 16.0  # as adaspec.serve's (not imported here: the serve stack loads only to serve)
DEFAULT_DRAIN_S = 30.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommand (see ``adaspec.cli``)."""
    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--served-model-name", default=None, help="the model name clients use (default: the model's)")
    serve.add_argument("--max-concurrency", type=int, default=8, help="requests decoded at once (default: 8)")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="requests waiting beyond those; more get 429 + Retry-After (default: 64)")
    serve.add_argument("--request-timeout", type=float, default=600.0, help="seconds a request may take (default: 600)")
    serve.add_argument("--save-every", type=float, default=300.0, help="seconds between state saves (default: 300)")
    serve.add_argument("--history-scope", default=None, choices=["server", "user", "key"],
                       help="whose requests share learned and cached state (prefix caches and cached_tokens, "
                            "suffix history, acceptance calibration): everyone (server: right for one user), each "
                            "API key (key), or each OpenAI user field within a key (user) (default: key with "
                            "--api-key, else server)")
    access = serve.add_argument_group("access and limits")
    access.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="accept requests carrying 'Authorization: Bearer KEY' only (repeatable; also "
                             "$ADASPEC_API_KEY); others get 401; /health stays open")
    access.add_argument("--api-key-file", type=Path, default=None, metavar="FILE",
                        help="more keys, one a line ('#' starts a comment)")
    access.add_argument("--public-metrics", action="store_true", help="serve /metrics without a key")
    access.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                        help=f"the largest request body read, in MiB; larger ones get 413 before a byte is read "
                             f"(default: {DEFAULT_MAX_BODY_MB:g})")
    access.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_S,
                        help="seconds running requests get to finish after SIGTERM or Ctrl-C; new ones get 503, the "
                             f"rest end with an error event; a second signal stops at once (default: {DEFAULT_DRAIN_S:g})")
    serve.add_argument("--no-batch", action="store_true",
                       help="verify one request per forward (default: all active requests in one forward, where a "
                            "start-up check shows it gives each request exactly its solo logits)")
    add_drafting_options(serve)
    add_state_options(serve)
    add_model_options(serve)
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Runs ``adaspec serve`` until interrupted (see ``adaspec.cli``)."""
    from adaspec.serve import build_server, load_keys, run_server, served_name

    if not 0 < args.port < 65536:
        raise AdaspecError(f"--port must lie in 1..65535, got {args.port}")
    if args.max_concurrency < 1 or args.max_queue < 0 or args.request_timeout <= 0 or args.save_every <= 0:
        raise AdaspecError("--max-concurrency must be >= 1, --max-queue >= 0, --request-timeout and --save-every > 0")
    if not args.max_body_mb > 0 or not args.drain_timeout >= 0:
        raise AdaspecError("--max-body-mb must be > 0 and --drain-timeout >= 0")
    keys = load_keys(args.api_key, args.api_key_file)  # a bad key file fails before the model loads
    opened = open_generator(args, max_requests=args.max_concurrency, max_idle_backends=args.max_concurrency)
    generator = opened.generator
    model = generator.model
    name = args.served_model_name or served_name(model.name)
    aliases = tuple(a for a in (args.model, model.name) if a)
    if not args.no_batch:
        print("adaspec: checking that batched verification is exact on this machine (cached after the first time)...",
              file=sys.stderr, flush=True)
    server = build_server(generator, name, opened.store, aliases=aliases, max_active=args.max_concurrency,
                          max_waiting=args.max_queue, request_timeout=args.request_timeout,
                          save_every=args.save_every, batch=not args.no_batch, history_scope=args.history_scope,
                          keys=keys, public_metrics=args.public_metrics, max_body_mb=args.max_body_mb)
    scheduler = server.scheduler
    print(f"adaspec: serving {name!r} on http://{args.host}:{args.port}/v1 (drafter {opened.spec}, budget "
          f"{generator.sizer and 'auto' or generator.budget}, {args.max_concurrency} at once, "
          f"{'batched' if scheduler.batched else 'one request per forward: ' + server.batching.reason}; "
          f"{len(keys) if keys else 'no'} API keys, history scope {server.history_scope}; "
          f"state: {opened.store.path if opened.store else 'not kept'})", file=sys.stderr, flush=True)
    run_server(server, args.host, args.port, drain_timeout=args.drain_timeout)
    return 0
