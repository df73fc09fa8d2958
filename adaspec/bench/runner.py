"""Running methods over prompts: every method on every turn, interleaved, in one process.

Methods run prompt turn by prompt turn, their order rotating each time, so machine noise
hits all alike; one warm-up generation per method is excluded. A later chat turn is asked
after the baseline's own answer to the earlier one (greedy lossless methods give the same
answer, so every method sees the same conversation).
"""

from __future__ import annotations

import re
import resource
import zlib
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from adaspec.bench.checkpoint import turn_key
from adaspec.bench.metrics import RunRecord
from adaspec.bench.peers import PEERS, Peer
from adaspec.bench.prompts import BenchPrompt
from adaspec.drafters import drafter_names, parse_drafter_spec
from adaspec.engine import Generator
from adaspec.errors import AdaspecError
from adaspec.models.loaded import LoadedModel

BASELINE = "none"
WARM_UP = ("warm-up", "warm-up", 0)  # the label of the untimed generation each method makes first


class BenchInterrupted(Exception):
    """The run was interrupted (Ctrl-C or SIGTERM); ``records`` holds the turns it finished."""

    def __init__(self, records: list[RunRecord]) -> None:
        super().__init__(f"interrupted after {len(records)} generations")
        self.records = records


class Method(Protocol):
    """Something that generates greedily from prompt ids and reports what it cost."""

    name: str

    def run(self, prompt_ids: np.ndarray, new_tokens: int, label: tuple[str, str, int],
            prediction: str | None = None) -> RunRecord:
        """Generates up to ``new_tokens`` after ``prompt_ids``.

        Args:
            prompt_ids: ``[p]`` int64 prompt token ids.
            new_tokens: the most tokens to generate.
            label: (prompt id, category, turn), also the source of the turn's sampling seed.
            prediction: the output the client expects (only methods that can draft from it use it).

        Returns:
            The generation's record.
        """
        ...


def turn_seed(label: tuple[str, str, int]) -> int:
    """The sampling seed of one benchmark turn: the same for every method, stable across runs.

    Args:
        label: (prompt id, category, turn).

    Returns:
        A 32-bit seed.
    """
    return zlib.crc32(f"{label[1]}/{label[0]}#{label[2]}".encode())


class AdaspecMethod:
    """An adaspec drafter at a budget; its learned state persists across prompts, as in a session."""

    def __init__(self, model: LoadedModel, name: str, drafter: str, budget: int | str | None,
                 temperature: float = 0.0) -> None:
        self.name = name
        self.generator = Generator(model, drafter=drafter, budget=budget)
        self.temperature = temperature
        self.turns_run = 0  # benchmark turns this object generated (warm-up excluded)

    def calibration(self) -> dict | None:
        """With ``@auto``: predicted against observed acceptance so far (see ``budget.Reliability``).

        Returns:
            The reliability table, the sizer's exploration count and ``turns``, the number of turns
            it covers (on ``--resume``, only those this process ran); None without ``@auto``.
        """
        sizer = self.generator.sizer
        if sizer is None:
            return None
        return {**sizer.reliability.to_dict(), "explorations": sizer.explorations, "turns": self.turns_run}

    def run(self, prompt_ids: np.ndarray, new_tokens: int, label: tuple[str, str, int],
            prediction: str | None = None) -> RunRecord:
        """Generates with the drafter (see ``Method.run``)."""
        out = self.generator.generate(prompt_ids, max_new_tokens=new_tokens, temperature=self.temperature,
                                      seed=turn_seed(label), prediction=prediction)
        self.turns_run += label != WARM_UP
        return RunRecord.from_stats(label[0], label[1], self.name, label[2], out.token_ids, out.stats)


def method_names() -> list[str]:
    """Every method ``build_methods`` knows: adaspec's drafter specs (``NAME[:key=value,...][@BUDGET]``),
    transformers' peers (hf backend) and llama-cpp-python's (llama.cpp backend)."""
    return drafter_names() + list(PEERS)


