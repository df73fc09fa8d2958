"""What adaspec reads off a transformers model: its dtype, its context limit (positions, and the
sliding window tree verification must stay within) and its end-of-sequence tokens."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from adaspec.errors import AdaspecError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Hides transformers' progress bars for a sub-second step, then restores the setting."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Checks a dtype name against the device.

    Args:
        dtype: "float32", "bfloat16" or "float16".
        device: where the model will run.

    Returns:
        The torch dtype.

    Raises:
        AdaspecError: for an unknown name or a dtype the device cannot run.
    """
    if dtype not in DTYPES:
        raise AdaspecError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if device.type == "cpu" and dtype == "float16":
        raise AdaspecError("dtype float16 is not supported on cpu; use float32 or bfloat16")
    return DTYPES[dtype]


def position_limit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The model's maximum number of positions (config first, then the tokenizer, else 2048).

    Args:
        model: the loaded model.
        tokenizer: its tokenizer.

    Returns:
        The positions the model was built for.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if not (isinstance(limit, int) and limit > 0):
        limit = getattr(tokenizer, "model_max_length", None)
        if not (isinstance(limit, int) and 0 < limit < 10**7):
            limit = 2048
    return limit


def context_limit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The most tokens prompt and output may hold together: the model's positions, capped at its
    sliding attention window if it has one (see ``attention_window``).

    Args:
        model: the loaded model.
        tokenizer: its tokenizer.

    Returns:
        The context limit in tokens.
    """
    limit = position_limit(model, tokenizer)
    window = attention_window(model.config)
    return limit if window is None else min(limit, window)


def attention_window(config) -> int | None:
    """The sliding attention window tree verification must stay within, if the model has one.

    A tree's 4-D mask is handed to every layer as it is, so a sliding-window layer would see
    tokens its window excludes once the context grows past it. Within the window the two
    masks are the same, so the context is capped there: exact, if shorter.

    Args:
        config: the model's config.

    Returns:
        The window in tokens, or None for a model whose layers are all full attention.

    Raises:
        AdaspecError: for layer kinds other than full and sliding attention (chunked or linear
            attention, state-space layers), which tree verification does not implement.
    """
    text = config.get_text_config(decoder=True)
    window = getattr(text, "sliding_window", None)
    kinds = set(getattr(text, "layer_types", None) or [])
    unknown = kinds - {"full_attention", "sliding_attention"}
    if unknown:
        raise AdaspecError(f"{type(config).__name__} has {', '.join(sorted(unknown))} layers, which adaspec's "
                           "tree verification does not implement")
    slides = "sliding_attention" in kinds or (not kinds and window and getattr(text, "use_sliding_window", True))
    return int(window) if slides and window else None


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every token id that ends generation (generation config and tokenizer).

    Args:
        model: the loaded model.
        tokenizer: its tokenizer.

    Returns:
        The end-of-sequence token ids.
    """
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
