"""A long benchmark can stop and go on: the checkpoint file, interruption, and --resume."""

from __future__ import annotations

import json

import pytest

from adaspec import AdaspecError
from adaspec.bench.checkpoint import Checkpoint, complete_turns
from adaspec.bench.metrics import RunRecord

CONFIG = {"new_tokens": 16, "budget": 8, "dtype": "float32", "device": "cpu", "temperature": 0.0,
          "methods": ["none", "lookup"]}


def record(method: str, prompt: str, seconds: float = 1.0) -> RunRecord:
    return RunRecord(prompt, "math", method, 0, 3, seconds, [1, 2, 3], steps=3)


def test_checkpoint_keeps_whole_turns_and_drops_a_line_cut_off(tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    checkpoint = Checkpoint(path, "m", CONFIG)
    assert checkpoint.start() == []
    for item in (record("none", "a"), record("lookup", "a", 0.5), record("none", "b")):
        checkpoint.append(item)
    with path.open("a") as handle:
        handle.write('{"prompt_id": "b", "categ')  # the write a kill cut short
    again = Checkpoint(path, "m", CONFIG).resume()
    assert [(r.prompt_id, r.method, r.seconds) for r in again] == [("a", "none", 1.0), ("a", "lookup", 0.5)]
    assert len(path.read_text().splitlines()) == 3  # header + the whole turn; appends go on from there


def test_resume_refuses_records_made_under_other_settings(tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    Checkpoint(path, "m", CONFIG).start()
    with pytest.raises(AdaspecError, match="new_tokens 16, not 32"):
        Checkpoint(path, "m", {**CONFIG, "new_tokens": 32}).resume()
    path.write_text("not json\n")
    with pytest.raises(AdaspecError, match="not a benchmark checkpoint"):
        Checkpoint(path, "m", CONFIG).resume()


def test_complete_turns_leaves_out_a_turn_some_methods_missed() -> None:
    records = [record("none", "a"), record("lookup", "a"), record("none", "b")]
    assert complete_turns(records, ["none", "lookup"]) == records[:2]


def test_a_later_record_of_the_same_turn_and_method_replaces_the_earlier() -> None:
    old_none, old_lookup, new_none = record("none", "a", 1.0), record("lookup", "a", 1.0), record("none", "a", 2.0)
    assert complete_turns([old_none, old_lookup, new_none], ["none", "lookup"]) == [new_none, old_lookup]


@pytest.mark.slow
def test_resume_reruns_a_turn_whose_prompt_changed_and_reuses_the_rest() -> None:
    from dataclasses import replace

    from adaspec import load
    from adaspec.bench.prompts import load_prompts
    from adaspec.bench.runner import build_methods, run_benchmark

    model = load()
    methods = build_methods(model, ["lookup"])
    prompts = load_prompts(["math"], 2)
    first = run_benchmark(model, prompts, methods, 8, progress=False)
    assert all(r.prompt_digest == prompts[0].digest(0) for r in first[:2])
    edited = [prompts[0], replace(prompts[1], turns=(prompts[1].turns[0] + " Answer briefly.",))]
    assert edited[1].digest(0) != prompts[1].digest(0)
    made: list[RunRecord] = []
    second = run_benchmark(model, edited, methods, 8, progress=False, on_record=made.append, done=first)
    assert second[:2] == first[:2]  # the unchanged turn is reused as it was
    assert [(r.prompt_id, r.prompt_digest) for r in made] == [(edited[1].id, edited[1].digest(0))] * 2
    assert [m.turns_run for m in methods] == [3, 3]  # 2 turns, then 1 rerun: what @auto calibration covers


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [2, 3], ids=["just-after-the-first-turn-is-filed", "in-the-second-turn"])
def test_an_interrupted_run_returns_whole_turns_only(stop_at: int) -> None:
    """Interrupted at the n-th filed record: the first turn (2 records) is kept whole, nothing of the second.

    At 2 the interrupt lands in the window CI once hit: after the turn's last record reached the
    checkpoint, before the turn returned.
    """
    from adaspec import load
    from adaspec.bench.prompts import load_prompts
    from adaspec.bench.runner import BenchInterrupted, build_methods, run_benchmark

    model = load()
    methods = build_methods(model, ["lookup"])
    filed: list[RunRecord] = []

    def stop_at_the_nth_record(item: RunRecord) -> None:
        filed.append(item)
        if len(filed) == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(BenchInterrupted) as stopped:
        run_benchmark(model, load_prompts(["math"], 2), methods, 8, progress=False, on_record=stop_at_the_nth_record)
    assert [r.method for r in stopped.value.records] == ["none", "lookup"]
    assert len({r.prompt_id for r in stopped.value.records}) == 1
    assert stopped.value.records == sorted(filed[:2], key=lambda r: r.method != "none")


@pytest.mark.slow
def test_resume_runs_only_the_missing_turns_and_gives_the_same_tokens(tmp_path, capsys) -> None:
    from adaspec.cli import main

    out = tmp_path / "report"
    args = ["bench", "--categories", "math,qa", "--limit", "1", "--new-tokens", "12", "--methods", "lookup", "--out", str(out)]
    assert main(args) == 0
    full = json.loads((out / "results.json").read_text())
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 4  # header, then 2 turns x 2 methods
    (out / "records.jsonl").write_text("\n".join(lines[:4]) + "\n")  # the second turn cut short after one method

    assert main([*args, "--resume"]) == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["config"]["generations_reused"] == 1 and resumed["config"]["generations_done"] == 2
    before = {(r["prompt_id"], r["method"]): r for r in full["runs"]}
    after = {(r["prompt_id"], r["method"]): r for r in resumed["runs"]}
    assert before.keys() == after.keys()
    first = full["runs"][0]["prompt_id"]
    for key, run in after.items():
        assert run["token_ids"] == before[key]["token_ids"]
        assert (run["seconds"] == before[key]["seconds"]) == (key[0] == first)  # reused, or run again
    assert "partial" not in (out / "results.md").read_text()


@pytest.mark.slow
def test_sigterm_keeps_a_partial_report_and_exits_130(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "report"
    process = subprocess.Popen(
        [sys.executable, "-m", "adaspec.cli", "bench", "--categories", "math", "--limit", "6", "--new-tokens", "16",
         "--methods", "lookup", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 300  # a bound for a stuck run only: the signal goes as soon as a turn is recorded
    while not records.is_file() or len(records.read_text().splitlines()) < 3:  # the header and one turn's 2 records
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail(f"no turn was recorded before the deadline: {process.communicate()[1][-500:]}")
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "add --resume to go on" in err.splitlines()[-1] and "Traceback" not in err
    data = json.loads((out / "results.json").read_text())
    done = data["config"]["generations_done"]
    assert 1 <= done < 6 and len(data["runs"]) == 2 * done
    assert f"partial run: {done} of 6 turns" in (out / "results.md").read_text()