def default_method_names(runtime: str) -> list[str]:
    """What ``adaspec bench`` runs when no method is named: every drafter and the runtime's own peers.

    Args:
        runtime: ``hf`` or ``llama.cpp``.

    Returns:
        The method names.
    """
    return drafter_names() + [peer for peer, peer_runtime in PEERS.items() if peer_runtime == runtime]


def check_method_names(names: Sequence[str]) -> None:
    """Checks method names before any model loads.

    Args:
        names: method names, each a drafter spec (``NAME[:key=value,...][@BUDGET]``) or a
            transformers peer.

    Raises:
        AdaspecError: for an unknown method, a bad drafter option or a malformed ``@BUDGET``.
    """
    for name in names:
        drafter, at, size = name.rpartition("@") if "@" in name else (name, "", "")
        if drafter in PEERS and not at:
            continue
        if drafter.partition(":")[0] not in drafter_names():
            raise AdaspecError(f"unknown method {name!r}; choose from: {', '.join(method_names())}")
        parse_drafter_spec(drafter)
        if at and not (size == "auto" or (size.isdigit() and int(size) >= 1)):
            raise AdaspecError(f"method {name!r}: the budget after '@' must be a positive integer or 'auto'")


def build_methods(model: LoadedModel, names: Sequence[str], budget: int | str | None = None,
                  temperature: float = 0.0) -> list[Method]:
    """Methods by name; ``recycling@16`` runs a drafter at budget 16. The baseline always comes first.

    At a temperature > 0 every method samples, each turn with its own seed shared by all
    methods (adaspec's drafters then give the baseline's exact text; transformers' peers
    draw differently).

    Args:
        model: the model every method runs on.
        names: method names (see ``check_method_names``); the baseline is added if absent.
        budget: the tree budget of drafters named without ``@BUDGET`` (None: the runtime's default).
        temperature: 0 for greedy decoding, else the sampling temperature.

    Returns:
        The methods, baseline first.

    Raises:
        AdaspecError: for an unknown method, a malformed budget, or a peer of another runtime.
    """
    check_method_names(names)
    if temperature > 0 and any(PEERS.get(name) == "llama.cpp" for name in names):
        raise AdaspecError("llama-cpp-python's peers are benchmarked greedy only (--temperature 0)")
    methods: list[Method] = []
    for name in dict.fromkeys([BASELINE, *names]):
        drafter, _, size = name.rpartition("@") if "@" in name else (name, "", "")
        if name in PEERS:
            methods.append(Peer(model, name, temperature))
        else:
            chosen = 1 if drafter == BASELINE else (size if size == "auto" else int(size)) if size else budget
            methods.append(AdaspecMethod(model, name, drafter, chosen, temperature))
    return methods


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Per-generation peak resident memory, from Linux's resettable high-water mark (VmHWM).

    ``reset`` before a generation, ``read`` after it; both do nothing (``read`` gives None)
    where /proc does not offer it.
    """

    def __init__(self) -> None:
        self.status = Path("/proc/self/status")
        self.clear = Path("/proc/self/clear_refs")
        self.available = self.status.exists() and self.clear.exists()

    def reset(self) -> None:
        """Starts a new measurement: the high-water mark drops to the current resident size."""
        if self.available:
            try:
                self.clear.write_text("5")
            except OSError:
                self.available = False

    def read(self) -> float | None:
        """The peak resident MiB since ``reset``, or None."""
        if not self.available:
            return None
        found = re.search(r"VmHWM:\s+(\d+) kB", self.status.read_text())
        return int(found.group(1)) / 1024 if found else None


def run_benchmark(
    model: LoadedModel,
    prompts: Sequence[BenchPrompt],
    methods: Sequence[Method],
    new_tokens: int,
    progress: bool = True,
    on_record: Callable[[RunRecord], None] | None = None,
    done: Sequence[RunRecord] = (),
) -> list[RunRecord]:
    """Runs every method on every turn of every prompt.

    Args:
        model: the loaded model (shared by all methods).
        prompts: what to run.
        methods: what to compare; the first is the baseline whose answers continue chats.
        new_tokens: the most tokens per generation.
        progress: show a progress bar.
        on_record: called with each record as it is made.
        done: records of an earlier run with the same settings (``--resume``); the turns
            they hold for every method, made on the same prompt, are taken from them, not
            run again.

    Returns:
        One record per method, prompt and turn: turn by turn, methods in the given order.

    Raises:
        BenchInterrupted: on KeyboardInterrupt, with the records of the turns finished.
    """
    earlier: dict[tuple[str, str, int], dict[str, RunRecord]] = {}
    for record in done:
        earlier.setdefault(turn_key(record), {})[record.method] = record
    encoder = Generator(model, drafter=BASELINE)
    warm_ids = encoder.encode("Say hello.", chat=None)
    for method in methods:  # warm-up, excluded
        method.run(warm_ids, 8, WARM_UP)
    memory = PeakMemory()
    total = len(methods) * sum(len(p.turns) for p in prompts)
    bar = tqdm(total=total, desc="bench", unit="run", disable=not progress)
    records: list[RunRecord] = []
    current: dict[str, RunRecord] = {}  # the turn being run, by method; kept if the signal comes once it is complete
    rotation = 0
    try:
        for prompt in prompts:
            history: list[dict[str, str]] = []
            for turn, text in enumerate(prompt.turns):
                if prompt.chat:
                    history.append({"role": "user", "content": text})
                    ids = encoder.encode(history)
                else:
                    ids = encoder.encode(text, chat=False)
                kept = earlier.get((prompt.category, prompt.id, turn), {})
                current = {}
                if all(method.name in kept and kept[method.name].prompt_digest == prompt.digest(turn) for method in methods):
                    current.update((method.name, kept[method.name]) for method in methods)
                    bar.update(len(methods))
                else:  # not run yet, or run on a prompt that has changed since
                    run_turn(methods, rotation, ids, new_tokens, prompt, turn, memory, bar, on_record, current)
                rotation += 1
                made = [current[method.name] for method in methods]
                records.extend(made)  # whole turns only, so an interrupted run stays comparable
                history.append({"role": "assistant", "content": model.tokenizer.decode(made[0].token_ids, skip_special_tokens=True)})
    except KeyboardInterrupt:
        if len(current) == len(methods):  # the signal came after the turn's last record was filed
            finished = [current[method.name] for method in methods]
            if not records or records[-1] is not finished[-1]:
                records.extend(finished)
        raise BenchInterrupted(records) from None
    finally:
        bar.close()
    return records


def run_turn(methods: Sequence[Method], rotation: int, ids: np.ndarray, new_tokens: int, prompt: BenchPrompt, turn: int,
             memory: PeakMemory, bar: tqdm, on_record: Callable[[RunRecord], None] | None,
             made: dict[str, RunRecord]) -> None:
    """Runs every method on one turn, starting at ``methods[rotation % len(methods)]``.

    Args:
        methods: the methods, baseline first.
        rotation: which method goes first this turn, so that no method always runs first.
        ids: ``[p]`` int64 prompt token ids.
        new_tokens: the most tokens each method generates.
        prompt: the prompt the turn belongs to.
        turn: the turn's index in ``prompt.turns``.
        memory: tracks the process's peak resident memory per generation.
        bar: the progress bar, advanced once per generation.
        on_record: called with each record as soon as it is made (for checkpoints).
        made: filled with each method's record as soon as it is made, by method name; the caller owns it,
            so that a turn whose records were all filed survives an interrupt that comes before this returns.
    """
    start = rotation % len(methods)
    label = (prompt.id, prompt.category, turn)
    for method in list(methods[start:]) + list(methods[:start]):
        memory.reset()
        record = method.run(ids, new_tokens, label, prompt.prediction if turn == 0 else None)
        record.peak_rss_mb = memory.read()
        record.prompt_digest = prompt.digest(turn)
        made[method.name] = record
        if on_record:
            on_record(record)
        bar.set_postfix_str(f"{prompt.category} {method.name} {record.new_tokens / max(record.seconds, 1e-9):.1f} tok/s")
        bar.update()
