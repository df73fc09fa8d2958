"""Hardware-aware draft budget: size each step's tree from measured cost and predicted acceptance.

A tree is worth verifying only while the tokens it is expected to add pay for the extra
forward-pass time it costs. Three parts:

* ``LatencyProfile``: verify-step milliseconds as a function of tree size, measured once
  per model / device / dtype / thread count and cached as JSON.
* ``AcceptanceCalibrator``: maps a drafter's node scores to the probability that the node
  is accepted, learned online from what the verifier accepted (per score bin and depth).
* ``choose_nodes``: takes nodes in decreasing calibrated acceptance (DySpec's greedy
  expansion) and keeps the prefix that maximises expected tokens per millisecond; when no
  prefix beats the root alone, the step is plain decoding.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adaspec.tree import DraftTree

PROFILE_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # tree sizes measured by default


@dataclass(frozen=True)
class LatencyProfile:
    """Verify-step cost against tree size.

    Attributes:
        sizes: tree sizes measured, increasing, starting at 1.
        ms: the median milliseconds of one tree forward at each size.
        key: what it was measured for (model, device, dtype, threads).
    """

    sizes: tuple[int, ...]
    ms: tuple[float, ...]
    key: str = ""

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.ms) or not self.sizes or self.sizes[0] != 1:
            raise ValueError("a latency profile needs one time per size, starting at size 1")
        if list(self.sizes) != sorted(set(self.sizes)) or min(self.ms) <= 0:
            raise ValueError("profile sizes must increase and times must be positive")

    @property
    def max_size(self) -> int:
        """The largest size measured (the most nodes the chooser will consider)."""
        return self.sizes[-1]

    def cost(self, sizes: np.ndarray) -> np.ndarray:
        """``[m]`` float64 milliseconds for trees of ``sizes`` nodes (linear between measured sizes).

        Costs are made non-decreasing first, so measurement noise never makes a bigger tree look cheaper.
        """
        monotone = np.maximum.accumulate(np.asarray(self.ms, dtype=np.float64))  # [s]
        return np.interp(sizes, np.asarray(self.sizes, dtype=np.float64), monotone)

    def save(self, path: Path) -> None:
        """Writes the profile as JSON (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(asdict(self), indent=1))
        os.replace(staging, path)

    @classmethod
    def load(cls, path: Path) -> LatencyProfile:
        """Reads a profile written by ``save``.

        Raises:
            ValueError: if the file is not a latency profile.
        """
        try:
            data = json.loads(Path(path).read_text())
            return cls(tuple(int(s) for s in data["sizes"]), tuple(float(m) for m in data["ms"]), str(data.get("key", "")))
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a latency profile: {error}") from None


