"""Tree attention, KV compaction and lossless decoding on other model families (real transformers code).

The embedded model is Llama-family. Here tiny, randomly initialised models of every decoder
family a user would plausibly run go through the same checks: logits of a tree forward equal
each path run on its own, a compacted cache equals the cache of plain decoding of the accepted
path, and, loaded through ``adaspec.load`` from a saved directory, every drafter's greedy output
equals transformers' ``model.generate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import adaspec
from adaspec.backends import HFBackend
from adaspec.backends.hf import cache_keyword
from adaspec.tree import DraftTree

TOLERANCE = 1e-4
SIZES = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


FAMILIES = ["qwen2", "llama", "qwen3", "mistral", "phi3", "gpt_neox", "gpt2", "qwen2_moe", "gemma2", "gemma3_text"]
DRAFTERS = ["none", "lookup", "recycling", "aded", "hybrid"]


def tiny(family: str, **overrides):
    """A randomly initialised model of ``family`` with SIZES (and ``overrides``), in eval mode."""
    import transformers

    torch.manual_seed(0)
    sizes = {**SIZES, **overrides}
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**sizes)).eval()
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**sizes)).eval()
    if family == "gpt2":  # learned absolute positions, fused qkv, its own config names
        config = transformers.GPT2Config(vocab_size=sizes["vocab_size"], n_embd=sizes["hidden_size"],
                                         n_layer=sizes["num_hidden_layers"], n_head=sizes["num_attention_heads"],
                                         n_positions=sizes["max_position_embeddings"], bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(config).eval()
    config_class, model_class, extra = {
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
        "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
        "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),
        "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 16}),
        "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 16}),
        "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2,
                                                                "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32}),
    }[family]
    config = getattr(transformers, config_class)(**sizes, **extra)
    return getattr(transformers, model_class)(config).eval()


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_tree_forward_and_compaction(family, lean) -> None:
    model = tiny(family)
    backend = HFBackend(model, lean=lean)
    prompt = np.arange(10, 30)
    backend.prefill_logits(prompt)
    tree = DraftTree(np.array([5, 6, 7, 8, 9, 10]), np.array([-1, 0, 0, 1, 3, 2]))
    logits = backend.tree_logits(tree)  # [n, V]
    with torch.inference_mode():
        for node in range(tree.size):
            ids = prompt.tolist() + tree.tokens[tree.path_to(node)].tolist()
            expected = model(torch.tensor([ids])).logits[0, -1]
            assert torch.allclose(logits[node], expected, atol=TOLERANCE, rtol=0), (family, node)

    accepted = tree.path_to(4)  # [0, 1, 3, 4]
    backend.commit(accepted)
    reference = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(torch.tensor([prompt.tolist() + tree.tokens[accepted].tolist()]), use_cache=True,
              **{cache_keyword(model): reference})
    for ours, theirs in zip(backend.cache.layers, reference.layers):
        length = ours.get_seq_length()  # a preallocated layer holds spare positions after these
        assert torch.allclose(ours.keys[:, :, :length], theirs.keys, atol=TOLERANCE, rtol=0)
        assert torch.allclose(ours.values[:, :, :length], theirs.values, atol=TOLERANCE, rtol=0)


def test_sliding_window_models_get_their_context_capped_at_the_window_and_others_are_refused() -> None:
    from transformers import Gemma3TextConfig, MistralConfig

    from adaspec.errors import AdaspecError
    from adaspec.backends.hf_model import attention_window

    assert attention_window(MistralConfig(sliding_window=64)) == 64
    assert attention_window(MistralConfig(sliding_window=None)) is None
    assert attention_window(Qwen2Config(**SIZES)) is None  # use_sliding_window defaults to off
    assert attention_window(LlamaConfig(**SIZES)) is None
    assert attention_window(Gemma3TextConfig(sliding_window=32, num_hidden_layers=6)) == 32
    hybrid = Qwen2Config(**SIZES)
    hybrid.layer_types = ["full_attention", "linear_attention"]
    with pytest.raises(AdaspecError, match="linear_attention"):
        attention_window(hybrid)


def saved_with_tokenizer(network, model, directory: Path) -> adaspec.LoadedModel:
    """``network`` saved as a Hugging Face directory with the embedded tokenizer, then loaded back."""
    network.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
    return adaspec.load(str(directory))


@torch.inference_mode()
def generate_reference(network, prompt: list[int], max_new_tokens: int, eos_ids) -> tuple[list[int], float]:
    """transformers' greedy ``generate`` (new ids), and the smallest top-2 logit gap along it."""
    ids = torch.tensor([prompt])
    out = network.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                           eos_token_id=sorted(eos_ids), pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    top = torch.topk(torch.cat(out.scores).float(), 2).values  # [new, 2]
    return out.sequences[0, len(prompt):].tolist(), float((top[:, 0] - top[:, 1]).min())


