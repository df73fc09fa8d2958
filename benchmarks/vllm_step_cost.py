"""What a draft costs in vLLM on this CPU: a step's time with an empty chain and with 1..8 draft
tokens per row, against vLLM plain, at batch 1 and 8 (``benchmarks/vllm/step-cost.json``).

A proposer made for this measurement (``FixedChainProposer``) returns, for every row, a chain of
``d`` copies of a token the model never picks, so every draft is rejected and every step emits one
token per row: the step's time is what verifying ``d`` extra tokens per row costs. ``d`` is read
from a file before each step, so one engine measures every length. A step's time is the
difference between runs of 80 and 16 new tokens (prefill cancels), over 64 steps; the median of
``--repeats`` runs, plain and custom engines interleaved.

Usage: ``.venv-vllm/bin/python benchmarks/vllm_step_cost.py --out benchmarks/vllm``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

LENGTHS = (0, 1, 2, 4, 8)
SHORT, LONG = 16, 80


class FixedChainProposer:
    """Returns ``d`` rejected draft tokens per decoding row, ``d`` read from a file each call.

    Args:
        vllm_config: vLLM's config; ``additional_config["chain_file"]`` names the file.
    """

    def __init__(self, vllm_config: Any) -> None:
        self.path = Path(vllm_config.additional_config["chain_file"])
        self.token = int(vllm_config.model_config.get_vocab_size()) - 1  # a token the model never picks here

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """No model needed."""

    def propose(self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        """``d`` copies of the junk token per row that just decoded (none for prefill chunks)."""
        length = int(self.path.read_text() or 0)
        return [[self.token] * length if sampled else [] for sampled in sampled_token_ids]


def step_ms(llm: Any, prompts: list[list[int]]) -> float:
    """Milliseconds per engine step: (time for LONG tokens - time for SHORT) / (LONG - SHORT)."""
    from vllm import SamplingParams

    def timed(tokens: int) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        started = time.perf_counter()
        llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return time.perf_counter() - started

    return 1000.0 * (timed(LONG) - timed(SHORT)) / (LONG - SHORT)


def main() -> None:
    from vllm import LLM

    from adaspec.models.gguf import convert_gguf
    from adaspec.models.sources import embedded_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/vllm")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = str(convert_gguf(embedded_model_path()))
    chain_file = Path(tempfile.mkdtemp()) / "chain"
    chain_file.write_text("0")
    engine = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048, "max_num_seqs": 8, "seed": 0}
    plain = LLM(model, **engine)
    custom = LLM(model, **engine, additional_config={"chain_file": str(chain_file)},
                 speculative_config={"method": "custom_class", "model": "vllm_step_cost.FixedChainProposer",
                                     "num_speculative_tokens": max(LENGTHS)})
    rows: dict[str, dict[str, list[float]]] = {}
    for batch in (1, 8):
        prompts = [[(7 * row + 3 * i) % 5000 + 100 for i in range(96)] for row in range(batch)]  # [batch, 96] distinct
        for _ in range(args.repeats):
            rows.setdefault(f"b{batch}", {}).setdefault("plain", []).append(step_ms(plain, prompts))
            for length in LENGTHS:
                chain_file.write_text(str(length))
                rows[f"b{batch}"].setdefault(f"chain {length}", []).append(step_ms(custom, prompts))
            print(json.dumps({k: round(v[-1], 1) for k, v in rows[f"b{batch}"].items()}), flush=True)
    result = {"step_ms": {b: {k: round(statistics.median(v), 2) for k, v in cells.items()} for b, cells in rows.items()},
              "runs_ms": rows, "repeats": args.repeats, "steps_per_run": LONG - SHORT}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step-cost.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["step_ms"], indent=1))


if __name__ == "__main__":
    main()
