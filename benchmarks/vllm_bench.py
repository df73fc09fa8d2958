"""vLLM plain, vLLM's own n-gram and suffix proposers, and adaspec's proposer, on adaspec's prompt sets.

Every method is a ``vllm.LLM`` in a process of its own (``vllm_worker.py``). Methods run in groups,
each with its own vLLM plain (an engine takes ~3.9 GB here: client, engine core and worker processes, 1 GiB of KV cache; not all fit at once): a group's
engines are loaded side by side and prompts go to them in turn, the order rotating from one prompt
to the next, so that a slow spell of this shared machine falls on every method alike; a method's
speedup is over its own group's plain. A second plain engine (``plain-b``) measures what plain
against plain varies: the noise floor. Everything is greedy, through the chat API (``LLM.chat``;
HumanEval's raw completion through ``LLM.generate``).

Two phases, each with fresh engines (so that no drafter's history has seen the other phase's
outputs): batch 1, the first ``--limit`` prompts of every category one at a time; batch 8, up to 8
other prompts of each category at once (concurrent requests in vLLM's continuous batching; a
category with fewer prompts reuses its first ones). ``stdlib-edit-predicted`` holds the same edits
as ``stdlib-edit`` (vLLM cannot take a prediction, so its prompt is the plain edit): there, the
methods with a history across requests have seen those edits before, by design of the workload.

Usage: ``.venv-vllm/bin/python benchmarks/vllm_bench.py --out benchmarks/vllm`` (``make bench-vllm``);
``--smoke`` runs a tiny slice. Writes ``results.json`` after every run (so an interrupted run keeps
what it measured), then ``results.md`` and ``speedup.png`` (``vllm_report.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from vllm_report import write_report  # noqa: E402
from vllm_worker import REPLY  # noqa: E402

EXISTING = ("mt-bench", "humaneval", "humaneval-chat", "math", "summarise", "qa", "code-edit")
REPEATING = ("stdlib-edit", "stdlib-edit-predicted", "revise", "quote", "agent")
# where scripts/vllm_arctic.sh installs arctic-inference (vLLM's suffix method), apart from the venv
ARCTIC = Path(os.environ.get("ADASPEC_CACHE") or Path.home() / ".cache" / "adaspec") / "vllm-arctic-inference"
GROUPS = "plain,ngram,adaspec,adaspec:suffix@8;plain,plain-b,vllm-suffix"  # each group starts with plain


class Worker:
    """One method's engine process, spoken to in JSON lines.

    Args:
        method: the method (``vllm_worker.method_kwargs``).
        model: the model directory.
        log: where the process's own output goes.
    """

    def __init__(self, method: str, model: str, log: Path) -> None:
        self.method = method
        self.log = log.open("a")
        env = dict(os.environ)
        if method == "vllm-suffix" and ARCTIC.is_dir():  # vLLM's suffix method imports arctic-inference
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ARCTIC), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen([sys.executable, str(HERE / "vllm_worker.py"), method, model], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready = self._read()
        self.load_s = ready["load_s"]

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.method} engine stopped; see {self.log.name}")
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])

    def run(self, jobs: list[list[str]], chat: list[bool], max_tokens: int) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"jobs": jobs, "chat": chat, "max_tokens": max_tokens}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.process.stdin.write(json.dumps({"quit": True}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
        self.log.close()


def digest(outputs: list[list[list[int]]]) -> list[str]:
    """Per job, a short hash of its generated tokens over all turns (to compare methods' texts)."""
    return [hashlib.sha256(json.dumps(turns).encode()).hexdigest()[:16] for turns in outputs]


def phase_sets(category: str, batch: int, limit: int) -> list[list[Any]]:
    """The prompt sets a phase runs for a category: one prompt per set at batch 1, else one set."""
    from adaspec.bench.prompts import CATEGORIES

    prompts = CATEGORIES[category]()
    if batch == 1:
        return [[p] for p in prompts[:limit]]
    others = prompts[limit:] or prompts
    chosen = (others * batch)[:batch] if len(others) < batch else others[:batch]
    return [chosen]


def run_phase(batch: int, group: int, methods: list[str], categories: list[str], args: argparse.Namespace,
              model: str, results: dict[str, Any]) -> None:
    """Loads a group's engines, runs every category's prompt sets through each in turn."""
    out = Path(args.out)
    workers = []
    try:
        for method in methods:
            log = out / "logs" / f"{method.replace(':', '_').replace('@', '_')}-b{batch}-g{group}.log"
            try:
                worker = Worker(method, model, log)
            except RuntimeError as error:
                if method == "plain":
                    raise
                print(f"batch {batch}: {method} did not start ({error}); going on without it", flush=True)
                results["unavailable"][method] = f"did not start; its log: {log.name}"
                continue
            print(f"batch {batch}: {method} loaded in {worker.load_s} s", flush=True)
            results["loads"].append({"batch": batch, "group": group, "method": method, "seconds": worker.load_s})
            workers.append(worker)
        turn = 0
        for category in categories:
            tokens = args.new_tokens if category in EXISTING else args.repeat_tokens
            for prompt_set in phase_sets(category, batch, args.limit):
                jobs = [list(p.turns) for p in prompt_set]
                chat = [p.chat for p in prompt_set]
                order = workers[turn % len(workers):] + workers[: turn % len(workers)]
                turn += 1
                for worker in order:
                    reply = worker.run(jobs, chat, tokens)
                    results["runs"].append({
                        "batch": batch, "group": group, "category": category, "method": worker.method,
                        "ids": [p.id for p in prompt_set], "turns": sum(len(j) for j in jobs),
                        "seconds": reply["seconds"], "tokens": sum(len(t) for job in reply["outputs"] for t in job),
                        "counters": reply["counters"], "digests": digest(reply["outputs"]),
                    })
                    last = results["runs"][-1]
                    print(f"b{batch} {category} {last['ids'][0]} {worker.method}: "
                          f"{last['tokens'] / last['seconds']:.1f} tok/s", flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        for worker in workers:
            worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/vllm")
    parser.add_argument("--groups", default=GROUPS, help="method groups, ';' between groups, each led by plain")
    parser.add_argument("--categories", default=",".join(EXISTING + REPEATING))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--limit", type=int, default=4, help="prompts per category at batch 1")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeat-tokens", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a tiny slice: 1 prompt of 2 categories, 64 tokens")
    args = parser.parse_args()
    if args.smoke:
        args.limit, args.new_tokens, args.repeat_tokens = 1, 64, 64
        args.categories = "math,stdlib-edit" if args.categories == parser.get_default("categories") else args.categories
    from adaspec.models.gguf import convert_gguf
    from adaspec.models.sources import embedded_model_path
    import vllm
    from adaspec.bench.system import machine_description, versions

    model = str(convert_gguf(embedded_model_path()))
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    groups = [group.split(",") for group in args.groups.split(";")]
    if any(group[0] != "plain" for group in groups):
        parser.error("every group starts with plain (its methods' baseline)")
    results: dict[str, Any] = {"settings": vars(args) | {"model": Path(model).name},
                               "system": machine_description() | {"versions": versions() | {"vllm": vllm.__version__}}, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "loads": [], "runs": [], "unavailable": {}}
    for batch in (int(b) for b in args.batches.split(",")):
        for index, group in enumerate(groups):
            run_phase(batch, index, group, args.categories.split(","), args, model, results)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(out)


if __name__ == "__main__":
    main()
