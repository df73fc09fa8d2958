"""Tree attention and KV compaction on other model families (real transformers code).

The embedded model is Llama-family. Here tiny, randomly initialised Qwen2 (q/k/v biases) and
Llama models, both with grouped-query attention, run through the same backend checks:
logits of a tree forward equal each path run on its own, and a compacted cache equals the
cache of plain decoding of the accepted path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from adaspec.backends import HFBackend
from adaspec.tree import DraftTree

TOLERANCE = 1e-4
SIZES = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def tiny(family: str):
    torch.manual_seed(0)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SIZES)).eval()
    return LlamaForCausalLM(LlamaConfig(**SIZES)).eval()


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("family", ["qwen2", "llama"])
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
        model(torch.tensor([prompt.tolist() + tree.tokens[accepted].tolist()]), past_key_values=reference, use_cache=True)
    for ours, theirs in zip(backend.cache.layers, reference.layers):
        length = ours.get_seq_length()  # a preallocated layer holds spare positions after these
        assert torch.allclose(ours.keys[:, :, :length], theirs.keys, atol=TOLERANCE, rtol=0)
        assert torch.allclose(ours.values[:, :, :length], theirs.values, atol=TOLERANCE, rtol=0)
