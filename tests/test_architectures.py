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
    import transformers

    torch.manual_seed(0)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SIZES)).eval()
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**SIZES)).eval()
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
    config = getattr(transformers, config_class)(**SIZES, **extra)
    return getattr(transformers, model_class)(config).eval()


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3", "mistral", "phi3", "gpt_neox", "qwen2_moe", "gemma2",
                                    "gemma3_text"])
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


def test_sliding_window_models_get_their_context_capped_at_the_window_and_others_are_refused() -> None:
    from transformers import Gemma3TextConfig, MistralConfig

    from adaspec.errors import AdaspecError
    from adaspec.loading import attention_window

    assert attention_window(MistralConfig(sliding_window=64)) == 64
    assert attention_window(MistralConfig(sliding_window=None)) is None
    assert attention_window(Qwen2Config(**SIZES)) is None  # use_sliding_window defaults to off
    assert attention_window(LlamaConfig(**SIZES)) is None
    assert attention_window(Gemma3TextConfig(sliding_window=32, num_hidden_layers=6)) == 32
    hybrid = Qwen2Config(**SIZES)
    hybrid.layer_types = ["full_attention", "linear_attention"]
    with pytest.raises(AdaspecError, match="linear_attention"):
        attention_window(hybrid)


def test_a_sliding_window_model_loaded_from_a_directory_decodes_like_generate(model, tmp_path) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    import adaspec

    torch.manual_seed(0)
    config = MistralConfig(**{**SIZES, "vocab_size": model.vocab_size, "max_position_embeddings": 512}, sliding_window=40)
    tiny_mistral = MistralForCausalLM(config).eval()
    tiny_mistral.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    loaded = adaspec.load(str(tmp_path))
    assert loaded.max_context == 40  # capped at the window: within it, a tree's mask equals the sliding one
    prompt = list(range(100, 116))  # [16]
    room = loaded.max_context - len(prompt)
    with torch.inference_mode():
        expected = tiny_mistral.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                         do_sample=False, max_new_tokens=room, eos_token_id=sorted(loaded.eos_token_ids),
                                         pad_token_id=0)[0, len(prompt):].tolist()
    for drafter in ("none", "lookup", "hybrid"):
        got = adaspec.Generator(loaded, drafter=drafter).generate(prompt, max_new_tokens=1000)
        assert got.token_ids == expected, drafter
