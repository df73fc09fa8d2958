"""Lossless sampling: speculative sampling has exactly the model's output distribution.

Statistical tests use Pearson's chi-square against probabilities computed exactly, with fixed
seeds (so they are deterministic, not flaky). How often each would raise a false alarm, and how
often it catches a 2-point shift of probability, is computed by simulation, not shown by one
seeded pass (``scripts/sampling_power.py``; the figures are in each test's docstring).
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
from adaspec.backends.base import Pick
from adaspec.backends.pick import pick_outputs
from adaspec.engine import Generator
from adaspec.errors import AdaspecError
from adaspec.models.loaded import LoadedModel
from adaspec.sampling import SamplingParams, sample_tokens, target_probs
from adaspec.tree import DraftTree
from adaspec.backends.hf_runtime import HFRuntime
from adaspec.verify import accept_path
from conftest import mean_accepted, slow_except

ALPHA = 1e-3  # the false-alarm rate of each distribution check (one setting, or one tree position)


def chi_square_p_value(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> np.ndarray | float:
    """Pearson's chi-square goodness-of-fit p-value; cells expected < min_expected are pooled.

    Args:
        counts: ``[c]`` observed counts, or ``[t, c]`` for t samples of the same size (the power
            simulation's trials).
        probs: ``[c]`` exact cell probabilities (summing to 1).

    Returns:
        The p-value (``[t]`` of them for ``[t, c]`` counts); 0 when an impossible cell was seen.
    """
    counts = np.asarray(counts, dtype=np.float64)
    rows = counts.reshape(-1, counts.shape[-1])  # [t, c]
    expected = probs * rows[0].sum()  # [c] every sample has the same size
    small = expected < min_expected
    observed = rows[:, ~small]  # [t, big]
    expect = expected[~small]
    if small.any() and expected[small].sum() > 0:
        observed = np.concatenate([observed, rows[:, small].sum(axis=1, keepdims=True)], axis=1)
        expect = np.append(expect, expected[small].sum())
    statistic = ((observed - expect) ** 2 / expect).sum(axis=1)  # [t]
    dof = expect.size - 1
    if dof == 0:
        p = np.ones(rows.shape[0])  # one possible outcome
    else:
        p = torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                    torch.from_numpy(statistic / 2)).numpy()
    p = np.where(rows[:, probs == 0].sum(axis=1) > 0, 0.0, p)  # an impossible outcome happened
    return p if counts.ndim == 2 else float(p[0])


def top_two_p_value(counts: np.ndarray, probs: np.ndarray) -> np.ndarray | float:
    """Chi-square over three cells: the likeliest outcome, the second likeliest, all the others.

    Aimed at a shift of probability between the two likeliest outcomes, which a test over every
    cell dilutes over its many degrees of freedom.

    Args:
        counts: ``[c]`` or ``[t, c]`` observed counts.
        probs: ``[c]`` exact probabilities.
    """
    counts = np.asarray(counts, dtype=np.float64)
    first, second = np.argsort(-probs, kind="stable")[:2]
    three = np.stack([counts[..., first], counts[..., second],
                      counts.sum(axis=-1) - counts[..., first] - counts[..., second]], axis=-1)
    return chi_square_p_value(three, np.array([probs[first], probs[second], 1.0 - probs[first] - probs[second]]))


def distribution_rejected(counts: np.ndarray, probs: np.ndarray, alpha: float = ALPHA) -> np.ndarray | bool:
    """The check every sampled-distribution test makes: the top-two test and the test over all cells
    (small ones pooled), each at ``alpha / 2``, so the false-alarm rate is at most ``alpha``.

    Args:
        counts: ``[c]`` or ``[t, c]`` observed counts.
        probs: ``[c]`` exact probabilities.
        alpha: the false-alarm rate.

    Returns:
        True where the counts are unlikely under ``probs``.
    """
    return (np.minimum(top_two_p_value(counts, probs), chi_square_p_value(counts, probs)) < alpha / 2)


def shifted(probs: np.ndarray, points: float = 0.02, towards_first: bool = False) -> np.ndarray:
    """``probs`` with ``points`` of probability moved from the likeliest outcome to the second (or back).

    Args:
        probs: ``[c]`` probabilities.
        points: how much moves.
        towards_first: move from the second likeliest to the likeliest instead.
    """
    first, second = np.argsort(-probs, kind="stable")[:2]
    moved = probs.copy()
    source, target = (second, first) if towards_first else (first, second)
    moved[source] -= points
    moved[target] += points
    return moved


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
TOY_PROMPT = [1, 4, 2]


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


def toy_llama() -> LlamaForCausalLM:
    """A tiny Llama with 5 tokens whose next-token distributions are far from uniform (the same
    weights on every call)."""
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=TOY_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    toy_model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        toy_model.lm_head.weight.mul_(8.0)  # spread the logits: 20-34 sequences of 3 tokens above 1%
    return toy_model


@pytest.fixture(scope="module")
def toy(model, tmp_path_factory) -> LoadedModel:
    """``toy_llama`` behind the real transformers runtime (the embedded model's tokenizer decodes)."""
    toy_model = toy_llama()
    return LoadedModel(model.tokenizer, "toy", 64, frozenset(), TOY_VOCAB,
                       runtime=HFRuntime(toy_model, "toy", "sdpa", tmp_path_factory.mktemp("checks")))


def exact_joint(toy_model: torch.nn.Module, prompt: list[int], params: SamplingParams, length: int) -> np.ndarray:
    """``[V ** length]`` the exact probability of every sequence of the first ``length`` tokens, from
    plain forwards of every prefix (no tree, no cache)."""
    sequences = list(itertools.product(range(TOY_VOCAB), repeat=length))
    probs = np.ones(len(sequences))
    with torch.no_grad():
        for position in range(length):
            prefixes = sorted({s[:position] for s in sequences})
            ids = torch.tensor([prompt + list(p) for p in prefixes])  # [m, prompt + position]
            step = target_probs(toy_model(ids).logits[:, -1], params).numpy()  # [m, V]
            row = {p: i for i, p in enumerate(prefixes)}
            probs *= np.array([step[row[s[:position]], s[position]] for s in sequences])
    return probs


# (temperature, top_k, top_p) -> seeded runs of the whole engine, each sized so that the check catches a
# 2-point shift between the two likeliest 3-token sequences with power >= 0.95 at a false-alarm rate
# of ALPHA (scripts/sampling_power.py; its table is in the test's docstring)
TOY_RUNS = {(1.0, 0, 1.0): 2250, (1.0, 3, 1.0): 3750}
TOY_RUNS_SLOW = {(0.7, 0, 1.0): 3250, (0.7, 0, 0.8): 5000}


def sample_the_toy(toy: LoadedModel, setting: tuple[float, int, float], runs: int) -> np.ndarray:
    """``[V ** 3]`` counts of the first 3 tokens over ``runs`` seeded generations of the whole engine
    (random trees of 6 nodes, the toy's real tree forwards, the engine's acceptance)."""
    temperature, top_k, top_p = setting
    generator = Generator(toy, drafter=RandomTreeDrafter(TOY_VOCAB, seed=7), budget=6)
    counts = np.zeros(TOY_VOCAB ** 3)
    for seed in range(runs):
        out = generator.generate(TOY_PROMPT, max_new_tokens=3, temperature=temperature, top_k=top_k, top_p=top_p,
                                 seed=seed)
        a, b, c = out.token_ids
        counts[(a * TOY_VOCAB + b) * TOY_VOCAB + c] += 1
    return counts


@pytest.mark.parametrize("setting", list(TOY_RUNS), ids=lambda s: "T{}-k{}-p{}".format(*s))
def test_engine_samples_the_exact_joint_distribution_of_three_tokens(toy, setting) -> None:
    """The whole engine (seeded runs, random trees full of duplicate siblings and deep chains, the toy's
    real tree forwards, the engine's acceptance) against the exact joint distribution of the first 3
    tokens, computed from plain forwards.

    The check (``distribution_rejected``): a chi-square over the two likeliest sequences and the rest,
    and one over every sequence (small cells pooled), each at ALPHA / 2. Simulated from the exact
    distributions (scripts/sampling_power.py, 20,000 trials each; the last two settings run in the
    slow tier):

    ========================  =============  =====  ============  =====================
    setting (T, top-k, top-p)  two likeliest  runs   false alarms  power, 2-point shift
    ========================  =============  =====  ============  =====================
    1.0, 0, 1.0               0.071, 0.044   2250   0.0013        0.968
    1.0, 3, 1.0               0.116, 0.085   3750   0.0010        0.957
    0.7, 0, 1.0               0.115, 0.067   3250   0.0014        0.952
    0.7, 0, 0.8               0.168, 0.106   5000   0.0008        0.959
    ========================  =============  =====  ============  =====================

    (Pearson's chi-square runs a little over its nominal rate with cells expected 5-10 times; the
    simulated false-alarm rates above are the ones to quote.) Power is the smaller of the two
    directions (likeliest to second, and back); a run count is the smallest multiple of 250 with
    power >= 0.95.
    """
    exact = exact_joint(toy.runtime.model, TOY_PROMPT, SamplingParams(*setting), length=3)  # [125]
    counts = sample_the_toy(toy, setting, TOY_RUNS[setting])
    assert not distribution_rejected(counts, exact), (top_two_p_value(counts, exact), chi_square_p_value(counts, exact))


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(TOY_RUNS_SLOW), ids=lambda s: "T{}-k{}-p{}".format(*s))
def test_engine_samples_the_exact_joint_distribution_at_more_settings(toy, setting) -> None:
    """As above, at a lower temperature and with top-p (power and false-alarm rates in the table above)."""
    exact = exact_joint(toy.runtime.model, TOY_PROMPT, SamplingParams(*setting), length=3)
    counts = sample_the_toy(toy, setting, TOY_RUNS_SLOW[setting])
    assert not distribution_rejected(counts, exact), (top_two_p_value(counts, exact), chi_square_p_value(counts, exact))


# ---------------------------------------------------------------- the embedded model

REAL_TREE_SAMPLING = SamplingParams(0.7)
REAL_TREE_DRAWS = 8250  # sized by scripts/sampling_power.py: power >= 0.95 at ALPHA on the first token


def plain_distributions(causal_lm: torch.nn.Module, context: list[int],
                        tree: DraftTree) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Plain forwards' (no tree, no cache) ``[V]`` distribution of the token after ``context``, and
    after ``context`` plus each child of the tree's root (keyed by the child's node index), at
    REAL_TREE_SAMPLING."""
    with torch.inference_mode():
        def plain(ids: list[int]) -> np.ndarray:
            return target_probs(causal_lm(torch.tensor([ids])).logits[0, -1:], REAL_TREE_SAMPLING)[0].numpy()

        return plain(context), {int(child): plain(context + [int(tree.tokens[child])]) for child in tree.children[0]}


def real_tree(model: LoadedModel) -> tuple[DraftTree, torch.Tensor, np.ndarray, dict[int, np.ndarray]]:
    """A warm hybrid drafter's tree over the embedded model's own answer, the logits of one real tree
    forward over it, and what plain forwards (no tree) give at REAL_TREE_SAMPLING.

    Returns:
        The tree; its ``[n, V]`` logits; the plain ``[V]`` distribution of the first token; and for each
        child of the root, the plain ``[V]`` distribution of the token after it.
    """
    generator = Generator(model, drafter="hybrid", budget=8)
    prompt = generator.encode("Name a colour and explain why you like it.")
    warm = generator.generate(prompt, max_new_tokens=40)  # the drafter learns this answer
    context = np.concatenate([prompt, warm.token_ids[:6]])
    backend = HFBackend(model.runtime.model)
    backend.prefill_logits(context[:-1])
    tree = generator.drafter.propose(context, budget=8)
    logits = backend.tree_logits(tree)  # [n, V]
    first, after = plain_distributions(model.runtime.model, context.tolist(), tree)
    return tree, logits, first, after


def draw_through_the_engine(tree: DraftTree, logits: torch.Tensor, draws: int, seed: int,
                            chunk: int = 64) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """What the engine emits over a verified tree, ``draws`` times: each node's token picked by the
    backends' own ``pick_outputs`` with its output position's uniform, then the engine's
    ``accept_path``; the logits are the tree forward's, computed once.

    Returns:
        ``[V]`` counts of the first emitted token, and for each child of the root, ``[V]`` counts of
        the token emitted after it, over the draws that accepted it.
    """
    vocab = logits.shape[-1]
    first = np.zeros(vocab)
    after = {int(c): np.zeros(vocab) for c in tree.children[0]}
    rng = np.random.default_rng(seed)
    for begin in range(0, draws, chunk):
        count = min(chunk, draws - begin)
        uniforms = rng.random((count, int(tree.depth.max()) + 1))  # [count, positions] one per output position
        pick = Pick(REAL_TREE_SAMPLING, uniforms[:, tree.depth].reshape(-1), 0)
        picked = pick_outputs(logits.repeat(count, 1), pick).tokens.reshape(count, tree.size)  # [count, n]
        for row in picked:
            path = accept_path(tree, row)
            emitted = tree.tokens[path[1:]].tolist() + [int(row[path[-1]])]
            first[emitted[0]] += 1
            if path.size > 1:
                after[int(path[1])][emitted[1]] += 1
    return first, after


TOY_TREE_DRAWS = 20_000  # power 0.999 against a 2-point shift of the first token (scripts/sampling_power.py)


def toy_tree(toy_model: torch.nn.Module) -> tuple[DraftTree, torch.Tensor, np.ndarray, dict[int, np.ndarray]]:
    """Every token under the root, each with every token under it (31 nodes), over the toy's prompt;
    the logits of one tree forward through the transformers backend, and plain forwards' first-token
    distribution and next-token distribution after each child, at REAL_TREE_SAMPLING."""
    parents = [-1] + [0] * TOY_VOCAB + [1 + i // TOY_VOCAB for i in range(TOY_VOCAB ** 2)]
    tokens = [TOY_PROMPT[-1]] + list(range(TOY_VOCAB)) + [i % TOY_VOCAB for i in range(TOY_VOCAB ** 2)]
    tree = DraftTree(np.array(tokens), np.array(parents))
    backend = HFBackend(toy_model)
    backend.prefill_logits(np.array(TOY_PROMPT[:-1]))
    logits = backend.tree_logits(tree)  # [31, V]
    first, after = plain_distributions(toy_model, TOY_PROMPT, tree)
    return tree, logits, first.astype(np.float64), after


def test_tokens_emitted_over_a_toy_tree_follow_plain_decodings_distribution(toy) -> None:
    """The fast twin of the real-tree check below, where a per-token bias is easiest to see: the toy's
    logits over a full two-level tree, each node's token picked by the backends' own ``pick_outputs``
    with its position's uniform and the path kept by ``accept_path``, TOY_TREE_DRAWS times. The first
    token, and the token after each child of the root, follow plain forwards' distributions.

    Simulated (scripts/sampling_power.py, 20,000 trials): with the two likeliest first tokens at 0.370
    and 0.306, the first-token check raises a false alarm 0.0010 of the time and catches a 2-point
    shift between them 0.999 of the time. A per-token 2-point bias moves a 3-token sequence's
    probability by about 1 point, which the checks above catch only 3-60% of the time; this one
    catches it.
    """
    tree, logits, first_exact, after_exact = toy_tree(toy.runtime.model)
    first, after = draw_through_the_engine(tree, logits, TOY_TREE_DRAWS, seed=0)
    assert not distribution_rejected(first, first_exact), (top_two_p_value(first, first_exact),
                                                           chi_square_p_value(first, first_exact))
    checked = 0
    for child, counts in after.items():
        if counts.sum() >= 2000:
            assert not distribution_rejected(counts, after_exact[child]), child
            checked += 1
    assert checked >= 2  # the likeliest two first tokens each give a check


@pytest.mark.slow  # ~50 s: every draw picks all 8 nodes' tokens over the 49,152-token vocabulary
def test_tokens_emitted_over_a_real_tree_follow_plain_decodings_distribution(model) -> None:
    """The embedded model's real logits over a real hybrid tree, picked and accepted by the engine's
    own code, against plain forwards' distributions: the first token, and the next token after each
    child of the root that enough draws accepted (at least 200).

    Each check is ``distribution_rejected`` at ALPHA. REAL_TREE_DRAWS is sized so that the
    first-token check catches a 2-point shift between the two likeliest tokens with power >= 0.95
    (scripts/sampling_power.py, simulated from the plain distribution, 20,000 trials): the two
    likeliest first tokens have 0.881 and 0.119; at 8,250 draws the check raises a false alarm 0.0013
    of the time and catches the shift 0.959 of the time. The checks after a child have fewer draws
    and less power; each adds ALPHA of false alarms.
    """
    tree, logits, first_exact, after_exact = real_tree(model)
    assert tree.size > 2
    first, after = draw_through_the_engine(tree, logits, REAL_TREE_DRAWS, seed=0)
    assert not distribution_rejected(first, first_exact), (top_two_p_value(first, first_exact),
                                                           chi_square_p_value(first, first_exact))
    checked = 0
    for child, counts in after.items():  # after an accepted child: the plain distribution after its token
        if counts.sum() >= 200:
            assert not distribution_rejected(counts, after_exact[child]), child
            checked += 1
    assert checked >= 1  # the warm drafter's first child holds the model's likeliest token


# A tree forward's CDF differs from a plain forward's by summation order only: measured here at
# most 3.3e-6 over the first 20 positions of both cases below. A uniform closer than this to a
# CDF boundary may pick the neighbouring token; one farther away may not.
BOUNDARY_TOLERANCE = 5e-6
MAX_BOUNDARY_MISSES = 0  # per drafter; none is measured on these cases


def distance_to_boundary(model: LoadedModel, prompt: np.ndarray, tokens: list[int], position: int,
                         params: SamplingParams, uniform: float) -> float:
    """How far plain decoding's CDF at ``position`` puts ``uniform`` from the nearest token boundary."""
    with torch.inference_mode():
        ids = torch.tensor([prompt.tolist() + tokens[:position]])
        probs = target_probs(model.runtime.model(ids).logits[:, -1], params)[0]
    cdf = probs.cumsum(0)
    return float(torch.min(torch.abs(cdf - uniform * cdf[-1])))


