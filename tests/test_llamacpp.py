"""The llama.cpp backend on the real embedded GGUF: tokenizer, exact chains, trees, lossless output.

Needs llama-cpp-python (``make llamacpp``; CI installs it). Without it every test here is skipped
with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import adaspec
from adaspec.backends.base import Pick
from adaspec.budget import LatencyProfile
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree
from test_equivalence import CASES, GREEDY_CASES

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llamacpp)")
from adaspec.backends.llamacpp_build import build_is_batch_invariant  # noqa: E402

needs_exact_build = pytest.mark.skipif(not build_is_batch_invariant(),
                                       reason="this llama.cpp build uses llamafile (not batch-invariant); make llamacpp builds one without")
NEW_TOKENS = 32
GREEDY = SamplingParams()


@pytest.fixture(scope="module")
def gguf() -> adaspec.LoadedModel:
    return adaspec.load(backend="llama.cpp")  # exact when the build allows it


@pytest.fixture(scope="module")
def gguf_trees() -> adaspec.LoadedModel:
    return adaspec.load(backend="llama.cpp", exact=False)


@pytest.fixture(scope="module")
def references(gguf) -> dict[str, tuple[np.ndarray, list[int]]]:
    plain = adaspec.Generator(gguf, drafter="none")
    table = {}
    for case_id, prompt, chat in GREEDY_CASES:
        ids = plain.encode(prompt, chat)
        table[case_id] = (ids, plain.generate(ids, max_new_tokens=NEW_TOKENS).token_ids)
    return table


def test_the_gguf_tokenizer_read_by_transformers_agrees_with_llama_cpp(gguf) -> None:
    texts = [prompt if isinstance(prompt, str) else prompt[0]["content"] for _, prompt, _ in CASES]
    texts += ["  leading spaces, tabs\tand\nnew lines", "émigré naïve café 東京 🙂", "x = [i**2 for i in range(10)]"]
    chat = gguf.tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], add_generation_prompt=True, tokenize=False)
    texts.append(chat)  # special tokens such as <|im_start|> are parsed as such by both
    for text in texts:
        assert gguf.tokenizer(text, add_special_tokens=False).input_ids == gguf.runtime.tokenize(text), text[:40]


@needs_exact_build
def test_a_chain_gives_bit_identical_outputs_to_one_token_at_a_time(gguf) -> None:
    """Batch invariance: every node of one chain forward equals plain decoding's step, bit for bit."""
    prompt = adaspec.Generator(gguf, drafter="none").encode("The quick brown fox jumps over the lazy dog because")
    chain = np.array([int(prompt[-1]), 578, 314, 2364, 1012, 253, 30, 1012, 16, 314, 578, 9])  # [12]
    pick = Pick(GREEDY, None, feedback_width=16)
    backend = gguf.new_backend()
    backend.prefill(prompt[:-1], pick)
    together = backend.verify(DraftTree(chain, np.arange(-1, chain.size - 1)), pick)
    backend.commit(np.arange(chain.size))
    assert backend.cache_len == prompt.size - 1 + chain.size
    backend.prefill(prompt[:-1], pick)
    for i, token in enumerate(chain):
        alone = backend.verify(DraftTree.root_only(int(token)), pick)
        backend.commit(np.array([0]))
        assert np.array_equal(alone.topk_ids[0], together.topk_ids[i]), i
        assert np.array_equal(alone.topk_probs[0], together.topk_probs[i]), i  # exact, not close


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory) -> adaspec.LoadedModel:
    """The embedded model requantised to Q4_K_M by llama.cpp's own quantiser (about 1 s).

    K-quant matrices (Q4_K, Q6_K...) have a tiled kernel in ggml that takes over from 8 rows
    up; the embedded Q4_1 file never reaches it, Qwen2.5-Coder's Q4_K_M file does.
    """
    from adaspec.models.sources import embedded_model_path

    target = tmp_path_factory.mktemp("kquant") / "smollm2-q4_k_m.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    assert llama_cpp.llama_model_quantize(str(embedded_model_path()).encode(), str(target).encode(), params) == 0
    return adaspec.load(target, backend="llama.cpp")


@needs_exact_build
def test_a_chain_is_bit_identical_on_k_quants_too(kquant_gguf) -> None:
    """A 12-node chain (past the 8 rows where ggml's tiled K-quant kernel would take over)."""
    plain = adaspec.Generator(kquant_gguf, drafter="none")
    prompt = plain.encode("Write a Python function that returns the n-th Fibonacci number.")
    chain = np.array([int(prompt[-1])] + plain.generate(prompt, max_new_tokens=11).token_ids)  # [12]
    pick = Pick(GREEDY, None, feedback_width=16)
    backend = kquant_gguf.new_backend()
    backend.prefill(prompt[:-1], pick)
    together = backend.verify(DraftTree(chain, np.arange(-1, chain.size - 1)), pick)
    backend.prefill(prompt[:-1], pick)
    for i, token in enumerate(chain):
        alone = backend.verify(DraftTree.root_only(int(token)), pick)
        backend.commit(np.array([0]))
        assert np.array_equal(alone.topk_probs[0], together.topk_probs[i]), i