@pytest.mark.parametrize("family", FAMILIES)
def test_every_drafter_decodes_like_generate(model, family, tmp_path) -> None:
    """Each drafter generates twice on one Generator: the second time the learning drafters know
    the answer, so long drafts are accepted (a random model's output rarely repeats itself)."""
    network = tiny(family, vocab_size=model.vocab_size)
    loaded = saved_with_tokenizer(network, model, tmp_path)
    prompt = model.tokenizer("a b c d a b c d a b c d a b").input_ids  # repetition gives lookup something to copy
    new_tokens = 48
    expected, smallest_gap = generate_reference(network, prompt, new_tokens, loaded.eos_token_ids)
    assert smallest_gap > 1e-4, f"{family}: a near-tie in the reference ({smallest_gap:.1e}); pick another seed"
    accepted = {}
    for drafter in DRAFTERS:
        generator = adaspec.Generator(loaded, drafter=drafter, budget=8)
        runs = [generator.generate(prompt, max_new_tokens=new_tokens) for _ in range(2)]
        assert [run.token_ids for run in runs] == [expected, expected], (family, drafter)
        accepted[drafter] = runs[1].stats.num_accepted_tokens
    assert min(accepted[d] for d in ("recycling", "aded", "hybrid")) >= new_tokens // 4, accepted


def test_a_sliding_window_model_loaded_from_a_directory_decodes_like_generate(model, tmp_path) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(**{**SIZES, "vocab_size": model.vocab_size, "max_position_embeddings": 512}, sliding_window=40)
    network = MistralForCausalLM(config).eval()
    loaded = saved_with_tokenizer(network, model, tmp_path)
    assert loaded.max_context == 40  # capped at the window: within it, a tree's mask equals the sliding one
    prompt = list(range(100, 116))  # [16]
    room = loaded.max_context - len(prompt)
    expected, smallest_gap = generate_reference(network, prompt, room, loaded.eos_token_ids)
    assert smallest_gap > 1e-4
    for drafter in ("none", "lookup", "hybrid"):
        got = adaspec.Generator(loaded, drafter=drafter, budget=8).generate(prompt, max_new_tokens=1000)
        assert got.token_ids == expected, drafter


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_verification_is_exact_or_refused_with_a_reason(model, family, tmp_path) -> None:
    """Each family either verifies batches with every request's solo logits, or says why not
    (GPT-2 multiplies in Conv1D, a mixture of experts in fused expert weights, Gemma2 runs eager
    attention, Gemma3 has sliding-window layers): never a batch that changes a request's logits."""
    loaded = saved_with_tokenizer(tiny(family, vocab_size=model.vocab_size), model, tmp_path)
    support = loaded.runtime.batch_support()
    if support.verifier is None:
        assert support.reason and "\n" not in support.reason
        assert family in ("gpt2", "qwen2_moe", "gemma2", "gemma3_text"), (family, support.reason)
        return
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, model.vocab_size, n) for n in (5, 40, 17)]
    trees = [DraftTree(rng.integers(0, model.vocab_size, n), np.array([-1] + list(range(n - 1)))) for n in (3, 9, 1)]

    def prefilled(prompt):
        backend = loaded.new_backend()
        backend.prefill_logits(prompt)
        return backend

    alone = [support.verifier.tree_logits([prefilled(p)], [t])[0] for p, t in zip(prompts, trees)]
    together = support.verifier.tree_logits([prefilled(p) for p in prompts], trees)
    assert all(torch.equal(a, b) for a, b in zip(alone, together)), family