def compare_seeded(model, generator: Generator, cases, expected_outputs, label: str, float_noise_log,
                   repeat: bool = False) -> list:
    """Runs each seeded case through ``generator`` and fails on any mismatch with plain sampling's text
    that its uniform's distance to a CDF boundary does not explain (and on more than
    MAX_BOUNDARY_MISSES that it does).

    Args:
        model: the embedded model (to explain a mismatch).
        generator: what to test.
        cases: (prompt, sampling options) pairs.
        expected_outputs: plain sampling's Generation per case.
        label: names the run in messages and pytest's summary.
        float_noise_log: where forgiven boundary misses are recorded.
        repeat: run each case twice (a learning drafter has learned more the second time).

    Returns:
        Every Generation the generator gave.
    """
    results, mismatches, boundary_misses = [], [], 0
    for (prompt, options), expected in zip(cases, expected_outputs):
        for _ in range(2 if repeat else 1):
            result = generator.generate(prompt, max_new_tokens=SAMPLED_TOKENS, **options)
            results.append(result)
            if result.token_ids == expected.token_ids:
                continue
            position = next((i for i, (a, b) in enumerate(zip(expected.token_ids, result.token_ids)) if a != b), None)
            if position is None:
                mismatches.append(f"lengths {len(expected.token_ids)} vs {len(result.token_ids)}")
                continue
            uniform = float(SamplingParams(seed=options["seed"]).uniforms(SAMPLED_TOKENS)[position])
            params = SamplingParams(options["temperature"], options.get("top_k", 0), options.get("top_p", 1.0))
            distance = distance_to_boundary(model, np.array(expected.prompt_ids), expected.token_ids, position,
                                            params, uniform)
            what = f"token {position}: uniform {distance:.1e} from a CDF boundary"
            mismatches.append(what)
            if distance < BOUNDARY_TOLERANCE:
                boundary_misses += 1
                float_noise_log.append(f"sampling {label}: {what}")
    assert boundary_misses <= MAX_BOUNDARY_MISSES and len(mismatches) == boundary_misses, "\n".join(mismatches)
    return results


