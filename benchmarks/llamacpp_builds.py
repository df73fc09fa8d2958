"""Which llama.cpp build is faster here: AVX2 or AVX-512 (VNNI, VBMI, BF16; no AMX), both exact.

Each build is installed beside the project (``pip install --target DIR``) and measured in a
process of its own, the two alternating, twice: plain greedy decoding of three prompts (128
tokens, tokens per second) and the time of one verify step of 1, 8 and 32 chained nodes after a
300-token prompt. Both must pass ``scripts/llamacpp_smoke.py`` (exact batches) first.

    .venv/bin/python benchmarks/llamacpp_builds.py --builds avx2=/tmp/ll/avx2,avx512=/tmp/ll/avx512 \\
        --out benchmarks/llamacpp-builds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = ["Write a short story about a robot learning to paint.", "Explain how a hash table works.",
           "List ten uses of a paperclip."]


def measure() -> dict:
    """In the build's own process: decoding speed and verify-step cost."""
    import numpy as np

    import adaspec
    from adaspec.backends.base import Pick
    from adaspec.sampling import SamplingParams
    from adaspec.tree import DraftTree

    model = adaspec.load(backend="llama.cpp")
    plain = adaspec.Generator(model, drafter="none")
    plain.generate(PROMPTS[0], max_new_tokens=8)
    speeds = [plain.generate(p, max_new_tokens=128).stats for p in PROMPTS]
    tokens_per_s = sum(s.new_tokens for s in speeds) / sum(s.total_s - s.prefill_s for s in speeds)
    backend = model.new_backend()
    greedy = Pick(SamplingParams(), None, 0)
    rng = np.random.default_rng(0)
    backend.prefill(rng.integers(100, 20000, 300), greedy)
    steps = {}
    for size in (1, 8, 32):
        times = []
        for _ in range(7):
            tree = DraftTree(rng.integers(100, 20000, size), np.arange(-1, size - 1))
            started = time.perf_counter()
            backend.verify(tree, greedy)
            times.append(time.perf_counter() - started)
            backend.commit(np.zeros(0, dtype=np.int64))
        steps[size] = 1000 * statistics.median(times[2:])
    return {"decode_tokens_per_s": tokens_per_s, "verify_ms": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", required=True, help="NAME=DIR,... where DIR holds an installed llama_cpp")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/llamacpp-builds"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return
    builds = dict(item.split("=", 1) for item in args.builds.split(","))
    results: dict[str, list[dict]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, folder in builds.items():
            env = {**os.environ, "PYTHONPATH": folder}
            run = subprocess.run([sys.executable, __file__, "--builds", args.builds, "--measure"], env=env,
                                 capture_output=True, text=True, timeout=900)
            if run.returncode != 0:
                raise SystemExit(f"{name}: {run.stderr.strip().splitlines()[-1]}")
            results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(name, results[name][-1], flush=True)
    summary = {name: {"decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs),
                      "verify_ms": {size: statistics.median(r["verify_ms"][size] for r in runs)
                                    for size in runs[0]["verify_ms"]}}
               for name, runs in results.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"runs": results, "median": summary}, indent=1))
    lines = ["| build | plain decoding tok/s | verify 1 node | 8 nodes | 32 nodes |", "|---|---|---|---|---|"]
    for name, m in summary.items():
        v = m["verify_ms"]
        lines.append(f"| {name} | {m['decode_tokens_per_s']:.1f} | {v['1']:.1f} ms | {v['8']:.1f} ms | {v['32']:.1f} ms |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
