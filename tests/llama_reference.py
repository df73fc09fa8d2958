"""llama-cpp-python's own greedy loop, in a process of its own: the independent reference of the
llama.cpp tests.

The loop is the benchmark's ``llama.cpp-generate`` peer (``adaspec.bench.peer_worker.LlamaCppLoop``:
``Llama.generate`` at temperature 0, a fresh context per prompt), so it shares no code with
adaspec's backend: a KV-position or cell bug there cannot sit on both sides of a comparison.

    python tests/llama_reference.py MODEL.gguf THREADS CONTEXT NEW_TOKENS < request.json

stdin holds ``{"prompts": [[ids...], ...], "eos": [ids...]}``; stdout gets ``{"tokens": [[ids...], ...]}``,
each prompt's new tokens (an ending EOS included).

llama-cpp-python runs as a user runs it (its defaults).
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    """Reads the request, generates every prompt, writes the tokens."""
    path, threads, context, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from adaspec.bench.peer_worker import LlamaCppLoop

    request = json.load(sys.stdin)
    loop = LlamaCppLoop(path, "llama.cpp-generate", threads, context)
    tokens = [loop.generate({"prompt_ids": ids, "new_tokens": new_tokens, "eos": request["eos"]})["tokens"]
              for ids in request["prompts"]]
    json.dump({"tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