SAMPLED_TOKENS = 32
SAME_SEED_CASES = [  # prompt, sampling options (with the seed)
    ("Write a short poem about the sea.", dict(temperature=0.7, seed=0)),
    ("Explain what a hash table is.", dict(temperature=1.0, top_p=0.9, seed=1)),
    ("List three fruits and say what colour each one is.", dict(temperature=0.9, top_k=20, seed=2)),
]
# MAT over the cases run twice each at budget 8, per drafter, each floor keeping 80% of the measured
# excess over 1 (measured: lookup 1.394, recycling 1.586, aded 2.140, aded:builder=mcts 2.190, hybrid
# 2.190, suffix 1.968; seeded text and fixed-budget trees involve no timing)
SEEDED_MAT_FLOORS = {"lookup": 1.31, "recycling": 1.46, "aded": 1.91, "aded:builder=mcts": 1.95, "hybrid": 1.95,
                     "suffix": 1.77}


@pytest.fixture(scope="module")
def plain_samples(model) -> list:
    plain = Generator(model, drafter="none")
    return [plain.generate(prompt, max_new_tokens=SAMPLED_TOKENS, **options) for prompt, options in SAME_SEED_CASES]


@pytest.mark.parametrize("drafter", slow_except(SEEDED_MAT_FLOORS, {"hybrid"}))
def test_sampled_text_equals_plain_sampling_with_the_same_seed(model, plain_samples, drafter, float_noise_log) -> None:
    """Randomness is fixed per output position, so every drafter reproduces plain sampling's text, at
    a temperature alone, with top-p and with top-k; twice per case, the drafter having learned more
    the second time. Drafts were accepted: MAT stays above the drafter's measured floor.

    A mismatch is explained only if its position's uniform lay within BOUNDARY_TOLERANCE of a
    CDF boundary; at most MAX_BOUNDARY_MISSES of those pass, and any other mismatch fails.
    """
    spec = Generator(model, drafter=drafter, budget=8)
    results = compare_seeded(model, spec, SAME_SEED_CASES, plain_samples, drafter, float_noise_log, repeat=True)
    print(f"MAT seeded {drafter}: {mean_accepted(results):.3f}")
    assert mean_accepted(results) > SEEDED_MAT_FLOORS[drafter]


