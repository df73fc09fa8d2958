"""How far the fast llama.cpp configuration (trees, default kernels) strays from plain decoding.

On the 21 equivalence prompts, each drafter's greedy output through the fast configuration is
compared with the same backend's plain decoding; at every first difference it prints the top-2
logit gap of plain decoding at that position (a near-tie when small), and how far a token's
logits in a tree batch differ from its logits alone.

Run it with a default (llamafile) build on the path, e.g. ``make llamacpp LLAMACPP_FLAVOUR=fast``
or ``PYTHONPATH=<dir with that wheel installed>``:

    python benchmarks/llamacpp_ties.py [--tokens 64] [--out benchmarks/llamacpp-ties.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import adaspec
from adaspec.backends.base import Pick
from adaspec.backends.llamacpp_build import build_is_batch_invariant
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_equivalence import CASES  # noqa: E402  the 21 prompts the suite checks


def top2_gap(backend, ids: np.ndarray) -> float:
    """Plain decoding's top-1 minus top-2 logit after ``ids``."""
    backend.prefill(ids, Pick(SamplingParams(), None, 0))
    logits = backend.last_logits(1)[0]  # the prefill's last row, read before anything else runs
    second, first = np.partition(logits, -2)[-2:]
    backend.release()
    return float(first - second)


def batch_drift(backend, ids: np.ndarray, chain: np.ndarray) -> float:
    """Largest |logit| difference between a chain verified in one batch and token by token."""
    greedy = Pick(SamplingParams(), None, 0)
    backend.prefill(ids, greedy)
    backend.verify(DraftTree(chain, np.arange(-1, chain.size - 1)), greedy)
    together = backend.last_logits(chain.size).copy()
    backend.prefill(ids, greedy)
    worst = 0.0
    for i, token in enumerate(chain):
        backend.verify(DraftTree.root_only(int(token)), greedy)
        worst = max(worst, float(np.abs(backend.last_logits(1)[0] - together[i]).max()))
        backend.commit(np.array([0]))
    backend.release()
    return worst


def main() -> None:
    """Measures and prints, and writes a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/llamacpp-ties.json"))
    args = parser.parse_args()
    model = adaspec.load(backend="llama.cpp", exact=False)
    probe = model.new_backend()
    plain = adaspec.Generator(model, drafter="none")
    references = {}
    for case_id, prompt, chat in CASES:
        ids = plain.encode(prompt, chat)
        references[case_id] = (ids, plain.generate(ids, max_new_tokens=args.tokens).token_ids)
    drift = max(batch_drift(probe, ids, np.array(out[:8])) for ids, out in list(references.values())[:5])
    summary = {"build_batch_invariant": build_is_batch_invariant(), "tokens": args.tokens,
               "batch_vs_alone_max_logit_diff": drift, "drafters": {}}
    print(f"batch-invariant build: {build_is_batch_invariant()}; max |logit| difference batch vs alone: {drift:.3g}")
    for drafter in ["lookup", "aded", "hybrid", "recycling"]:
        generator = adaspec.Generator(model, drafter=drafter, budget=8)
        differing = []
        for case_id, _, _ in CASES:
            ids, expected = references[case_id]
            got = generator.generate(ids, max_new_tokens=args.tokens).token_ids
            if got != expected:
                at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
                gap = top2_gap(probe, np.concatenate([ids, expected[:at]]).astype(np.int64))
                differing.append({"case": case_id, "position": at, "top2_gap": gap})
        gaps = [d["top2_gap"] for d in differing]
        summary["drafters"][drafter] = differing
        print(f"{drafter}: {len(differing)} of {len(CASES)} differ; top-2 gaps at the first difference: "
              + (", ".join(f"{g:.3f}" for g in sorted(gaps)) or "-"))
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
