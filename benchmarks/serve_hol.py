"""Head-of-line blocking probe: while 4 streams run, does a client posting a 16 MB prompt and a
300,000-message chat make them wait?

A fresh ``adaspec serve`` (embedded model, ``hybrid`` at budget 8, batching as the machine
allows, ``--no-state``) serves 4 greedy chat streams of 64 tokens. In a *control* round nothing
else happens; in an *attack* round, once every stream has its first text, another client posts
a 16 MB prompt to ``/v1/completions`` and a chat of 300,000 messages (~10 MB) at the same
time. The figure is the largest gap between two text chunks of any running stream; the attack's
must stay within 2x the control's. Rounds alternate, so machine noise hits both alike.

    .venv/bin/python benchmarks/serve_hol.py --out benchmarks/serve-hol
    # the same probe against another checkout (e.g. the code before the fix):
    .venv/bin/python benchmarks/serve_hol.py --code /tmp/before --label before --out /tmp/hol-before
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx2 as httpx

from adaspec.bench.server_process import start_server

PROMPTS = ["Explain how a hash table works.", "Write a short story about a lighthouse keeper.",
           "List ten tips for writing clear code.", "Describe the water cycle step by step."]


def read_stream(url: str, prompt: str, tokens: int, arrivals: list[float]) -> None:
    """Streams one chat answer, noting when each text chunk arrives."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    arrivals.append(time.monotonic())


def attack(url: str, outcomes: list[dict]) -> list[threading.Thread]:
    """Posts the two oversized requests at once (threads started and returned)."""
    bodies = [("16 MB prompt", "/v1/completions", {"prompt": "word " * 3_200_000, "max_tokens": 4}),
              ("300k messages", "/v1/chat/completions",
               {"messages": [{"role": "user", "content": "hi"}] * 300_000, "max_tokens": 4})]

    def post(name: str, path: str, body: dict) -> None:
        data = json.dumps(body).encode()
        started = time.monotonic()
        try:
            status = httpx.post(f"{url}{path}", content=data, headers={"content-type": "application/json"},
                                timeout=600).status_code
        except httpx.TransportError as error:
            status = f"{type(error).__name__}"
        outcomes.append({"request": name, "bytes": len(data), "status": status,
                         "seconds": round(time.monotonic() - started, 3)})

    threads = [threading.Thread(target=post, args=body) for body in bodies]
    for thread in threads:
        thread.start()
    return threads


def one_round(url: str, tokens: int, hostile: bool) -> dict:
    """Four streams, with or without the attack; their largest gap between text chunks."""
    arrivals: list[list[float]] = [[] for _ in PROMPTS]
    streams = [threading.Thread(target=read_stream, args=(url, p, tokens, a)) for p, a in zip(PROMPTS, arrivals)]
    for thread in streams:
        thread.start()
    while not all(arrivals) and any(t.is_alive() for t in streams):
        time.sleep(0.01)
    outcomes: list[dict] = []
    attackers = attack(url, outcomes) if hostile else []
    for thread in streams + attackers:
        thread.join()
    gaps = [b - a for times in arrivals for a, b in zip(times, times[1:])]
    return {"mode": "attack" if hostile else "control", "largest_gap_s": round(max(gaps), 4),
            "median_gap_s": round(statistics.median(gaps), 4), "chunks": sum(len(a) for a in arrivals),
            "attack": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/serve-hol"))
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose adaspec serves (default: this one)")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--extra", default="--drafter hybrid --budget 8", help="more `adaspec serve` options")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="another run's results folder, added to the table (e.g. the code before the fix)")
    args = parser.parse_args()
    process, url = start_server(args.extra.split(), timeout=600, code=args.code.resolve(), stderr=subprocess.DEVNULL)
    try:
        one_round(url, 8, hostile=False)  # warm-up
        rounds = [one_round(url, args.tokens, hostile) for _ in range(args.rounds) for hostile in (False, True)]
    finally:
        process.terminate()
        process.wait(timeout=120)
    control = max(r["largest_gap_s"] for r in rounds if r["mode"] == "control")
    attacked = max(r["largest_gap_s"] for r in rounds if r["mode"] == "attack")
    figures = {"label": args.label, "options": args.extra, "streams": len(PROMPTS), "tokens": args.tokens,
               "control_largest_gap_s": control, "attack_largest_gap_s": attacked,
               "ratio": round(attacked / control, 2), "within_2x": attacked <= 2 * control, "rounds": rounds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(figures, indent=1) + "\n")
    others = [json.loads((folder / "results.json").read_text()) for folder in args.compare]
    (args.out / "table.md").write_text(table([*others, figures]))
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=1))


def table(runs: list[dict]) -> str:
    """The runs side by side: largest gaps with and without the attack, and what the attack got."""
    lines = ["| code | largest gap, control | largest gap, under attack | ratio | the attack's answers |",
             "|---|---|---|---|---|"]
    for run in runs:
        answers = sorted({f"{o['request']}: {o['status']} in {o['seconds']:.2f} s"
                          for r in run["rounds"] for o in r["attack"]})
        slowest = {}
        for answer in answers:  # the slowest answer per request kind
            name, rest = answer.split(": ", 1)
            seconds = float(rest.rsplit(" in ", 1)[1][:-2])
            if name not in slowest or seconds > slowest[name][0]:
                slowest[name] = (seconds, answer)
        lines.append(f"| {run['label']} | {1000 * run['control_largest_gap_s']:.0f} ms | "
                     f"{1000 * run['attack_largest_gap_s']:.0f} ms | {run['ratio']:.2f}x | "
                     f"{'; '.join(a for _, a in slowest.values())} (slowest) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