@needs_exact_build
def test_greedy_output_on_k_quants_equals_plain_decoding(kquant_gguf) -> None:
    plain = adaspec.Generator(kquant_gguf, drafter="none")
    spec = adaspec.Generator(kquant_gguf, drafter="hybrid", budget=16)
    accepted = 0
    for case_id, prompt, chat in CASES[::3]:  # 7 of the 21 prompts
        ids = plain.encode(prompt, chat)
        out = spec.generate(ids, max_new_tokens=NEW_TOKENS)
        accepted += out.stats.num_accepted_tokens
        assert out.token_ids == plain.generate(ids, max_new_tokens=NEW_TOKENS).token_ids, case_id
    assert accepted > 0


def test_exact_configuration_sends_chains_and_refuses_trees(gguf) -> None:
    backend = gguf.new_backend()
    assert backend.chain_only == gguf.runtime.exact
    if backend.chain_only:
        backend.prefill(np.array([1, 2, 3]), Pick(GREEDY, None, 0))
        with pytest.raises(adaspec.AdaspecError, match="chains only"):
            backend.verify(DraftTree(np.array([5, 6, 7]), np.array([-1, 0, 0])), Pick(GREEDY, None, 0))


def test_a_tree_in_one_decode_matches_each_path_and_folds_back_into_sequence_0(gguf_trees) -> None:
    """Trees: one sequence per leaf; each node sees its ancestors only; the accepted branch becomes sequence 0."""
    prompt = adaspec.Generator(gguf_trees, drafter="none").encode("List the planets of the solar system.")
    #        0
    #     1     2
    #   3   6    5
    #   4
    #   7
    tree = DraftTree(np.array([int(prompt[-1]), 314, 2364, 1012, 253, 30, 1012, 16]), np.array([-1, 0, 0, 1, 3, 2, 1, 4]))
    pick = Pick(GREEDY, None, feedback_width=8)
    backend = gguf_trees.new_backend()
    backend.prefill(prompt[:-1], pick)
    outputs = backend.verify(tree, pick)
    accepted = tree.path_to(5)  # [0, 2, 5]: a branch that is not the first, cells 0, 2 and 5 of the tree
    backend.commit(accepted)
    after = backend.verify(DraftTree.root_only(11), pick)  # decoding goes on from the folded cache
    backend.release()
    for node in range(tree.size):
        path = tree.path_to(node)
        chain = DraftTree(tree.tokens[path], np.arange(-1, path.size - 1))
        backend.prefill(prompt[:-1], pick)
        alone = backend.verify(chain, pick)
        assert alone.topk_ids[-1, 0] == outputs.topk_ids[node, 0], node  # same top token
        assert np.allclose(alone.topk_probs[-1], outputs.topk_probs[node], atol=2e-3), node  # summation order only
        backend.release()
    backend.prefill(np.concatenate([prompt[:-1], tree.tokens[accepted]]), pick)
    continued = backend.verify(DraftTree.root_only(11), pick)
    assert continued.topk_ids[0, 0] == after.topk_ids[0, 0]
    assert np.allclose(continued.topk_probs[0], after.topk_probs[0], atol=2e-3)


@needs_exact_build
@pytest.mark.parametrize("drafter", ["lookup", "recycling", "aded", "hybrid", "hybrid@auto", "suffix", "hybrid:copy=suffix@auto"])
def test_greedy_output_equals_the_backends_plain_decoding(gguf, references, drafter) -> None:
    """Exact configuration: token for token, on the 13 greedy equivalence prompts, no tolerance."""
    name, _, budget = drafter.partition("@")
    # @auto with a fixed cost curve on which trees pay, so drafts are verified (the test cannot pass
    # on plain steps alone); nothing is measured under test load or written to the user's cache
    profile = LatencyProfile((1, 2, 4, 8, 16), (8.4, 9.0, 10.0, 12.0, 16.0), "test")
    generator = adaspec.Generator(gguf, drafter=name, budget=budget or 8, profile=profile)
    failures, accepted = [], 0
    for case_id, _, _ in GREEDY_CASES:
        prompt, expected = references[case_id]
        out = generator.generate(prompt, max_new_tokens=NEW_TOKENS)
        accepted += out.stats.num_accepted_tokens
        if out.token_ids != expected:
            position = next((i for i, (a, b) in enumerate(zip(expected, out.token_ids)) if a != b), None)
            failures.append(f"{case_id}: first difference at token {position}")
    assert not failures, "\n".join(failures)
    assert accepted > 0  # drafted tokens were accepted, not only roots


@needs_exact_build
def test_seeded_sampling_equals_plain_sampling_with_the_same_seed(gguf) -> None:
    options = dict(max_new_tokens=32, temperature=0.8, top_p=0.95, seed=5)
    prompt = "Repeat the sentence 'The cat sat on the mat.' five times."
    expected = adaspec.Generator(gguf, drafter="none").generate(prompt, **options).token_ids
    spec = adaspec.Generator(gguf, drafter="hybrid", budget=8)  # a fixed budget: speculate on every step
    got = [spec.generate(prompt, **options) for _ in range(2)]
    assert [g.token_ids for g in got] == [expected, expected]
    assert sum(g.stats.num_accepted_tokens for g in got) > 0


