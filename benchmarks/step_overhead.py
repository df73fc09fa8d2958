"""Per-step work outside the forward pass, against the output position, over a 2,000-token
generation: detokenisation and stop-string checks (``OutputTracker``) and the ``lookup``
drafter's context search.

The tokens are real text (this project's frozen source snapshot) in the embedded model's
tokenizer, fed 1-4 at a time as a speculative step would; no model runs, so only the work that
can grow with length is timed. Run it on two checkouts and compare:

    .venv/bin/python benchmarks/step_overhead.py --out benchmarks/step-overhead/after.json
    .venv/bin/python benchmarks/step_overhead.py --plot benchmarks/step-overhead
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TOKENS = 2000
WINDOW = 100  # steps per plotted point


def measure(out: Path) -> None:
    import adaspec
    from adaspec.bench.own_texts import load_own_texts
    from adaspec.drafters import make_drafter
    from adaspec.output import OutputTracker

    model = adaspec.load()
    text = "\n".join(str(v) for v in load_own_texts().values())
    ids = model.tokenizer(text, add_special_tokens=False).input_ids[:TOKENS]
    rng = np.random.default_rng(0)
    tracker = OutputTracker(model.tokenizer, model.eos_token_ids, ["<<never appears>>"], limit=TOKENS)
    lookup = make_drafter("lookup", model.vocab_size)
    prompt = np.asarray(model.tokenizer("Summarise the following code.").input_ids, dtype=np.int64)
    lookup.propose(prompt, 8)  # warm-up: the first call loads the compiled scan
    context = np.concatenate((prompt, np.asarray(ids, dtype=np.int64)))  # [p + TOKENS] filled ahead, read as views
    positions, tracker_ms, lookup_ms = [], [], []
    done = 0
    while done < len(ids):
        step = ids[done : done + int(rng.integers(1, 5))]
        tick = time.perf_counter()
        tracker.extend(step)
        tracker.text_delta()
        tock = time.perf_counter()
        lookup.propose(context[: prompt.size + done + len(step)], 8)  # a view, as the engine passes its context
        end = time.perf_counter()
        done += len(step)
        positions.append(done)
        tracker_ms.append(1e3 * (tock - tick))
        lookup_ms.append(1e3 * (end - tock))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"positions": positions, "tracker_ms": tracker_ms, "lookup_ms": lookup_ms}))
    print(f"{out}: tracker {np.mean(tracker_ms[:WINDOW]):.3f} -> {np.mean(tracker_ms[-WINDOW:]):.3f} ms/step, "
          f"lookup {np.mean(lookup_ms[:WINDOW]):.3f} -> {np.mean(lookup_ms[-WINDOW:]):.3f} ms/step (first -> last {WINDOW} steps)")


def plot(folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("before", "after"):
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for axis, key, title in zip(axes, ("tracker_ms", "lookup_ms"), ("detokenise + stop check", "lookup drafter")):
            values = np.asarray(data[key])  # [steps]
            points = values.size // WINDOW
            means = values[: points * WINDOW].reshape(points, WINDOW).mean(axis=1)  # [points]
            where = np.asarray(data["positions"])[WINDOW - 1 :: WINDOW][:points]  # [points]
            axis.plot(where, means, marker="o", label=name)
            axis.set(title=title, xlabel="output position (tokens)", ylabel=f"ms per step (mean of {WINDOW})")
    for axis in axes:
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "step_overhead.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="measure into this JSON file")
    parser.add_argument("--plot", type=Path, help="plot before.json and after.json of this folder")
    args = parser.parse_args()
    if args.out:
        measure(args.out)
    if args.plot:
        plot(args.plot)


if __name__ == "__main__":
    main()
