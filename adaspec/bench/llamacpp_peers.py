"""llama-cpp-python's own decoding of the same GGUF, as peers in a benchmark on the llama.cpp backend.

``llama.cpp-generate`` is ``Llama.generate`` at temperature 0 (plain greedy decoding, llama.cpp's
default context settings); ``llama.cpp-prompt-lookup`` adds its ``LlamaPromptLookupDecoding``
draft model (chains of up to 10 tokens copied from the context). Both run in the same process as
adaspec's methods, on the same file and the same llama.cpp build.
"""

from __future__ import annotations

import time

import numpy as np

from adaspec.bench.metrics import RunRecord
from adaspec.loading import LoadedModel

LLAMACPP_PEERS = ("llama.cpp-generate", "llama.cpp-prompt-lookup")
PEER_CONTEXT = 4096  # cells of the peers' contexts: the benchmark's longest turn is ~2,000 tokens


class LlamaCppPeer:
    """One of llama-cpp-python's high-level generation loops (see the module doc).

    Args:
        model: a model loaded with ``backend="llama.cpp"``.
        name: ``llama.cpp-generate`` or ``llama.cpp-prompt-lookup``.
    """

    def __init__(self, model: LoadedModel, name: str) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        weights = model.weights
        self.name = name
        self.eos_token_ids = model.eos_token_ids
        draft = LlamaPromptLookupDecoding(num_pred_tokens=10) if name == "llama.cpp-prompt-lookup" else None
        # With a draft model, llama-cpp-python 0.3.36 stores every position's logits but sizes that
        # buffer by the logits_all argument (n_batch rows when False), so prompts over 512 tokens
        # overflow it: ask for logits_all explicitly. Its buffer is n_ctx x vocab floats, hence the cap.
        self.llm = Llama(model_path=str(weights.path), n_ctx=min(weights.n_ctx, PEER_CONTEXT), n_batch=512,
                         n_threads=weights.threads, n_threads_batch=weights.threads,
                         n_gpu_layers=0 if weights.device == "cpu" else -1, draft_model=draft,
                         logits_all=draft is not None, verbose=False)

    def run(self, prompt_ids: np.ndarray, new_tokens: int, label: tuple[str, str, int]) -> RunRecord:
        """Generates greedily with ``Llama.generate`` (see ``runner.Method.run``); no prefix is reused
        from an earlier prompt, as adaspec reuses none."""
        self.llm.reset()
        tokens: list[int] = []
        started = time.perf_counter()
        for token in self.llm.generate(prompt_ids.tolist(), temp=0.0, reset=True):
            tokens.append(int(token))
            if token in self.eos_token_ids or len(tokens) >= new_tokens:
                break
        seconds = time.perf_counter() - started
        return RunRecord(label[0], label[1], self.name, label[2], len(tokens), seconds, tokens)
