"""Benchmark harness pieces: prompt loaders and the metric arithmetic on hand-made records."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from adaspec import AdaspecError
from adaspec.bench.metrics import RunRecord, acceptance_by_depth, first_difference, mean_accepted_tokens, summarise
from adaspec.bench.prompts import CATEGORIES, load_prompts


def record(method, prompt="p1", category="math", tokens=10, seconds=1.0, steps=None, per_pos=(), ids=None, turn=0):
    return RunRecord(prompt, category, method, turn, tokens, seconds, list(ids if ids is not None else range(tokens)),
                     steps, list(per_pos))


def test_every_category_loads_offline_with_unique_ids() -> None:
    for category in CATEGORIES:
        prompts = load_prompts([category])
        assert prompts, category
        assert len({p.id for p in prompts}) == len(prompts)
        assert all(p.category == category and p.turns and all(t.strip() for t in p.turns) for p in prompts)
    assert len(load_prompts(["mt-bench"])) == 80 and all(len(p.turns) == 2 for p in load_prompts(["mt-bench"]))
    assert len(load_prompts(["humaneval"])) == 164 and not load_prompts(["humaneval"])[0].chat


def test_own_text_prompts_come_from_the_shipped_snapshot_which_can_be_remade(tmp_path) -> None:
    from adaspec.bench.own_texts import PACKAGE_DIR, load_own_texts, snapshot_own_texts, write_snapshot
    from adaspec.bench.prompts import README_QUESTIONS

    shipped = load_own_texts()
    assert len(load_prompts(["summarise"])) == len(shipped["modules"])
    assert len(load_prompts(["code-edit"])) == len(shipped["functions"])
    headings = [heading for _, heading in README_QUESTIONS]
    # the snapshot froze sections of the README of its day (the README has moved on since): a README
    # holding those sections gives them back
    readme = tmp_path / "README.md"
    readme.write_text("\n\n".join(shipped["readme_sections"][h] for h in headings))
    remade = snapshot_own_texts(PACKAGE_DIR, readme, headings)
    assert all(remade["readme_sections"][h].startswith(h) for h in headings)
    assert all(shipped["readme_sections"][h].startswith(remade["readme_sections"][h][:200]) for h in headings)
    write_snapshot(remade, tmp_path / "texts.json")
    assert load_own_texts(tmp_path / "texts.json") == remade
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(AdaspecError, match="not a prompt snapshot"):
        load_own_texts(tmp_path / "bad.json")


def test_a_prompt_digest_names_what_was_asked_up_to_a_turn() -> None:
    chat = load_prompts(["mt-bench"], 1)[0]
    assert chat.digest(0) == chat.digest(0) and chat.digest(0) != chat.digest(1)
    assert replace(chat, chat=False).digest(0) != chat.digest(0)
    assert replace(chat, turns=(chat.turns[0], "Something else?")).digest(0) == chat.digest(0)


def test_limit_and_bad_options() -> None:
    assert len(load_prompts(["math", "humaneval"], limit=2)) == 4
    with pytest.raises(AdaspecError, match="unknown category 'poetry'"):
        load_prompts(["poetry"])
    with pytest.raises(AdaspecError, match="limit"):
        load_prompts(["math"], limit=0)


def test_mat_and_acceptance_are_token_weighted() -> None:
    runs = [record("x", steps=4, per_pos=[3, 1]), record("x", prompt="p2", steps=6, per_pos=[2, 2, 1])]
    assert mean_accepted_tokens(runs) == pytest.approx(1 + 9 / 10)
    assert acceptance_by_depth(runs) == pytest.approx([0.5, 0.3, 0.1])
    assert mean_accepted_tokens([record("hf")]) is None


def test_the_same_prompt_id_in_two_categories_pairs_with_its_own_baseline() -> None:
    runs = [
        record("none", "HumanEval/0", "humaneval", tokens=10, seconds=1.0, steps=10, ids=[1] * 10),
        record("none", "HumanEval/0", "humaneval-chat", tokens=10, seconds=2.0, steps=10, ids=[2] * 10),
        record("fast", "HumanEval/0", "humaneval", tokens=10, seconds=0.5, steps=5, ids=[1] * 10),
        record("fast", "HumanEval/0", "humaneval-chat", tokens=10, seconds=1.0, steps=5, ids=[2] * 10),
    ]
    summary = summarise(runs)
    for category in ("humaneval", "humaneval-chat", "overall"):
        assert summary["none"][category]["speedup"] == pytest.approx(1.0)
        assert summary["fast"][category]["speedup"] == pytest.approx(2.0)
        assert summary["fast"][category]["differing_from_baseline"] == {}


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2]) == 2


def test_summary_speedup_per_category_and_overall() -> None:
    runs = [
        record("none", "p1", "math", tokens=10, seconds=1.0, steps=10),
        record("none", "p2", "qa", tokens=20, seconds=2.0, steps=20),
        record("fast", "p1", "math", tokens=10, seconds=0.5, steps=4, per_pos=[4, 2]),
        record("fast", "p2", "qa", tokens=20, seconds=1.0, steps=10, per_pos=[8, 2], ids=[0] * 20),
    ]
    summary = summarise(runs)
    assert summary["fast"]["math"]["speedup"] == pytest.approx(2.0)
    assert summary["fast"]["overall"]["speedup"] == pytest.approx((30 / 1.5) / (30 / 3.0))
    assert summary["fast"]["overall"]["mat"] == pytest.approx(1 + 16 / 14)
    assert summary["fast"]["qa"]["differing_from_baseline"] == {"qa/p2#0": 1}
    assert summary["fast"]["math"]["differing_from_baseline"] == {}
    assert summary["none"]["overall"]["speedup"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="baseline"):
        summarise(runs + [record("fast", "p3")])


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_a_report_that_holds_what_it_claims(tmp_path, capsys) -> None:
    import json

    from adaspec.cli import main

    out = tmp_path / "report"
    code = main(["bench", "--categories", "math", "--limit", "2", "--new-tokens", "16",
                 "--methods", "recycling@2,recycling@8,hf-generate", "--out", str(out)])
    assert code == 0
    names = {"results.json", "results.md", "speedup_by_category.png", "acceptance_and_step_time.png", "budget_sweep.png"}
    assert names <= {p.name for p in out.iterdir()}
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["methods"] == ["none", "recycling@2", "recycling@8", "hf-generate"]
    assert len(data["runs"]) == 2 * 4
    for method, figures in data["summary"].items():
        assert figures["overall"]["differing_from_baseline"] == {}  # every greedy method is lossless
        assert figures["overall"]["runs"] == 2
        mine = [r for r in data["runs"] if r["method"] == method]
        assert figures["overall"]["tokens_per_s"] == pytest.approx(
            sum(r["new_tokens"] for r in mine) / sum(r["seconds"] for r in mine))
    table = (out / "results.md").read_text()
    assert all(f"| {m} |" in table for m in data["config"]["methods"])
    none = data["summary"]["none"]["overall"]
    assert none["plain_step_share"] == 1.0 and data["summary"]["recycling@8"]["overall"]["plain_step_share"] < 1.0
    assert all(r["peak_rss_mb"] is None or r["peak_rss_mb"] > 50 for r in data["runs"])


def test_auto_methods_add_calibration_and_the_cost_profile_to_the_report(tmp_path) -> None:
    from adaspec.bench.metrics import RunRecord, summarise
    from adaspec.bench.report import write_report
    from adaspec.budget import LatencyProfile, Reliability

    runs = [RunRecord("p", "math", method, 0, 10, 1.0, [1, 2, 3], steps=5, accepted_per_pos=accepted,
                      draft_s=0.01, verify_s=0.5, prefill_s=0.1, plain_steps=plain)
            for method, accepted, plain in (("none", [], 5), ("lookup@auto", [3], 2))]
    reliability = Reliability()
    reliability.add(np.array([0.15, 0.15, 0.85]), np.array([0.0, 1.0, 1.0]))
    profile = LatencyProfile((1, 2, 8), (50.0, 70.0, 90.0), key="test-profile")
    meta = {"model": "m", "config": {"new_tokens": 10, "dtype": "float32", "prompts": 1, "generations": 1},
            "machine": {"cpu_threads": 2}}
    written = write_report(tmp_path, runs, summarise(runs, baseline="none"), meta,
                           {"lookup@auto": reliability.to_dict() | {"turns": 3}}, profile)
    assert {"calibration.png", "profile.png"} <= {p.name for p in written}
    table = (tmp_path / "results.md").read_text()
    assert "| lookup@auto | 0.283 |" in table  # (|0.15 + 0.15 - 1| + |0.85 - 1|) / 3 nodes
    assert "0.15 → 0.50, 2" in table and "| ms | 50.0 | 70.0 | 90.0 |" in table
    assert "Calibration of `@auto` (over the 3 turns this process ran;" in table
    assert "| none | 10.0 | 1.00x | 1.00 | 100% |" in table and "| 40% |" in table
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["profile"]["key"] == "test-profile" and data["calibration"]["lookup@auto"]["nodes"][1] == 2


@pytest.mark.parametrize("args, message", [
    (["--categories", "poetry"], "unknown category"),
    (["--methods", "oracle"], "unknown method"),
    (["--methods", "recycling@x"], "positive integer"),
    (["--limit", "0"], "limit"),
    (["--new-tokens", "0"], "new-tokens"),
    (["--model", "/no/model.gguf", "--limit", "1"], "model not found"),
])
def test_bad_bench_options_are_one_line_errors(capsys, args, message) -> None:
    from adaspec.cli import main

    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
