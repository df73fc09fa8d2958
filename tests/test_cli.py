"""The command line: JSON output, comparison, and one-line errors with a non-zero exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adaspec.cli import main


def test_generate_json_with_compare(capsys) -> None:
    code = main(["generate", "List three fruits.", "--max-new-tokens", "12", "--compare", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("text", "new_tokens", "tokens_per_s", "mat", "acceptance_rate_per_pos",
                "baseline_tokens_per_s", "speedup", "identical"):
        assert key in out
    assert out["identical"] is True
    assert out["new_tokens"] == len(out["token_ids"]) <= 12
    assert out["text"] and out["tokens_per_s"] > 0 and out["baseline_tokens_per_s"] > 0 and out["mat"] >= 1


@pytest.mark.slow
def test_sampled_generation_with_a_seed_equals_plain_sampling(capsys) -> None:
    args = ["generate", "Name two rivers.", "--max-new-tokens", "16", "--temperature", "0.8", "--top-p", "0.95",
            "--seed", "11", "--compare", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["identical"] is True  # speculative sampling reproduces plain sampling with the same seed
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["text"] == first["text"]


@pytest.mark.slow
def test_profile_prints_the_cost_curve_and_auto_budget_generates(capsys, tmp_path) -> None:
    assert main(["profile", "--plot", str(tmp_path / "profile.png")]) == 0
    out = capsys.readouterr().out
    assert "| nodes | 1 | 2 |" in out and "| ms |" in out
    assert (tmp_path / "profile.png").stat().st_size > 1000
    assert main(["generate", "Count to five.", "--budget", "auto", "--max-new-tokens", "16", "--compare", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"] is True


@pytest.mark.slow
def test_generate_streams_text_then_one_stats_line(capsys) -> None:
    assert main(["generate", "Say hello.", "--max-new-tokens", "8", "--drafter", "lookup"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("[lookup]") and "tokens/s" in lines[-1] and "MAT" in lines[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", ""], "prompt is empty"),
        (["generate", "hi", "--max-new-tokens", "0"], "max-new-tokens"),
        (["generate", "hi", "--drafter", "oracle"], "unknown drafter"),
        (["generate", "hi", "--drafter", "aded:color=red"], "expected key=value"),
        (["generate", "hi", "--model", "/no/such/model.gguf"], "model not found"),
        (["generate", "hi", "--dtype", "float16"], "float16 is not supported on cpu"),
        (["generate", "hi", "--dtype", "float8"], "invalid choice: 'float8'"),
        (["generate", "hi", "--device", "toaster"], "unknown device"),
        (["generate", "hi", "--budget", "0"], "budget"),
        (["generate", "hi", "--budget", "big"], "budget"),
        (["generate", "hi", "--temperature", "-1"], "temperature"),
        (["generate", "hi", "--temperature", "0.7", "--top-p", "0"], "top_p"),
        (["bench", "--temperature", "-0.5"], "temperature"),
        (["generate"], "required"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, args, message) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("adaspec: error:") and message in err


def test_prompt_longer_than_the_context_is_refused(capsys) -> None:
    assert main(["generate", "word " * 9000, "--no-chat"]) == 2
    assert "no room is left" in capsys.readouterr().err


def test_error_from_a_real_process_has_no_traceback(tmp_path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model at all")
    proc = subprocess.run(
        [sys.executable, "-m", "adaspec.cli", "generate", "hi", "--model", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"adaspec: error: {bad} is not a GGUF file (it does not start with the GGUF magic bytes)"]


@pytest.mark.slow
def test_generate_keeps_the_drafters_state_between_runs_unless_told_not_to(capsys, tmp_path) -> None:
    args = ["generate", "Write a Python function that adds two numbers.", "--max-new-tokens", "24", "--drafter", "aded",
            "--json", "--state-dir", str(tmp_path)]
    assert main([*args, "--no-state"]) == 0
    assert not any(tmp_path.rglob("*.npz"))  # --no-state keeps nothing
    assert main(args) == 0
    saved = list(tmp_path.rglob("aded.npz"))
    assert len(saved) == 1 and saved[0].stat().st_size > 100
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 0  # warm: starts from what the first run learned, same text
    second = json.loads(capsys.readouterr().out)
    assert second["text"] == first["text"] and second["mat"] > first["mat"]
