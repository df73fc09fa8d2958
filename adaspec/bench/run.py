"""One benchmark run from start to report: check the settings, load the model, run every method
on every turn (resumable), and write the report; what ``adaspec bench`` does."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from adaspec.bench.checkpoint import Checkpoint
from adaspec.bench.metrics import summarise
from adaspec.bench.prompts import load_prompts
from adaspec.bench.report import write_report
from adaspec.bench.runner import (AdaspecMethod, BenchInterrupted, build_methods, check_method_names,
                                  default_method_names, run_benchmark)
from adaspec.bench.system import report_meta
from adaspec.errors import AdaspecError
from adaspec.models.loaded import LoadedModel
from adaspec.sampling import SamplingParams

EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run compares, on what, and where its report goes.

    Attributes:
        categories: prompt categories (None: all).
        methods: method names (None: every drafter and the runtime's peers).
        limit: the most prompts per category (None: all).
        new_tokens: the most tokens per generation.
        budget: the tree budget of drafters named without ``@BUDGET`` (None: the runtime's default).
        temperature: 0 for greedy, else every method samples with one seed per turn.
        out: the report folder.
        resume: go on from the records an interrupted run with the same settings left in ``out``.
        backend: the runtime's name (picks the default peers).
        dtype: the model's dtype, for the report.
        device: the model's device, for the report.
        command: the command line, for the report.
    """

    categories: Sequence[str] | None
    methods: Sequence[str] | None
    limit: int | None
    new_tokens: int
    budget: int | str | None
    temperature: float
    out: Path
    resume: bool
    backend: str
    dtype: str
    device: str
    command: str


def run_bench(settings: BenchSettings, load_model: Callable[[], LoadedModel]) -> int:
    """Runs a benchmark and writes its report (``results.md``, records, plots) to ``settings.out``.

    Settings are checked before the model loads. Ctrl-C or SIGTERM ends the run after the turn
    in progress and still writes a report of the turns finished.

    Args:
        settings: what to run.
        load_model: loads the model (called once the settings are checked).

    Returns:
        0, or 130 when interrupted (after writing a partial report).

    Raises:
        AdaspecError: for a bad setting, model or checkpoint.
        KeyboardInterrupt: when interrupted before any turn finished.
    """
    if settings.new_tokens < 1:
        raise AdaspecError(f"--new-tokens must be at least 1, got {settings.new_tokens}")
    SamplingParams(settings.temperature)  # validates the temperature
    prompts = load_prompts(settings.categories, settings.limit)  # validates categories and limit
    names = list(settings.methods or default_method_names(settings.backend))
    check_method_names(names)
    model = load_model()
    methods = build_methods(model, names, settings.budget, settings.temperature)
    budget = settings.budget if settings.budget is not None else model.runtime.default_budget
    meta = report_meta(settings.command, model.name, prompts, [m.name for m in methods], settings.new_tokens, budget,
                       settings.dtype, settings.device, settings.temperature, model.runtime.label())
    checkpoint = Checkpoint(settings.out / "records.jsonl", model.name, meta["config"])
    done = checkpoint.resume() if settings.resume else checkpoint.start()
    interrupted = False
    with sigterm_as_interrupt():
        try:
            records = run_benchmark(model, prompts, methods, settings.new_tokens, on_record=checkpoint.append,
                                    done=done)
        except BenchInterrupted as stop:
            records, interrupted = stop.records, True
    if not records:
        raise KeyboardInterrupt
    meta["config"] |= {"generations_done": len(records) // len(methods), "generations_reused": len(done) // len(methods)}
    figures = summarise(records, baseline=methods[0].name)
    auto = [m for m in methods if isinstance(m, AdaspecMethod) and m.generator.sizer is not None]
    calibration = {m.name: m.calibration() for m in auto}
    profile = auto[0].generator.sizer.profile if auto else None
    written = write_report(settings.out, records, figures, meta, calibration, profile)
    print((settings.out / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if interrupted:
        print(f"adaspec: interrupted; the report covers the {meta['config']['generations_done']} of "
              f"{meta['config']['generations']} turns finished; add --resume to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM (a session or job ending) interrupts like Ctrl-C, so work done is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
