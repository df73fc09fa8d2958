"""A llama-cpp-python generation loop in a process of its own, fed token ids over stdin.

A user who runs llama-cpp-python runs it in their own process, with no torch, no adaspec and no
other model beside it; the benchmark's peers do the same. The parent writes one JSON line per
request (``{"prompt_ids": [...], "new_tokens": N, "eos": [...]}``) and reads one back
(``{"tokens": [...], "seconds": s}``); the time is measured here, around the generation alone,
exactly as adaspec's methods are timed in theirs.

    python -m adaspec.bench.peer_worker MODEL.gguf NAME THREADS CONTEXT
"""

from __future__ import annotations

import json
import sys
import time

PEER_DRAFT_TOKENS = 10  # llama-cpp-python's prompt-lookup peer: chains of up to 10 copied tokens


def make_llm(path: str, name: str, threads: int, context: int):
    """The peer's ``Llama``: plain, or with llama-cpp-python's prompt-lookup draft model.

    Args:
        path: the GGUF file.
        name: ``llama.cpp-generate`` or ``llama.cpp-prompt-lookup``.
        threads: CPU threads.
        context: KV cells.

    Returns:
        The loaded ``Llama``.
    """
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    draft = LlamaPromptLookupDecoding(num_pred_tokens=PEER_DRAFT_TOKENS) if name == "llama.cpp-prompt-lookup" else None
    # With a draft model, llama-cpp-python 0.3.36 stores every position's logits but sizes that
    # buffer by the logits_all argument (n_batch rows when False), so prompts over 512 tokens
    # overflow it: ask for logits_all explicitly.
    return Llama(model_path=path, n_ctx=context, n_batch=512, n_threads=threads, n_threads_batch=threads,
                 draft_model=draft, logits_all=draft is not None, verbose=False)


def generate(llm, prompt_ids: list[int], new_tokens: int, eos: set[int]) -> tuple[list[int], float]:
    """Greedy ``Llama.generate`` from a fresh context (no prefix kept from an earlier request).

    Args:
        llm: the peer.
        prompt_ids: the prompt's token ids.
        new_tokens: the most tokens to generate.
        eos: tokens that end generation.

    Returns:
        The generated ids and the seconds it took.
    """
    llm.reset()
    tokens: list[int] = []
    started = time.perf_counter()
    for token in llm.generate(prompt_ids, temp=0.0, reset=True):
        tokens.append(int(token))
        if token in eos or len(tokens) >= new_tokens:
            break
    return tokens, time.perf_counter() - started


def main() -> None:
    """Serves requests from stdin until it closes."""
    path, name, threads, context = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    llm = make_llm(path, name, threads, context)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        tokens, seconds = generate(llm, request["prompt_ids"], request["new_tokens"], set(request["eos"]))
        print(json.dumps({"tokens": tokens, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
