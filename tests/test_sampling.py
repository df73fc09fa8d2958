"""Lossless sampling: speculative sampling has exactly the model's output distribution.

Statistical tests use Pearson's chi-square against probabilities computed exactly, at a
significance level of 0.001, with fixed seeds (so they are deterministic, not flaky). Each
also shows it has power: the same samples are rejected against a slightly wrong
distribution.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from adaspec.backends import HFBackend
from adaspec.drafters import Drafter
from adaspec.engine import Generator
from adaspec.errors import AdaspecError
from adaspec.models.loaded import LoadedModel
from adaspec.sampling import SamplingParams, sample_tokens, target_probs
from adaspec.tree import DraftTree
from adaspec.backends.hf_runtime import HFRuntime
from adaspec.verify import accept_path

ALPHA = 1e-3  # significance level of every chi-square test here


def sample_accept(tree: DraftTree, probs: torch.Tensor, uniforms: torch.Tensor) -> tuple[np.ndarray, int]:
    """The engine's sampled acceptance: each node's token drawn with its position's uniform, then the walk."""
    drawn = sample_tokens(probs, uniforms[torch.from_numpy(tree.depth)]).numpy()  # [n]
    path = accept_path(tree, drawn)
    return path, int(drawn[path[-1]])


def chi_square_p_value(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Pearson's chi-square goodness-of-fit p-value; cells expected < min_expected are pooled.

    Args:
        counts: ``[c]`` observed counts.
        probs: ``[c]`` exact cell probabilities (summing to 1).
    """
    total = counts.sum()
    expected = probs * total
    small = expected < min_expected
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if observed[-1] == 0 and expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    if np.any((expected == 0) & (observed > 0)):
        return 0.0  # an impossible outcome happened
    statistic = float(((observed - expected) ** 2 / np.maximum(expected, 1e-300)).sum())
    dof = observed.size - 1
    if dof == 0:
        return 1.0  # one possible outcome, and it happened every time
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)))


# ---------------------------------------------------------------- the target distribution


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (0.8, 0, 0.9), (0.7, 20, 0.5)])
def test_target_distribution_matches_transformers_warpers(temperature, top_k, top_p) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 100, generator=generator) * 3  # [6, 100]
    ours = target_probs(logits, SamplingParams(temperature, top_k, top_p))
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    theirs = torch.softmax(scores.double(), dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.equal(ours > 0, theirs > 0)  # the same tokens are cut


@pytest.mark.parametrize("settings, message", [
    (dict(temperature=-0.5), "temperature"), (dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
])
def test_bad_sampling_settings_are_refused(settings, message) -> None:
    with pytest.raises(AdaspecError, match=message):
        SamplingParams(**settings)


def test_inverse_cdf_never_picks_an_impossible_token() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)  # [2, 4]
    for u in [0.0, 0.25, 0.4999999, 0.5, 0.9999999]:
        picked = sample_tokens(probs, torch.full((2,), u, dtype=torch.float64))
        assert picked[0] in (1, 3) and picked[1] == 3
    assert sample_tokens(probs, torch.tensor([0.2, 0.2], dtype=torch.float64)).tolist() == [1, 3]
    assert sample_tokens(probs, torch.tensor([0.7, 0.7], dtype=torch.float64)).tolist() == [3, 3]


# ---------------------------------------------------------------- a toy model, the whole engine

TOY_VOCAB = 5


class RandomTreeDrafter(Drafter):
    """Proposes random trees that mix deep chains and duplicate siblings (for tests only)."""

    name = "random-trees"

    def __init__(self, vocab_size: int, seed: int) -> None:
        self.vocab_size = vocab_size
        self.rng = np.random.default_rng(seed)

    def warm_up(self, vocab_size: int) -> None:
        pass  # nothing to compile, and the trees' random stream starts with the first request

    def propose(self, context: np.ndarray, budget: int, state=None) -> DraftTree:
        tokens, parents = [int(context[-1])], [-1]
        while len(tokens) < budget:
            if self.rng.random() < 0.5:  # a chain under the newest node
                parent = len(tokens) - 1
            else:  # a sibling somewhere, often a duplicate token
                parent = int(self.rng.integers(0, len(tokens)))
            tokens.append(int(self.rng.integers(0, self.vocab_size)))
            parents.append(parent)
        return DraftTree(np.array(tokens), np.array(parents))


@pytest.fixture(scope="module")
def toy(model, tmp_path_factory) -> LoadedModel:
    """A tiny Llama with 5 tokens whose next-token distributions are far from uniform."""
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=TOY_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    toy_model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        toy_model.lm_head.weight.mul_(8.0)  # spread the logits: 20-34 sequences of 3 tokens above 1%
    return LoadedModel(model.tokenizer, "toy", 64, frozenset(), TOY_VOCAB,
                       runtime=HFRuntime(toy_model, "toy", "sdpa", tmp_path_factory.mktemp("checks")))


def exact_joint(toy: LoadedModel, prompt: list[int], params: SamplingParams, length: int) -> np.ndarray:
    """``[V ** length]`` the exact probability of every sequence of the first ``length`` tokens."""
    sequences = list(itertools.product(range(TOY_VOCAB), repeat=length))
    probs = np.ones(len(sequences))
    with torch.no_grad():
        for position in range(length):
            prefixes = sorted({s[:position] for s in sequences})
            ids = torch.tensor([prompt + list(p) for p in prefixes])  # [m, prompt + position]
            step = target_probs(toy.runtime.model(ids).logits[:, -1], params).numpy()  # [m, V]
            row = {p: i for i, p in enumerate(prefixes)}
            probs *= np.array([step[row[s[:position]], s[position]] for s in sequences])
    return probs


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 3, 1.0), (0.7, 0, 0.8)])
def test_engine_samples_the_exact_joint_distribution_of_three_tokens(toy, temperature, top_k, top_p) -> None:
    prompt = [1, 4, 2]
    params = SamplingParams(temperature, top_k, top_p)
    exact = exact_joint(toy, prompt, params, length=3)  # [125]
    generator = Generator(toy, drafter=RandomTreeDrafter(TOY_VOCAB, seed=7), budget=6)
    runs = 2000
    counts = np.zeros(exact.size)
    for seed in range(runs):
        out = generator.generate(prompt, max_new_tokens=3, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        a, b, c = out.token_ids
        counts[(a * TOY_VOCAB + b) * TOY_VOCAB + c] += 1
    assert chi_square_p_value(counts, exact) > ALPHA
    # power: the same samples reject the distribution of a nearby temperature
    wrong = exact_joint(toy, prompt, SamplingParams(temperature * 1.25, top_k, top_p), length=3)
    assert chi_square_p_value(counts, wrong) < ALPHA


# ---------------------------------------------------------------- the embedded model


def test_first_tokens_over_a_real_tree_follow_the_models_distribution(model) -> None:
    """Real logits of the embedded model over a real hybrid tree, 20,000 acceptance draws.

    With 20,000 draws the standard error of a probability is at most 0.0035, so a 2-point
    shift in the top token's probability is 5.7 standard errors: a z-test at 0.001 (3.3)
    catches it with power above 0.99.
    """
    generator = Generator(model, drafter="hybrid", budget=8)
    prompt = generator.encode("Name a colour and explain why you like it.")
    warm = generator.generate(prompt, max_new_tokens=40)  # the drafter learns this answer
    context = np.concatenate([prompt, warm.token_ids[:6]])
    backend = HFBackend(model.runtime.model)
    backend.prefill_logits(context[:-1])
    tree = generator.drafter.propose(context, budget=8)
    assert tree.size > 2
    probs = target_probs(backend.tree_logits(tree), SamplingParams(0.7))  # [n, V]
    draws = 20_000
    random = torch.Generator().manual_seed(0)
    first = np.zeros(model.vocab_size)
    second_after_child: dict[int, np.ndarray] = {c: np.zeros(model.vocab_size) for c in tree.children[0]}
    for _ in range(draws):
        path, next_token = sample_accept(tree, probs, torch.rand(16, generator=random, dtype=torch.float64))
        tokens = [int(t) for t in tree.tokens[path[1:]]] + [next_token]
        first[tokens[0]] += 1
        if len(path) > 1:
            second_after_child[int(path[1])][tokens[1]] += 1
    exact = probs[0].numpy()
    top = int(exact.argmax())
    z = (first[top] / draws - exact[top]) / np.sqrt(exact[top] * (1 - exact[top]) / draws)
    assert abs(z) < 3.29
    assert chi_square_p_value(first, exact) > ALPHA
    children_checked = 0
    for child, counts in second_after_child.items():  # after an accepted child: that node's distribution
        if counts.sum() >= 200:
            assert chi_square_p_value(counts, probs[child].numpy()) > ALPHA
            children_checked += 1
    assert children_checked >= 1  # the warm drafter's first child holds the model's top token
    shifted = exact.copy()
    shifted[top] -= 0.02
    shifted[int(np.argsort(exact)[-2])] += 0.02
    assert chi_square_p_value(first, shifted) < ALPHA  # power: a 2-point shift is caught


# A tree forward's CDF differs from a plain forward's by summation order only: measured here at
# most 3.3e-6 over the first 20 positions of both cases below. A uniform closer than this to a
# CDF boundary may pick the neighbouring token; one farther away may not.
BOUNDARY_TOLERANCE = 5e-6
MAX_BOUNDARY_MISSES = 0  # per drafter; none is measured on these two cases


def distance_to_boundary(model: LoadedModel, prompt: np.ndarray, tokens: list[int], position: int,
                         params: SamplingParams, uniform: float) -> float:
    """How far plain decoding's CDF at ``position`` puts ``uniform`` from the nearest token boundary."""
    with torch.inference_mode():
        ids = torch.tensor([prompt.tolist() + tokens[:position]])
        probs = target_probs(model.runtime.model(ids).logits[:, -1], params)[0]
    cdf = probs.cumsum(0)
    return float(torch.min(torch.abs(cdf - uniform * cdf[-1])))


SAMPLED_TOKENS = 32
SAME_SEED_CASES = [  # prompt, temperature, top_p, seed
    ("Write a short poem about the sea.", 0.7, 1.0, 0),
    ("Explain what a hash table is.", 1.0, 0.9, 1),
]


@pytest.fixture(scope="module")
def plain_samples(model) -> list:
    plain = Generator(model, drafter="none")
    return [plain.generate(prompt, max_new_tokens=SAMPLED_TOKENS, temperature=t, top_p=p, seed=seed) for prompt, t, p, seed in SAME_SEED_CASES]


@pytest.mark.parametrize("drafter", ["lookup", "recycling", "aded", "hybrid"])
def test_sampled_text_equals_plain_sampling_with_the_same_seed(model, plain_samples, drafter, float_noise_log) -> None:
    """Randomness is fixed per output position, so every drafter reproduces plain sampling's text.

    A mismatch is explained only if its position's uniform lay within BOUNDARY_TOLERANCE of a
    CDF boundary; at most MAX_BOUNDARY_MISSES of those pass, and any other mismatch fails.
    """
    spec = Generator(model, drafter=drafter, budget=8)
    accepted, mismatches, boundary_misses = 0, [], 0
    for (prompt, temperature, top_p, seed), expected in zip(SAME_SEED_CASES, plain_samples):
        options = dict(max_new_tokens=SAMPLED_TOKENS, temperature=temperature, top_p=top_p, seed=seed)
        got = spec.generate(prompt, **options)
        again = spec.generate(prompt, **options)  # the drafter has learned more: same text all the same
        accepted += got.stats.num_accepted_tokens + again.stats.num_accepted_tokens
        for result in (got, again):
            if result.token_ids == expected.token_ids:
                continue
            position = next((i for i, (a, b) in enumerate(zip(expected.token_ids, result.token_ids)) if a != b), None)
            if position is None:
                mismatches.append(f"lengths {len(expected.token_ids)} vs {len(result.token_ids)}")
                continue
            uniform = float(torch.rand(SAMPLED_TOKENS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)[position])
            distance = distance_to_boundary(model, np.array(expected.prompt_ids), expected.token_ids, position,
                                            SamplingParams(temperature, 0, top_p), uniform)
            what = f"token {position}: uniform {distance:.1e} from a CDF boundary"
            mismatches.append(what)
            if distance < BOUNDARY_TOLERANCE:
                boundary_misses += 1
                float_noise_log.append(f"sampling {drafter}: {what}")
    assert boundary_misses <= MAX_BOUNDARY_MISSES and len(mismatches) == boundary_misses, "\n".join(mismatches)
    assert accepted > 0  # speculation really happened


def test_the_host_side_pick_equals_the_torch_pick() -> None:
    """llama.cpp's backend picks tokens with numpy (no torch in its step); both implementations
    of the same rule give the same tokens and candidates on the same logits and uniforms."""
    from adaspec.backends.base import Pick
    from adaspec.backends.pick import pick_outputs, pick_outputs_host

    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((200, 3000)) * 4).astype(np.float32)  # [n, V]
    for params in (SamplingParams(), SamplingParams(0.8, 50, 0.9, 1), SamplingParams(1.0, 0, 0.95, 1),
                   SamplingParams(0.5, 0, 1.0, 1), SamplingParams(1.3, 7, 1.0, 1)):
        uniforms = None if params.greedy else rng.random(200)
        ours = pick_outputs(torch.from_numpy(logits), Pick(params, uniforms, 5))
        host = pick_outputs_host(logits, Pick(params, uniforms, 5))
        assert np.array_equal(ours.tokens, host.tokens), params
        assert np.array_equal(ours.topk_ids, host.topk_ids)
        assert np.allclose(ours.topk_probs, host.topk_probs, rtol=1e-5, atol=1e-7)
