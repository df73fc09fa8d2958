"""llama-cpp-python's own greedy loop, in a process of its own: the independent reference of the
llama.cpp tests.

The loop is the benchmark's ``llama.cpp-generate`` peer (``adaspec.bench.peer_worker.LlamaCppLoop``:
``Llama.generate`` at temperature 0, a fresh context per prompt), so it shares no code with
adaspec's backend: a KV-position or cell bug there cannot sit on both sides of a comparison.

    python tests/llama_reference.py MODEL.gguf THREADS CONTEXT NEW_TOKENS [--no-repack] < request.json

stdin holds ``{"prompts": [[ids...], ...], "eos": [ids...]}``; stdout gets ``{"tokens": [[ids...], ...]}``,
each prompt's new tokens (an ending EOS included).

By default llama-cpp-python runs as a user runs it. ``--no-repack`` loads the weights the way
adaspec's exact configuration does: without repacking (``use_extra_bufts`` off) and with ggml's
tiled K-quant kernel off (``GGML_CPU_TILED_MM=0``). Both change a K-quant file's bits (another
kernel); the embedded Q4_1 file has nothing to repack. llama-cpp-python 0.3.36 takes no argument
for repacking, so this process wraps its default-parameters function.
"""

from __future__ import annotations

import json
import os
import sys


def turn_off_repacking() -> None:
    """Makes every model this process loads skip weight repacking (as ``LlamaWeights`` does when exact)."""
    import llama_cpp
    import llama_cpp.llama

    defaults = llama_cpp.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama.llama_cpp.llama_model_default_params = without_repacking


def main() -> None:
    """Reads the request, generates every prompt, writes the tokens."""
    path, threads, context, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if "--no-repack" in sys.argv[5:]:
        os.environ["GGML_CPU_TILED_MM"] = "0"  # read by ggml at its first use, below
        turn_off_repacking()
    from adaspec.bench.peer_worker import LlamaCppLoop

    request = json.load(sys.stdin)
    loop = LlamaCppLoop(path, "llama.cpp-generate", threads, context)
    tokens = [loop.generate({"prompt_ids": ids, "new_tokens": new_tokens, "eos": request["eos"]})["tokens"]
              for ids in request["prompts"]]
    json.dump({"tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
