"""Sampling settings and the target distribution they define.

The target distribution at a position is the model's next-token distribution after, in
this order, temperature, top-k and top-p (the order transformers' ``generate`` applies
them). Speculative sampling must reproduce exactly this distribution (``verify.accept_path`` over tokens from ``sample_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adaspec.errors import AdaspecError

GREEDY_BELOW = 1e-5  # a temperature under this is greedy (as vLLM's sampling epsilon): dividing by it overflows


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token.

    Attributes:
        temperature: 0 (or anything below ``GREEDY_BELOW``) means greedy (argmax); otherwise
            logits are divided by it.
        top_k: keep only the k most likely tokens (0 = all).
        top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1 = all).
        seed: seeds the request's own random generator (None: a fresh random seed).

    Raises:
        AdaspecError: for a negative temperature or top_k, or top_p outside (0, 1].
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise AdaspecError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise AdaspecError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise AdaspecError(f"top_p must lie in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """True when tokens are the argmax (a temperature of 0, or below ``GREEDY_BELOW``)."""
        return self.temperature < GREEDY_BELOW

    def make_generator(self) -> torch.Generator:
        """A CPU random generator for one request: seeded by ``seed``, else randomly."""
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator

    def uniforms(self, count: int) -> np.ndarray:
        """The request's uniform numbers, one per output position, drawn up front from its seed.

        Args:
            count: output positions.

        Returns:
            ``[count]`` float64 in [0, 1).
        """
        return torch.rand(count, generator=self.make_generator(), dtype=torch.float64).numpy()


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution to sample from at each position.

    Args:
        logits: ``[n, V]`` raw model logits.
        params: the sampling settings (temperature > 0).

    Returns:
        ``[n, V]`` float64 probabilities on the logits' device; each row sums to 1.
    """
    scaled = logits.double() / params.temperature  # [n, V]
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[:, -1:]  # [n, 1] the k-th largest logit
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        ascending, order = torch.sort(scaled, dim=-1)  # [n, V] each
        tail_mass = torch.softmax(ascending, dim=-1).cumsum(dim=-1)  # [n, V] mass up to and including each
        drop = tail_mass <= 1.0 - params.top_p  # [n, V] the unlikely tail that top_p leaves out
        drop[:, -1] = False  # always keep the most likely token
        scaled = scaled.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.softmax(scaled, dim=-1)


def sample_tokens(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse-CDF sampling with the given uniform numbers.

    Args:
        probs: ``[n, V]`` float64 target distributions (rows sum to 1).
        uniforms: ``[n]`` float64 numbers in [0, 1), one per row, on the same device.

    Returns:
        ``[n]`` int64 on the same device: per row, the first token whose cumulative probability
        exceeds its uniform (never a zero-probability token).
    """
    cdf = probs.cumsum(dim=-1)  # [n, V]
    thresholds = (uniforms * cdf[:, -1]).unsqueeze(-1)  # [n, 1]
    picked = torch.searchsorted(cdf, thresholds, right=True).squeeze(-1)  # [n]
    return picked.clamp_(max=probs.shape[-1] - 1)


def target_probs_host(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """``target_probs`` in numpy, for runtimes whose logits are host memory (llama.cpp): the same
    temperature, top-k and top-p, in the same order, without torch in the step.

    Args:
        logits: ``[n, V]`` raw model logits.
        params: the sampling settings (temperature > 0).

    Returns:
        ``[n, V]`` float64 probabilities; each row sums to 1.
    """
    scaled = logits.astype(np.float64) / params.temperature  # [n, V]
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -params.top_k, axis=-1)[:, -params.top_k][:, None]  # [n, 1] the k-th largest
        scaled = np.where(scaled < kth, -np.inf, scaled)
    if params.top_p < 1.0:
        order = np.argsort(scaled, axis=-1, kind="stable")  # [n, V] ascending
        ascending = np.take_along_axis(scaled, order, axis=-1)
        tail_mass = np.cumsum(softmax_host(ascending), axis=-1)  # [n, V] mass up to and including each
        drop = tail_mass <= 1.0 - params.top_p  # [n, V] the unlikely tail that top_p leaves out
        drop[:, -1] = False  # always keep the most likely token
        dropped = np.zeros_like(drop)
        np.put_along_axis(dropped, order, drop, axis=-1)
        scaled = np.where(dropped, -np.inf, scaled)
    return softmax_host(scaled)


def softmax_host(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[n, V]`` float64 values (``-inf`` allowed, not a whole row of them)."""
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sample_tokens_host(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """``sample_tokens`` in numpy: inverse-CDF sampling, one token per row.

    Args:
        probs: ``[n, V]`` float64 target distributions.
        uniforms: ``[n]`` float64 numbers in [0, 1).

    Returns:
        ``[n]`` int64 tokens (never a zero-probability one).
    """
    cdf = np.cumsum(probs, axis=-1)  # [n, V]
    picked = np.array([np.searchsorted(row, u * row[-1], side="right") for row, u in zip(cdf, uniforms)],
                      dtype=np.int64)  # [n]
    return np.minimum(picked, probs.shape[-1] - 1)
