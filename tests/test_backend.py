"""The HF backend on the real model: tree forward and KV compaction against sequential decoding."""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache

from adaspec.backends import HFBackend
from adaspec.tree import DraftTree

# float32 logits of one path computed two ways (one tree forward vs a fresh full forward)
# differ by summation order only; measured max |diff| here is ~4e-5.
LOGIT_TOLERANCE = 2e-4
CACHE_TOLERANCE = 1e-4


def prompt_ids(model, text: str = "The quick brown fox jumps over the lazy dog because") -> np.ndarray:
    return np.array(model.tokenizer(text).input_ids, dtype=np.int64)


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
    return model.model(torch.tensor([ids])).logits[0, -1].float()


def test_tree_forward_matches_each_path_run_sequentially(model) -> None:
    backend = HFBackend(model.model)
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


def test_compaction_leaves_the_cache_of_plain_decoding(model) -> None:
    backend = HFBackend(model.model)
    prompt = prompt_ids(model)
    backend.prefill_logits(prompt[:-1])
    start = backend.cache_len
    tree = sample_tree()
    tree = DraftTree(np.concatenate([[prompt[-1]], tree.tokens[1:]]), tree.parents)
    backend.tree_logits(tree)
    accepted = tree.path_to(7)  # [0, 1, 3, 4, 7]: needs moving (node 7 sits after 5 and 6)
    backend.commit(accepted)
    assert backend.cache_len == start + accepted.size

    reference = DynamicCache(config=model.model.config)
    ids = prompt[:-1].tolist() + tree.tokens[accepted].tolist()
    with torch.inference_mode():
        model.model(torch.tensor([ids]), past_key_values=reference, use_cache=True)
    for ours, theirs in zip(backend.cache.layers, reference.layers):
        assert ours.keys.shape == theirs.keys.shape
        assert torch.allclose(ours.keys, theirs.keys, atol=CACHE_TOLERANCE, rtol=0)
        assert torch.allclose(ours.values, theirs.values, atol=CACHE_TOLERANCE, rtol=0)

    # decoding continues correctly from the compacted cache
    next_logits = backend.tree_logits(DraftTree.root_only(11))[0]
    assert torch.allclose(next_logits, sequential_logits(model, ids + [11]), atol=LOGIT_TOLERANCE, rtol=0)


def test_prefill_in_chunks_matches_one_pass(model) -> None:
    prompt = prompt_ids(model, "One two three four five six seven eight nine ten eleven twelve.")
    whole = HFBackend(model.model).prefill_logits(prompt)
    chunked = HFBackend(model.model, prefill_chunk=5).prefill_logits(prompt)
    assert torch.allclose(whole, chunked, atol=LOGIT_TOLERANCE, rtol=0)


def test_own_output_head_matches_the_models_forward_and_falls_back_when_unsafe(model) -> None:
    from adaspec.backends.hf import output_head_weight

    fast = HFBackend(model.model)
    assert fast.head_weight is not None  # SmolLM2 has a plain bias-free linear head
    plain = HFBackend(model.model)
    plain.head_weight = None  # the model's own forward
    prompt = prompt_ids(model)
    assert torch.allclose(fast.prefill_logits(prompt[:-1]), plain.prefill_logits(prompt[:-1]), atol=LOGIT_TOLERANCE, rtol=0)
    tree = DraftTree(np.concatenate([[prompt[-1]], sample_tree().tokens[1:]]), sample_tree().parents)
    assert torch.allclose(fast.tree_logits(tree), plain.tree_logits(tree), atol=LOGIT_TOLERANCE, rtol=0)

    model.model.config.logit_scale = 0.5  # a logit transform the head shortcut would miss
    try:
        assert output_head_weight(model.model) is None
    finally:
        del model.model.config.logit_scale
