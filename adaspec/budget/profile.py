"""The verify step's cost as a function of tree size, measured once per backend (runtime, model,
device, dtype, thread count, build) and cached as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from adaspec.atomic import atomic_write_text
from adaspec.backends.base import Backend, Pick
from adaspec.models.cache import cache_root
from adaspec.sampling import SamplingParams
from adaspec.tree import DraftTree

PROFILE_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # tree sizes measured by default


@dataclass(frozen=True)
class LatencyProfile:
    """Verify-step cost against tree size.

    Attributes:
        sizes: tree sizes measured, increasing, starting at 1.
        ms: the median milliseconds of one tree forward at each size.
        key: what it was measured for (``Backend.profile_key``).
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

    def speedup_if_all_accepted(self) -> np.ndarray:
        """What a chain of each measured size gains when every node is accepted: ``n`` nodes give
        ``n`` tokens (their ``n - 1`` drafts and the model's next) for one forward of ``n`` rows,
        against ``n`` plain steps. No tree of ``n`` nodes accepts more than its deepest chain, so
        no drafter gains more at that size.

        Returns:
            ``[k]`` float64 speedups over plain decoding, one per measured size (1.0 at size 1).
        """
        return self.sizes_array * self.ms_array[0] / self.ms_array

    def ceiling(self) -> tuple[float, int]:
        """The most speculation can gain on this cost curve, drafting time aside: the best
        ``speedup_if_all_accepted``, and the size that reaches it.

        Returns:
            (speedup over plain decoding, tree size in nodes).
        """
        speedups = self.speedup_if_all_accepted()  # [k]
        best = int(np.argmax(speedups))
        return float(speedups[best]), self.sizes[best]

    def cost(self, sizes: np.ndarray) -> np.ndarray:
        """The time of one tree forward, linear between measured sizes.

        Measured times are used as they are, even where a bigger tree costs less: on CPUs the
        BLAS kernel chosen depends on the row count (here 3 rows cost more than 4-8), and the
        chooser should know it.

        Args:
            sizes: ``[m]`` tree sizes in nodes.

        Returns:
            ``[m]`` float64 milliseconds.
        """
        return np.interp(sizes, self.sizes_array, self.ms_array)

    @cached_property
    def sizes_array(self) -> np.ndarray:
        """``[k]`` float64 the sizes measured."""
        return np.asarray(self.sizes, dtype=np.float64)

    @cached_property
    def ms_array(self) -> np.ndarray:
        """``[k]`` float64 their milliseconds."""
        return np.asarray(self.ms, dtype=np.float64)

    def save(self, path: Path) -> None:
        """Writes the profile as JSON (atomically).

        Args:
            path: the file to write; its folder is created if missing.
        """
        atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> LatencyProfile:
        """Reads a profile written by ``save``.

        Args:
            path: the JSON file.

        Returns:
            The profile.

        Raises:
            ValueError: if the file is not a latency profile.
        """
        try:
            data = json.loads(Path(path).read_text())
            return cls(tuple(int(s) for s in data["sizes"]), tuple(float(m) for m in data["ms"]), str(data.get("key", "")))
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a latency profile: {error}") from None


def measure_profile(backend: Backend, sizes: tuple[int, ...] = PROFILE_SIZES, context: int = 256,
                    repeats: int = 7) -> LatencyProfile:
    """Times verify steps of each size after a ``context``-token prompt (median of ``repeats``).

    Args:
        backend: the runtime to measure.
        sizes: tree sizes to time.
        context: prompt length before the trees.
        repeats: timings per size.

    Returns:
        The profile, keyed by ``backend.profile_key``. The backend's request is released.
    """
    rng = np.random.default_rng(0)
    greedy = Pick(SamplingParams(), None, 0)
    backend.prefill(rng.integers(0, backend.vocab_size, size=context), greedy)
    ms = []
    try:
        for size in sizes:
            tree = DraftTree(rng.integers(0, backend.vocab_size, size=size), np.arange(-1, size - 1))  # a chain: cost depends on size only
            times = []
            for _ in range(repeats + 1):  # the first is a warm-up
                tick = time.perf_counter()
                backend.verify(tree, greedy)
                backend.synchronize()
                times.append(time.perf_counter() - tick)
                backend.rollback()  # drop the tree again
            ms.append(1000 * float(np.median(times[1:])))
    finally:
        backend.release()
    return LatencyProfile(tuple(sizes), tuple(ms), backend.profile_key)


def default_profile_path(key: str) -> Path:
    """Where the profile for ``key`` is cached.

    Args:
        key: a backend's ``profile_key``.

    Returns:
        A JSON path under ``$ADASPEC_CACHE/profiles`` or ``~/.cache/adaspec/profiles``.
    """
    return cache_root() / "profiles" / f"{key}.json"


def load_or_measure_profile(backend: Backend, profile: LatencyProfile | str | Path | None = None,
                            max_nodes: int = PROFILE_SIZES[-1]) -> LatencyProfile:
    """The verify-cost profile to size trees with.

    Args:
        backend: the runtime (used to measure, and its ``profile_key`` names the cache file).
        profile: a profile, a profile file, or None for the cached one (measured and cached
            on first use, which takes a few seconds).
        max_nodes: the most nodes the runtime verifies at once: a measurement stops there.

    Returns:
        The profile.

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
    path = default_profile_path(backend.profile_key)
    if path.exists():
        try:
            return LatencyProfile.load(path)
        except ValueError:
            pass  # a damaged cache entry is measured again
    measured = measure_profile(backend, tuple(size for size in PROFILE_SIZES if size <= max_nodes))
    measured.save(path)
    return measured
