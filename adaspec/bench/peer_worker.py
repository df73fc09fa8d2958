"""A llama-cpp-python generation loop in a process of its own, fed token ids over stdin.

A user who runs llama-cpp-python runs it in their own process, with no torch, no adaspec and no
other model beside it; the benchmark's peers do the same. The parent writes one JSON line per
request (``{"prompt_ids": [...], "new_tokens": N, "eos": [...], "reuse": false}``) and reads one
back (``{"tokens": [...], "seconds": s, "first_token_s": t}``); the time is measured here, around
the generation alone, exactly as adaspec's methods are timed in theirs. With ``reuse`` the
context keeps what it holds of the prompt's prefix (llama-cpp-python's own prefix reuse, as a
chat client re-sending a conversation gets it).

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


def generate(llm, prompt_ids: list[int], new_tokens: int, eos: set[int], reuse: bool = False) -> dict:
    """Greedy ``Llama.generate``, from a fresh context or keeping the cached prefix.

    Args:
        llm: the peer.
        prompt_ids: the prompt's token ids.
        new_tokens: the most tokens to generate.
        eos: tokens that end generation.
        reuse: keep the context's cells of the prompt's prefix (else start empty).

    Returns:
        ``tokens`` generated, ``seconds`` it took and ``first_token_s``.
    """
    if not reuse:
        llm.reset()
    tokens: list[int] = []
    started = time.perf_counter()
    first = None
    for token in llm.generate(prompt_ids, temp=0.0, reset=not reuse):
        first = first or time.perf_counter() - started
        tokens.append(int(token))
        if token in eos or len(tokens) >= new_tokens:
            break
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "first_token_s": first}


def main() -> None:
    """Serves requests from stdin until it closes."""
    path, name, threads, context = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    llm = make_llm(path, name, threads, context)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(generate(llm, request["prompt_ids"], request["new_tokens"], set(request["eos"]),
                                  request.get("reuse", False))), flush=True)


if __name__ == "__main__":
    main()
