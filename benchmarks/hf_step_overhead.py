"""Per-step cost of the HF backend: DynamicCache with a rebuilt mask against the lean path
(preallocated TreeKVCache, persistent mask), interleaved in one process.

For each context length and tree size it times verify + commit (median of many steps), and the
same forward's matrix products alone are estimated with torch's profiler (aten::mm / addmm /
linear / matmul self time), so "overhead" = step time - matmul time.

Usage: python benchmarks/hf_step_overhead.py [--steps 40] [--out benchmarks/hf-step-overhead]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import adaspec
from adaspec.backends.base import Pick
from adaspec.backends.hf import HFBackend
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def step_ms(backend: HFBackend, size: int, rng: np.random.Generator, vocab: int) -> float:
    """One verify + commit of a ``size``-node chain whose first node is accepted, in ms."""
    tree = DraftTree(rng.integers(0, vocab, size=size), np.arange(-1, size - 1))
    tick = time.perf_counter()
    backend.verify(tree, Pick(SamplingParams(), None, 8))
    backend.commit(np.array([0], dtype=np.int64))
    return 1000 * (time.perf_counter() - tick)


def matmul_ms(backend: HFBackend, size: int, rng: np.random.Generator, vocab: int) -> float:
    """Self CPU time of the matrix products in one verify step, ms (torch profiler)."""
    tree = DraftTree(rng.integers(0, vocab, size=size), np.arange(-1, size - 1))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        backend.verify(tree, Pick(SamplingParams(), None, 8))
    backend.commit(np.array([0], dtype=np.int64))
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1000


def main() -> None:
    """Measures and writes results.json and results.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/hf-step-overhead"))
    args = parser.parse_args()
    model = adaspec.load()
    rng = np.random.default_rng(0)
    backends = {"dynamic (before)": HFBackend(model.runtime.model, lean=False), "lean (after)": HFBackend(model.runtime.model, lean=True)}
    rows = []
    for context in (256, 1500):
        prompt = rng.integers(0, model.vocab_size, size=context)
        for size in (1, 8):
            times: dict[str, list[float]] = {name: [] for name in backends}
            for backend in backends.values():
                backend.prefill(prompt, Pick(SamplingParams(), None, 0))
                for _ in range(3):  # warm-up
                    step_ms(backend, size, rng, model.vocab_size)
            for _ in range(args.steps):  # interleaved, so machine noise hits both alike
                for name, backend in backends.items():
                    times[name].append(step_ms(backend, size, rng, model.vocab_size))
            for name, backend in backends.items():
                mm = float(np.median([matmul_ms(backend, size, rng, model.vocab_size) for _ in range(5)]))
                step = float(np.median(times[name]))
                rows.append({"context": context, "nodes": size, "backend": name, "step_ms": step, "matmul_ms": mm,
                             "overhead_ms": step - mm})
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))
    lines = ["| context | nodes | backend | step ms | matmul ms | overhead ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['context']} | {r['nodes']} | {r['backend']} | {r['step_ms']:.1f} | {r['matmul_ms']:.1f} | {r['overhead_ms']:.1f} |" for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
