"""Smoke test of an installed llama-cpp-python build, run before the build is used.

Loads the embedded GGUF on llama.cpp, decodes a 24-token chain in one batch and the same tokens
one at a time, and checks that the batch ran at all (a build with the wrong instructions for this
CPU dies here, on its first multi-token batch) and, for a build that says it is batch-invariant,
that every row's logits are bit-identical to the one-at-a-time ones.

    python scripts/llamacpp_smoke.py      # exit 0: usable (and exact where it claims to be)
"""

from __future__ import annotations

import sys

import numpy as np

from adaspec.backends.base import Pick
from adaspec.backends.llamacpp_build import build_is_batch_invariant
from adaspec.backends.llamacpp_runtime import LlamaCppRuntime
from adaspec.models.sources import embedded_model_path
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree


def main() -> int:
    exact = bool(build_is_batch_invariant())
    runtime = LlamaCppRuntime(embedded_model_path(), exact=exact)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 20000, 40)
    chain = rng.integers(100, 20000, 24)
    greedy = Pick(SamplingParams(), None, 0)
    together = runtime.new_backend()
    together.prefill(prompt, greedy)
    together.verify(DraftTree(chain, np.arange(-1, chain.size - 1)), greedy)
    batch = together.last_logits(chain.size).copy()  # [24, V]
    alone = runtime.new_backend()
    alone.prefill(prompt, greedy)
    worst = 0.0
    for i, token in enumerate(chain):
        alone.verify(DraftTree(np.array([token]), np.array([-1])), greedy)
        row = alone.last_logits(1)[0]
        alone.commit(np.array([0]))
        worst = max(worst, float(np.abs(row - batch[i]).max()))
    print(f"llama.cpp build smoke test: a 24-token batch ran; largest |batch - alone| logit difference {worst:.3g}"
          f" ({'exact' if exact else 'fast'} build)")
    return 0 if worst == 0.0 or not exact else 1


if __name__ == "__main__":
    sys.exit(main())
