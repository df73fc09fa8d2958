"""The HF backend on the real model: tree forward and KV compaction against sequential decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from adaspec.backends import HFBackend
from adaspec.backends.hf import cache_keyword
from adaspec.tree import DraftTree

# float32 logits of one path computed two ways (one tree forward vs a fresh full forward)
# differ by summation order only; measured max |diff| here is ~4e-5.
LOGIT_TOLERANCE = 2e-4
CACHE_TOLERANCE = 1e-4


def prompt_ids(model, text: str = "The quick brown fox jumps over the lazy dog because") -> np.ndarray:
    return np.array(model.tokenizer(text).input_ids, dtype=np.int64)


def stored(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values in use (a preallocated layer holds spare positions after them)."""
    length = layer.get_seq_length()
    return layer.keys[:, :, :length], layer.values[:, :, :length]


def sample_tree() -> DraftTree:
    #        0
    #     1     2
    #   3   6    5
    #   4
    #   7
    tokens = np.array([262, 314, 2364, 1012, 253, 30, 1012, 16])
    return DraftTree(tokens, np.array([-1, 0, 0, 1, 3, 2, 1, 4]))


@torch.inference_mode()
def sequential_logits(model, ids: list[int]) -> torch.Tensor:
    return model.runtime.model(torch.tensor([ids])).logits[0, -1].float()


def test_tree_forward_matches_each_path_run_sequentially(model) -> None:
    backend = HFBackend(model.runtime.model)
    prompt = prompt_ids(model)
    backend.prefill_logits(prompt[:-1])  # the last prompt token plays the pending root
    tree = sample_tree()
    tree = DraftTree(np.concatenate([[prompt[-1]], tree.tokens[1:]]), tree.parents)
    logits = backend.tree_logits(tree)  # [n, V]
    assert logits.shape == (tree.size, model.vocab_size)
    for node in range(tree.size):
        path_tokens = tree.tokens[tree.path_to(node)].tolist()
        expected = sequential_logits(model, prompt[:-1].tolist() + path_tokens)
        assert torch.allclose(logits[node], expected, atol=LOGIT_TOLERANCE, rtol=0), node


@pytest.mark.parametrize("leaf", [7, 1])
def test_compaction_leaves_the_cache_of_plain_decoding(model, leaf) -> None:
    backend = HFBackend(model.runtime.model)
    prompt = prompt_ids(model)
    backend.prefill_logits(prompt[:-1])
    start = backend.cache_len
    tree = sample_tree()
    tree = DraftTree(np.concatenate([[prompt[-1]], tree.tokens[1:]]), tree.parents)
    backend.tree_logits(tree)
    # to 7: [0, 1, 3, 4, 7], which needs moving (node 7 sits after 5 and 6); to 1: [0, 1], in place already
    accepted = tree.path_to(leaf)
    backend.commit(accepted)
    assert backend.cache_len == start + accepted.size

    reference = DynamicCache(config=model.runtime.model.config)
    ids = prompt[:-1].tolist() + tree.tokens[accepted].tolist()
    with torch.inference_mode():
        model.runtime.model(torch.tensor([ids]), use_cache=True, **{cache_keyword(model.runtime.model): reference})
    for ours, theirs in zip(backend.cache.layers, reference.layers):
        keys, values = stored(ours)
        assert keys.shape == theirs.keys.shape
        assert torch.allclose(keys, theirs.keys, atol=CACHE_TOLERANCE, rtol=0)
        assert torch.allclose(values, theirs.values, atol=CACHE_TOLERANCE, rtol=0)

    # decoding continues correctly from the compacted cache
    next_logits = backend.tree_logits(DraftTree.root_only(11))[0]
    assert torch.allclose(next_logits, sequential_logits(model, ids + [11]), atol=LOGIT_TOLERANCE, rtol=0)


def test_prefill_in_chunks_matches_one_pass(model) -> None:
    prompt = prompt_ids(model, "One two three four five six seven eight nine ten eleven twelve.")
    whole = HFBackend(model.runtime.model).prefill_logits(prompt)
    chunked = HFBackend(model.runtime.model, prefill_chunk=5).prefill_logits(prompt)
    assert torch.allclose(whole, chunked, atol=LOGIT_TOLERANCE, rtol=0)


def test_own_output_head_matches_the_models_forward_and_falls_back_when_unsafe(model) -> None:
    from adaspec.backends.hf import output_head_weight

    fast = HFBackend(model.runtime.model)
    assert fast.head_weight is not None  # SmolLM2 has a plain bias-free linear head
    plain = HFBackend(model.runtime.model)
    plain.head_weight = None  # the model's own forward
    prompt = prompt_ids(model)
    assert torch.allclose(fast.prefill_logits(prompt[:-1]), plain.prefill_logits(prompt[:-1]), atol=LOGIT_TOLERANCE, rtol=0)
    tree = DraftTree(np.concatenate([[prompt[-1]], sample_tree().tokens[1:]]), sample_tree().parents)
    assert torch.allclose(fast.tree_logits(tree), plain.tree_logits(tree), atol=LOGIT_TOLERANCE, rtol=0)

    # a logit transform the head shortcut would miss, on a tiny model of its own (the shared one stays as it is)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    tiny = LlamaForCausalLM(config).eval()
    assert output_head_weight(tiny) is not None
    config.logit_scale = 0.5
    assert output_head_weight(tiny) is None

def test_lean_cache_and_mask_give_the_same_logits_as_dynamic_cache(model) -> None:
    """The preallocated cache and persistent mask change where numbers live, not what is computed:
    over 30 random trees with random accepted paths, every logit equals DynamicCache's bit for bit."""
    lean, dynamic = HFBackend(model.runtime.model, lean=True), HFBackend(model.runtime.model, lean=False)
    assert lean.lean and not dynamic.lean
    prompt = prompt_ids(model)
    assert torch.equal(lean.prefill_logits(prompt[:-1]), dynamic.prefill_logits(prompt[:-1]))
    rng = np.random.default_rng(0)
    for step in range(30):
        n = int(rng.integers(1, 12))
        parents = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)])
        tree = DraftTree(np.concatenate([[prompt[-1] if step == 0 else 100 + step], rng.integers(0, 1000, n - 1)]), parents)
        assert torch.equal(lean.tree_logits(tree), dynamic.tree_logits(tree)), step
        accepted = tree.path_to(int(rng.integers(0, n)))
        lean.commit(accepted)
        dynamic.commit(accepted)
        assert lean.cache_len == dynamic.cache_len
    lean.release()  # the positions stay for a next prompt that shares their prefix
    assert lean.cache_len == dynamic.cache_len and lean.cached_prefix(prompt) == dynamic.cached_prefix(prompt) > 0
    assert torch.equal(lean.prefill_logits(prompt), dynamic.prefill_logits(prompt))  # both reuse the same prefix
    lean.reset()
    assert lean.cache_len == 0 and lean.cached_prefix(prompt) == 0


def test_lean_cache_grows_past_its_first_capacity(model) -> None:
    backend = HFBackend(model.runtime.model, lean=True)
    prompt = np.arange(100, 1300)  # longer than the first allocation of 1024 positions
    logits = backend.prefill_logits(prompt)
    assert backend.cache.layers[0].capacity >= 1200 and backend.cache_len == 1200
    reference = HFBackend(model.runtime.model, lean=False).prefill_logits(prompt)
    assert torch.equal(logits, reference)
