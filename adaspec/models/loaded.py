"""What loading a model gives the engine (``LoadedModel``), and what a runtime's loader is told
(``LoadOptions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from adaspec.backends.base import Backend, Runtime


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model, for every runtime (each reads what applies to it).

    Attributes:
        device: where to run it (checked to be present).
        dtype: ``float32``, ``bfloat16`` or ``float16``; ``hf`` only (llama.cpp runs the GGUF's own types).
        attn_implementation: transformers' attention backend; ``hf`` only.
        exact: ``llama.cpp`` only: True for batch-invariant chain verification, False for trees
            on the default kernels, None for exact whenever the build allows it.
    """

    device: torch.device = torch.device("cpu")
    dtype: str = "float32"
    attn_implementation: str | None = None
    exact: bool | None = None


@dataclass
class LoadedModel:
    """A model ready for decoding, with what the engine needs to know about it.

    Attributes:
        tokenizer: its tokenizer (for llama.cpp, the GGUF's own).
        name: where it came from (path or "embedded SmolLM2-135M-Instruct").
        max_context: the most positions the model supports (prompt + output).
        eos_token_ids: token ids that end generation.
        vocab_size: rows of the output layer (the logits' last dimension).
        runtime: what runs it: makes its backends (one per request), says whether they can
            verify several requests in one forward, and holds the runtime's defaults and limits.
    """

    tokenizer: PreTrainedTokenizerBase
    name: str
    max_context: int
    eos_token_ids: frozenset[int]
    vocab_size: int
    runtime: Runtime

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return torch.device(self.runtime.device)

    def new_backend(self) -> Backend:
        """A backend of this model's runtime, with a KV cache of its own."""
        return self.runtime.new_backend()
