"""What each llama.cpp runtime switch costs and whether it keeps a chain's logits equal to plain decoding's.

For weight repacking and flash attention, each on and off, on the installed (exact) build: a
greedy plain decode of 48 tokens one row at a time, then the same tokens fed again as chains of
k rows, at a short context (60 prompt tokens) and a long one (700, where a one-row decode's KV
view passes 512 cells); the table gives the largest |chain - plain| logit difference and the
median time of one forward of 1, 2, 4 and 8 rows at the short context. Raw llama.cpp calls, no
adaspec code in the timed loop. Run it alone:

    .venv/bin/python benchmarks/llamacpp_configs.py --out benchmarks/llamacpp-configs
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import time
from pathlib import Path

import numpy as np

CHAINS = (2, 3, 4, 8)
TIMED_ROWS = (1, 2, 4, 8)
STEPS = 48


class Context:
    """One llama.cpp model and context in a given configuration, fed raw batches."""

    def __init__(self, lib, path: str, repack: bool, flash: bool, threads: int) -> None:
        params = lib.llama_model_default_params()
        params.use_extra_bufts = repack
        self.lib = lib
        self.model = lib.llama_model_load_from_file(path.encode(), params)
        context = lib.llama_context_default_params()
        context.n_ctx, context.n_batch, context.n_ubatch, context.n_seq_max = 2048, 512, 512, 1
        context.n_threads = context.n_threads_batch = threads
        context.no_perf = True
        context.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(self.model, context)
        self.memory = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.batch = lib.llama_batch_init(512, 0, 1)

    def decode(self, tokens: list[int], start: int, all_logits: bool = True) -> np.ndarray:
        """Decodes tokens at positions start.. on sequence 0; returns ``[rows, V]`` logits (a copy)."""
        b = self.batch
        for i, token in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, start + i, 1, 0
            b.logits[i] = all_logits or i == len(tokens) - 1
        b.n_tokens = len(tokens)
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        rows = len(tokens) if all_logits else 1
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(rows, self.vocab)).copy()

    def prefill(self, prompt: list[int]) -> np.ndarray:
        self.lib.llama_memory_clear(self.memory, True)
        for begin in range(0, len(prompt), 512):
            last = self.decode(prompt[begin : begin + 512], begin, all_logits=False)
        return last

    def chain_difference(self, prompt: list[int]) -> dict[int, float]:
        """Largest |chain - plain| logit difference per chain length, after ``prompt``."""
        start = len(prompt)
        token = int(self.prefill(prompt)[0].argmax())
        tokens, plain = [], []
        for step in range(STEPS):
            row = self.decode([token], start + step)[0]
            tokens.append(token)
            plain.append(row)
            token = int(row.argmax())
        plain = np.stack(plain)  # [STEPS, V]
        worst = {}
        for k in CHAINS:
            worst[k] = 0.0
            for first in range(0, STEPS - k + 1, k):
                self.lib.llama_memory_seq_rm(self.memory, 0, start + first, -1)
                got = self.decode(tokens[first : first + k], start + first)
                worst[k] = max(worst[k], float(np.abs(got - plain[first : first + k]).max()))
        return worst

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/llamacpp-configs"))
    parser.add_argument("--model", default=None, help="a .gguf file (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    os.environ["GGML_CPU_TILED_MM"] = "0"  # as the exact configuration sets it, before ggml first runs
    import llama_cpp as lib

    from adaspec.backends.llamacpp_build import build_label
    from adaspec.models.sources import embedded_model_path

    path = args.model or str(embedded_model_path())
    quiet = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda level, text, data: None)
    lib.llama_log_set(quiet, ctypes.c_void_p())
    lib.llama_backend_init()
    rng = np.random.default_rng(0)
    short = [int(t) for t in rng.integers(100, 40000, 60)]
    long = [int(t) for t in rng.integers(100, 40000, 700)]
    rows = []
    for repack in (False, True):
        for flash in (False, True):
            context = Context(lib, path, repack, flash, args.threads)
            short_diff, long_diff = context.chain_difference(short), context.chain_difference(long)
            context.prefill(short)
            times = {k: [] for k in TIMED_ROWS}
            for _ in range(args.repeats):  # interleaved row counts
                for k in TIMED_ROWS:
                    context.lib.llama_memory_seq_rm(context.memory, 0, len(short), -1)
                    tick = time.perf_counter()
                    context.decode(short[:k], len(short))
                    times[k].append(time.perf_counter() - tick)
            context.close()
            rows.append({"repack": repack, "flash_attention": flash, "short_context_difference": short_diff,
                         "long_context_difference": long_diff,
                         "ms": {k: 1e3 * float(np.median(v)) for k, v in times.items()}})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model": Path(path).name, "build": build_label(), "threads": args.threads}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "configs": rows}, indent=1))
    lines = ["| repacking | flash attention | largest chain-vs-plain logit difference, 60-token context | 700-token context "
             "| 1 row | 2 rows | 4 rows | 8 rows |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {'on' if row['repack'] else 'off'} | {'on' if row['flash_attention'] else 'off'} | "
                     f"{max(row['short_context_difference'].values()):.3g} | {max(row['long_context_difference'].values()):.3g} | "
                     + " | ".join(f"{row['ms'][k]:.1f} ms" for k in TIMED_ROWS) + " |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