def test_a_generation_that_stops_early_hands_its_context_back(gguf) -> None:
    generator = adaspec.Generator(gguf, drafter="hybrid", budget=8)
    prompt = "Count from 1 to 30, separated by commas."
    stream = generator.stream(prompt, max_new_tokens=64)
    next(stream), next(stream)
    stream.close()  # the caller walks away mid-generation
    assert generator.pool.in_use == 0 and generator.pool.idle == 1
    again = generator.generate(prompt, max_new_tokens=16)
    assert again.stats.cached_prompt_tokens == len(again.prompt_ids) - 1  # the same prompt: all but its last token kept
    assert again.token_ids == adaspec.Generator(gguf, drafter="none").generate(prompt, max_new_tokens=16).token_ids


@needs_exact_build
def test_a_second_turn_reuses_the_first_and_equals_a_cold_prefill_token_for_token(gguf) -> None:
    """In the exact configuration a cell's keys and values do not depend on the batch that made
    them, so reused cells give exactly a cold prefill's output, greedy and seeded sampling."""
    from test_prefix_reuse import TOKENS, second_turns

    for options in ({}, {"temperature": 0.8, "top_p": 0.95, "seed": 3}):
        warm = adaspec.Generator(gguf, drafter="lookup", budget=8)
        for messages, token_ids, cached in second_turns(warm, **options):
            assert cached >= len(warm.encode(messages)) // 2
            cold = adaspec.Generator(gguf, drafter="none").generate(messages, max_new_tokens=TOKENS, **options)
            assert token_ids == cold.token_ids


def test_cli_profile_then_generate_on_llama_cpp(tmp_path) -> None:
    """`profile` measures the llama.cpp curve into its own cache; `generate` (auto budget by
    default on llama.cpp) then uses it and compares with plain decoding."""
    env = {**os.environ, "ADASPEC_CACHE": str(tmp_path)}  # a profile measured under test load stays here
    run = subprocess.run([sys.executable, "-m", "adaspec.cli", "profile", "--backend", "llama.cpp", "--plot", str(tmp_path / "p.png")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert "llama.cpp-SmolLM2-135M-Instruct.Q4_1-cpu-" in run.stdout and "| × one node | 1.00 |" in run.stdout
    assert (tmp_path / "p.png").stat().st_size > 0
    profiles = list((tmp_path / "profiles").glob("llama.cpp-*.json"))
    assert len(profiles) == 1
    measured = profiles[0].read_text()

    run = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", "Count from 1 to 20.", "--backend", "llama.cpp",
                          "--drafter", "hybrid", "--max-new-tokens", "24", "--compare", "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["new_tokens"] == 24
    if build_is_batch_invariant():
        assert out["identical"] is True
    assert profiles[0].read_text() == measured  # the cached curve was used, not measured again


def test_cli_refuses_a_directory_on_llama_cpp(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "adaspec.cli", "generate", "hi", "--backend", "llama.cpp", "--model", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "runs .gguf files" in run.stderr


def test_bench_runs_llama_cpp_python_peers_beside_adaspec(gguf, tmp_path) -> None:
    from adaspec.bench.prompts import load_prompts
    from adaspec.bench.runner import build_methods, run_benchmark

    prompts = load_prompts(["code-edit"], limit=1)
    methods = build_methods(gguf, ["hybrid", "llama.cpp-generate", "llama.cpp-prompt-lookup"], budget=8)
    records = run_benchmark(gguf, prompts, methods, new_tokens=16, progress=False)
    by_method = {r.method: r for r in records}
    assert set(by_method) == {"none", "hybrid", "llama.cpp-generate", "llama.cpp-prompt-lookup"}
    assert all(r.new_tokens == 16 for r in records)
    assert by_method["hybrid"].token_ids == by_method["none"].token_ids
    with pytest.raises(adaspec.AdaspecError, match="runs on the hf backend"):
        build_methods(gguf, ["hf-generate"])


def test_the_server_on_llama_cpp_gives_concurrent_streams_their_solo_outputs(gguf) -> None:
    import concurrent.futures

    import openai

    from server_harness import MODEL_NAME, live_server

    prompts = ["List the planets of the solar system in order.", "Write a haiku about autumn leaves.",
               "Give three tips for writing clear code."]
    plain = adaspec.Generator(gguf, drafter="none")
    solo = [plain.generate([{"role": "user", "content": p}], max_new_tokens=NEW_TOKENS).text for p in prompts]
    assert gguf.runtime.batch_support().verifier is None  # one request per forward
    with live_server(gguf, drafter="lookup", budget=4, state_dir=None) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

        def ask(prompt: str) -> str:
            reply = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": prompt}],
                                                   max_tokens=NEW_TOKENS, temperature=0)
            return reply.choices[0].message.content

        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            assert list(pool.map(ask, prompts)) == solo  # each request on a llama.cpp context of its own
