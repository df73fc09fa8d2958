"""Drafters: pure token-id logic that guesses the model's next tokens as a tree.

A drafter is chosen by a *spec*: a registry name, optionally followed by ``:`` and
comma-separated overrides of its config, e.g. ``aded:builder=mcts,topk_rate=0``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from adaspec.drafters.aded import AdedConfig, AdedDrafter
from adaspec.drafters.base import Drafter, DraftRequest, StepFeedback
from adaspec.drafters.hybrid import HybridConfig, HybridDrafter
from adaspec.drafters.lookup import LookupConfig, PromptLookupDrafter
from adaspec.drafters.plain import PlainDrafter
from adaspec.drafters.recycling import RecyclingConfig, TokenRecyclingDrafter
from adaspec.drafters.suffix import SuffixConfig, SuffixDrafter
from adaspec.errors import AdaspecError

# name -> factory taking the model's vocabulary size and a config (None for drafters without one)
DRAFTER_FACTORIES: dict[str, Callable[[int, Any], Drafter]] = {
    "none": lambda vocab_size, config: PlainDrafter(),
    "lookup": lambda vocab_size, config: PromptLookupDrafter(config),
    "recycling": lambda vocab_size, config: TokenRecyclingDrafter(vocab_size, config),
    "aded": lambda vocab_size, config: AdedDrafter(vocab_size, config),
    "hybrid": lambda vocab_size, config: make_hybrid(vocab_size, config or HybridConfig()),
    "suffix": lambda vocab_size, config: SuffixDrafter(config or SuffixConfig(), vocab_size),
}
# the drafters whose tunables can be overridden in a spec
DRAFTER_CONFIGS: dict[str, type] = {
    "lookup": LookupConfig, "recycling": RecyclingConfig, "aded": AdedConfig, "hybrid": HybridConfig,
    "suffix": SuffixConfig,
}


def make_hybrid(vocab_size: int, config: HybridConfig) -> HybridDrafter:
    """The hybrid drafter: a copying drafter first (prompt lookup, or suffix decoding over the
    context and earlier requests), the learned drafter fills the rest.

    A context match of ``min_ngram``+ tokens takes what it finds. Measured better than a
    half/half split or 1-token matches (README, Benchmark).

    Args:
        vocab_size: the model's vocabulary size.
        config: which learned drafter and the lookup's shortest match.

    Returns:
        The drafter.
    """
    learned: Drafter = AdedDrafter(vocab_size) if config.learned == "aded" else TokenRecyclingDrafter(vocab_size)
    copier: Drafter = (PromptLookupDrafter(LookupConfig(min_ngram=config.min_ngram)) if config.copy == "lookup"
                       else SuffixDrafter(SuffixConfig(min_match=config.min_ngram), vocab_size))
    return HybridDrafter([copier, learned], shares=[1.0, 1.0])


def drafter_names() -> list[str]:
    """The registry names ``make_drafter`` accepts (each may carry ``:key=value`` overrides)."""
    return list(DRAFTER_FACTORIES)


def _convert(name: str, key: str, text: str, default: Any) -> Any:
    """Parses one override value to the type of the field's default."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise AdaspecError(f"drafter {name!r}: {key} must be true or false, got {text!r}")
        return text.lower() in ("true", "1")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise AdaspecError(f"drafter {name!r}: {key} must be a {type(default).__name__}, got {text!r}") from None
    if default is None or isinstance(default, str):
        return text
    raise AdaspecError(f"drafter {name!r}: {key} cannot be set from a spec")


def parse_drafter_spec(spec: str) -> tuple[str, Any]:
    """Splits ``NAME[:key=value,...]`` into the name and its config.

    Args:
        spec: the drafter spec.

    Returns:
        The registry name and its config object (None for the name's defaults or a
        drafter without a config).

    Raises:
        AdaspecError: for an unknown name, an unknown key, or a bad value.
    """
    name, _, options = spec.partition(":")
    if name not in DRAFTER_FACTORIES:
        raise AdaspecError(f"unknown drafter {name!r}; choose one of: {', '.join(DRAFTER_FACTORIES)}")
    if not options:
        return name, None
    config_type = DRAFTER_CONFIGS.get(name)
    if config_type is None:
        raise AdaspecError(f"drafter {name!r} takes no options")
    defaults = {f.name: f.default for f in dataclasses.fields(config_type)}
    overrides: dict[str, Any] = {}
    for item in options.split(","):
        key, eq, text = item.partition("=")
        if key not in defaults or not eq:
            raise AdaspecError(f"drafter {name!r}: expected key=value with a key from {', '.join(defaults)}, got {item!r}")
        overrides[key] = _convert(name, key, text, defaults[key])
    try:
        return name, config_type(**overrides)
    except ValueError as error:
        raise AdaspecError(f"drafter {name!r}: {error}") from None


def make_drafter(spec: str, vocab_size: int) -> Drafter:
    """Builds a drafter from a spec (``aded``, ``aded:builder=mcts``...).

    Args:
        spec: a name from ``drafter_names()``, optionally with ``:key=value,...`` overrides.
        vocab_size: the model's vocabulary size.

    Returns:
        A fresh drafter.

    Raises:
        AdaspecError: for an unknown name or a bad override (including an unreadable prior file).
    """
    name, config = parse_drafter_spec(spec)
    try:
        return DRAFTER_FACTORIES[name](vocab_size, config)
    except ValueError as error:
        raise AdaspecError(f"drafter {name!r}: {error}") from None


__all__ = [
    "Drafter",
    "DraftRequest",
    "StepFeedback",
    "PlainDrafter",
    "AdedDrafter",
    "AdedConfig",
    "HybridDrafter",
    "HybridConfig",
    "PromptLookupDrafter",
    "LookupConfig",
    "TokenRecyclingDrafter",
    "RecyclingConfig",
    "SuffixDrafter",
    "SuffixConfig",
    "make_drafter",
    "parse_drafter_spec",
    "drafter_names",
]