def profile_key(model_name: str, device: torch.device, dtype: torch.dtype) -> str:
    """What a profile depends on: model, device, dtype and thread count."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_name).name or model_name)
    return f"{name}-{device.type}-{str(dtype).removeprefix('torch.')}-t{torch.get_num_threads()}"


def measure_profile(backend, vocab_size: int, key: str, sizes: tuple[int, ...] = PROFILE_SIZES,
                    context: int = 256, repeats: int = 5) -> LatencyProfile:
    """Times tree forwards of each size after a ``context``-token prompt (median of ``repeats``).

    Args:
        backend: an ``HFBackend``.
        vocab_size: the model's vocabulary size (random token ids are drawn below it).
        key: recorded in the profile.
        sizes: tree sizes to time.
        context: prompt length before the trees.
        repeats: timings per size.

    Returns:
        The profile. The backend's cache is left holding the dummy prompt.
    """
    rng = np.random.default_rng(0)
    backend.prefill(rng.integers(0, vocab_size, size=context))
    start = backend.cache_len
    ms = []
    for size in sizes:
        tree = DraftTree(rng.integers(0, vocab_size, size=size), np.arange(-1, size - 1))  # a chain: cost depends on size only
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            tick = time.perf_counter()
            backend.forward_tree(tree)
            if backend.device.type == "cuda":
                torch.cuda.synchronize(backend.device)
            times.append(time.perf_counter() - tick)
            backend.commit(start, np.zeros(0, dtype=np.int64))  # drop the tree again
        ms.append(1000 * float(np.median(times[1:])))
    return LatencyProfile(tuple(sizes), tuple(ms), key)


class AcceptanceCalibrator:
    """Online map from a node's score (and depth) to the chance the verifier accepts it.

    Scores are binned; each (depth, bin) cell keeps accepted / proposed counts, starting
    from ``prior_strength`` pseudo-observations at the bin's mean score, so an unseen cell
    trusts the drafter and a seen one trusts the evidence.

    Args:
        bins: score bin edges, increasing, from 0 to above 1.
        max_depth: depths beyond this share the last depth's cells.
        prior_strength: pseudo-observations behind the drafter's own score.
    """

    def __init__(self, bins: tuple[float, ...] = (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0001),
                 max_depth: int = 8, prior_strength: float = 4.0) -> None:
        self.edges = np.asarray(bins, dtype=np.float64)  # [b + 1]
        self.max_depth = max_depth
        self.prior_strength = prior_strength
        centres = (self.edges[:-1] + np.minimum(self.edges[1:], 1.0)) / 2  # [b]
        self.prior = np.tile(centres, (max_depth, 1))  # [D, b]
        self.accepted = np.zeros((max_depth, centres.size))  # [D, b]
        self.proposed = np.zeros((max_depth, centres.size))  # [D, b]

    def _cells(self, scores: np.ndarray, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.clip(depths, 1, self.max_depth) - 1  # [n]
        cols = np.clip(np.searchsorted(self.edges, scores, side="right") - 1, 0, self.edges.size - 2)  # [n]
        return rows, cols

    def estimate(self, tree: DraftTree) -> np.ndarray:
        """``[n]`` float64 calibrated acceptance per node (root 1.0), never above its parent's."""
        scores = tree.scores if tree.scores is not None else 0.5 ** tree.depth.astype(np.float64)  # [n]
        rows, cols = self._cells(scores, tree.depth)
        k = self.prior_strength
        estimate = (self.accepted[rows, cols] + k * self.prior[rows, cols]) / (self.proposed[rows, cols] + k)  # [n]
        estimate[0] = 1.0
        for node in range(1, tree.size):  # a node is accepted only with its parent
            estimate[node] = min(estimate[node], estimate[tree.parents[node]])
        return estimate

    def update(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Counts, for every non-root node, whether it was on the accepted path."""
        if tree.size < 2:
            return
        scores = tree.scores if tree.scores is not None else 0.5 ** tree.depth.astype(np.float64)
        rows, cols = self._cells(scores[1:], tree.depth[1:])
        hit = np.zeros(tree.size)
        hit[accepted] = 1.0
        np.add.at(self.proposed, (rows, cols), 1.0)
        np.add.at(self.accepted, (rows, cols), hit[1:])


def choose_nodes(acceptance: np.ndarray, profile: LatencyProfile) -> np.ndarray:
    """The nodes worth verifying: the best prefix of the nodes in decreasing acceptance.

    Expected tokens of a step that verifies m draft nodes are 1 (the root's next token)
    plus their acceptance probabilities; its cost is ``profile.cost(m + 1)``. The m with
    the most expected tokens per millisecond wins; m = 0 is plain decoding.

    Args:
        acceptance: ``[n]`` float64 per node (root first), each at most its parent's.
        profile: the verify cost curve.

    Returns:
        ``[m + 1]`` int64 node indices to keep, increasing, root first; each node's parent
        is among them.
    """
    order = np.argsort(-acceptance[1:], kind="stable") + 1  # [n-1] parents (smaller index, >= acceptance) come first
    order = order[: profile.max_size - 1]
    expected = 1.0 + np.concatenate(([0.0], np.cumsum(acceptance[order])))  # [m+1] for m = 0..
    rate = expected / profile.cost(np.arange(1, expected.size + 1))
    best = int(np.argmax(rate))
    return np.sort(np.concatenate(([0], order[:best]))).astype(np.int64)


def default_profile_path(key: str) -> Path:
    """Where the profile for ``key`` is cached: ``$ADASPEC_CACHE/profiles`` or ``~/.cache/adaspec/profiles``."""
    from adaspec.loading import cache_root

    return cache_root() / "profiles" / f"{key}.json"


def load_or_measure_profile(model, backend, profile: LatencyProfile | str | Path | None = None) -> LatencyProfile:
    """The verify-cost profile to size trees with.

    Args:
        model: the ``LoadedModel``.
        backend: its ``HFBackend`` (used to measure).
        profile: a profile, a profile file, or None for the cached one (measured and cached
            on first use, which takes a few seconds).

    Raises:
        AdaspecError: if a given profile file cannot be read.
    """
    from adaspec.errors import AdaspecError

    if isinstance(profile, LatencyProfile):
        return profile
    if profile is not None:
        try:
            return LatencyProfile.load(Path(profile))
        except ValueError as error:
            raise AdaspecError(str(error)) from None
    key = profile_key(model.name, backend.device, backend.dtype)
    path = default_profile_path(key)
    if path.exists():
        try:
            return LatencyProfile.load(path)
        except ValueError:
            pass  # a damaged cache entry is measured again
    measured = measure_profile(backend, model.vocab_size, key)
    measured.save(path)
    return measured