DEFAULT_SEEDED_MAT_FLOOR = 1.19  # measured 1.239 (1.276 before trees were chosen sceptically); 80% of the excess over 1


@pytest.mark.slow
def test_the_default_drafter_and_budget_sample_plain_samplings_text(model, float_noise_log) -> None:
    """``Generator(model)`` (``hybrid:copy=suffix@auto`` on the tests' fixed cost curve) reproduces
    plain sampling's text on the 13 greedy equivalence prompts, each at its own seed, with MAT above
    the measured floor."""
    from conftest import FIXED_PROFILE
    from test_equivalence import GREEDY_CASES

    cases = [(Generator(model, drafter="none").encode(prompt, chat), dict(temperature=0.8, top_p=0.95, seed=300 + i))
             for i, (_, prompt, chat) in enumerate(GREEDY_CASES)]
    plain = Generator(model, drafter="none")
    expected = [plain.generate(prompt, max_new_tokens=SAMPLED_TOKENS, **options) for prompt, options in cases]
    results = compare_seeded(model, Generator(model, profile=FIXED_PROFILE), cases, expected, "default", float_noise_log)
    print(f"MAT seeded default: {mean_accepted(results):.3f}")
    assert mean_accepted(results) > DEFAULT_SEEDED_MAT_FLOOR


def test_the_host_side_pick_equals_the_torch_pick() -> None:
    """llama.cpp's backend picks tokens with numpy (no torch in its step); both implementations
    of the same rule give the same tokens and candidates on the same logits and uniforms."""
    from adaspec.backends.pick import pick_outputs_host

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
