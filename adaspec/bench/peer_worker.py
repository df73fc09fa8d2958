"""A peer's own generation loop in a process of its own, fed token ids over stdin: llama-cpp-python's
``Llama.generate`` or transformers' ``model.generate``.

A user who runs llama-cpp-python or transformers runs it in their own process, with no adaspec
beside it; the benchmark's peers do the same. The parent writes one JSON line per request
(``{"prompt_ids": [...], "new_tokens": N, "eos": [...], "reuse": false, "temperature": 0, "seed": 0}``)
and reads one back (``{"tokens": [...], "seconds": s, "first_token_s": t}``); the time is measured
here, around the generation alone, exactly as adaspec's methods are timed in theirs. With ``reuse``
llama-cpp-python keeps what its context holds of the prompt's prefix (its own prefix reuse, as a
chat client re-sending a conversation gets it).

    python -m adaspec.bench.peer_worker RUNTIME MODEL NAME THREADS CONTEXT
"""

from __future__ import annotations

import json
import sys
import time

PEER_DRAFT_TOKENS = 10  # the prompt-lookup peers: chains of up to 10 copied tokens


class LlamaCppLoop:
    """``Llama.generate`` (greedy), plain or with llama-cpp-python's prompt-lookup draft model.

    Args:
        path: the GGUF file.
        name: ``llama.cpp-generate``, ``llama.cpp-generate-default-kernels`` or ``llama.cpp-prompt-lookup``.
        threads: CPU threads.
        context: KV cells.
    """

    def __init__(self, path: str, name: str, threads: int, context: int) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        draft = LlamaPromptLookupDecoding(num_pred_tokens=PEER_DRAFT_TOKENS) if name.endswith("prompt-lookup") else None
        # With a draft model, llama-cpp-python 0.3.36 stores every position's logits but sizes that
        # buffer by the logits_all argument (n_batch rows when False), so prompts over 512 tokens
        # overflow it: ask for logits_all explicitly.
        self.llm = Llama(model_path=path, n_ctx=context, n_batch=512, n_threads=threads, n_threads_batch=threads,
                         draft_model=draft, logits_all=draft is not None, verbose=False)

    def generate(self, request: dict) -> dict:
        """Greedy generation, from a fresh context or keeping the cached prefix (``reuse``).

        ``Llama.generate(reset=True)`` is what finds the longest common prefix with the context's
        tokens and keeps those cells (``reset=False`` would append the prompt after them), so reuse
        leaves the context as it is and a cold request empties it first.
        """
        if not request.get("reuse", False):
            self.llm.reset()
        eos, tokens, first = set(request["eos"]), [], None
        started = time.perf_counter()
        for token in self.llm.generate(request["prompt_ids"], temp=0.0, reset=True):
            first = first or time.perf_counter() - started
            tokens.append(int(token))
            if token in eos or len(tokens) >= request["new_tokens"]:
                break
        return {"tokens": tokens, "seconds": time.perf_counter() - started, "first_token_s": first}


class TransformersLoop:
    """transformers' ``model.generate``: plain, or with its prompt lookup; greedy or sampled.

    Args:
        path: a Hugging Face model directory.
        name: ``hf-generate`` or ``hf-prompt-lookup``.
        threads: CPU threads.
        context: unused.
    """

    def __init__(self, path: str, name: str, threads: int, context: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
        self.extra = {"prompt_lookup_num_tokens": PEER_DRAFT_TOKENS} if name == "hf-prompt-lookup" else {}

    def generate(self, request: dict) -> dict:
        """One generation; sampled with the request's seed when its temperature is above 0."""
        torch = self.torch
        ids = torch.tensor([request["prompt_ids"]], dtype=torch.long)  # [1, p]
        sampling = {"do_sample": True, "temperature": request["temperature"], "top_k": 0, "top_p": 1.0} \
            if request.get("temperature", 0) > 0 else {"do_sample": False}
        torch.manual_seed(request.get("seed", 0))
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=request["new_tokens"],
                                      eos_token_id=sorted(request["eos"]), pad_token_id=request["eos"][0],
                                      **sampling, **self.extra)
        tokens = out[0, ids.shape[1]:].tolist()
        return {"tokens": tokens, "seconds": time.perf_counter() - started, "first_token_s": None}


LOOPS = {"llama.cpp": LlamaCppLoop, "hf": TransformersLoop}


def main() -> None:
    """Serves requests from stdin until it closes."""
    runtime, path, name, threads, context = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    loop = LOOPS[runtime](path, name, threads, context)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(loop.generate(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
