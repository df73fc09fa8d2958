"""What keeping the drafter's learned state across processes buys: 20 successive requests of one
domain, cold against warm-started, greedy, on the embedded model.

Four ways to serve the same 20 evaluation requests (HumanEval problems as chat, or MT-Bench):

* ``cli --no-state``: every request in a fresh process with a cold drafter;
* ``cli``: every request in a fresh process that loads the state the previous one saved
  (what ``adaspec generate`` does by default), the first one starting empty;
* ``server cold``: one process, drafter empty at the start, learning as it goes;
* ``server warm``: one process started on the state an earlier server saved after 20 *other*
  requests of the same domain.

Each request also runs with plain decoding; methods are interleaved per request (rotating
order) so machine noise hits all alike. The state goes through the real ``DrafterStateStore``
(save to disk, load into a new drafter) each time a process would.

    .venv/bin/python benchmarks/warm_start.py --out benchmarks/warm-start
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

import adaspec
from adaspec import Generator
from adaspec.bench.prompts import load_prompts
from adaspec.state_store import DrafterStateStore

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DRAFTER = "hybrid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/warm-start"))
    parser.add_argument("--category", default="humaneval-chat")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    model = adaspec.load()
    prompts = [p.turns[0] for p in load_prompts([args.category], limit=2 * args.requests)]
    history, evaluation = prompts[: args.requests], prompts[args.requests :]
    state_dir = Path(tempfile.mkdtemp(prefix="adaspec-warm-"))

    def store(name: str) -> DrafterStateStore:
        return DrafterStateStore(state_dir / name, model.name, DRAFTER)

    earlier = Generator(model, drafter=DRAFTER)  # an earlier server session on other requests of the domain
    for prompt in history:
        earlier.generate(prompt, max_new_tokens=args.tokens)
    store("server").save(earlier.drafter)

    plain = Generator(model, drafter="none")
    server_cold = Generator(model, drafter=DRAFTER)
    server_warm = Generator(model, drafter=DRAFTER)
    assert store("server").load_into(server_warm.drafter)

    def cli(prompt: str, keep_state: bool):
        generator = Generator(model, drafter=DRAFTER, backend=plain.backend)  # a fresh process's drafter
        if keep_state:
            store("cli").load_into(generator.drafter)
        result = generator.generate(prompt, max_new_tokens=args.tokens)
        if keep_state:
            store("cli").save(generator.drafter)
        return result

    methods = {
        "plain": lambda p: plain.generate(p, max_new_tokens=args.tokens),
        "cli --no-state": lambda p: cli(p, keep_state=False),
        "cli": lambda p: cli(p, keep_state=True),
        "server cold": lambda p: server_cold.generate(p, max_new_tokens=args.tokens),
        "server warm": lambda p: server_warm.generate(p, max_new_tokens=args.tokens),
    }
    names = list(methods)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    plain.generate(evaluation[0], max_new_tokens=8)  # warm-up
    for index, prompt in enumerate(evaluation):
        order = names[index % len(names):] + names[: index % len(names)]
        outputs = {}
        for name in order:
            result = methods[name](prompt)
            outputs[name] = result.token_ids
            runs[name].append({"mat": result.stats.mat, "tokens": result.stats.new_tokens, "seconds": result.stats.total_s})
        assert all(ids == outputs["plain"] for ids in outputs.values()), f"request {index}: output differs"
        print(f"request {index + 1}: " + ", ".join(f"{n} MAT {runs[n][-1]['mat']:.2f}" for n in names[1:]), flush=True)

    summary = {}
    plain_s = sum(r["seconds"] for r in runs["plain"])
    for name in names:
        rows = runs[name]
        tokens, seconds = sum(r["tokens"] for r in rows), sum(r["seconds"] for r in rows)
        summary[name] = {"mat_mean": sum(r["mat"] for r in rows) / len(rows), "tokens_per_s": tokens / seconds,
                         "speedup": plain_s / seconds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"category": args.category, "requests": args.requests,
                                                       "max_tokens": args.tokens, "summary": summary, "runs": runs},
                                                      indent=1))
    lines = ["| how | mean MAT | tok/s | speedup vs plain |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['mat_mean']:.2f} | {s['tokens_per_s']:.1f} | {s['speedup']:.2f}x |" for n, s in summary.items()]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    figure, axis = plt.subplots(figsize=(7, 4))
    for name in names[1:]:
        axis.plot(range(1, len(runs[name]) + 1), [r["mat"] for r in runs[name]], marker="o", label=name)
    axis.set(xlabel="request", ylabel="mean accepted tokens per step", title=f"Cold vs warm-started drafter ({args.category})")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(args.out / "warm_start.png", dpi=120)


if __name__ == "__main__":
    main()
