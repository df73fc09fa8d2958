"""Matmuls whose per-row result does not depend on what else is in the call.

A BLAS picks its kernel by the shape of the call, so the same input row can come out with
different bits when it is multiplied alone, in a call of 12 rows, or at another offset of a
call of 40 (MKL on an AVX-512/AMX Xeon: ``linear`` gives a row other bits at 2 rows than at 1;
with ``MKL_ENABLE_INSTRUCTIONS=AVX2`` a row's bits at 8 or 32 rows depend on its offset). A
batch of requests verified together would then give each request logits that depend on its
neighbours.

A ``RowPlan`` fixes the call shapes instead: every matmul is issued with a row count between
``min_rows`` and ``max_rows`` (short calls padded with zero rows, long ones cut into tiles), in
one of two layouts (``x @ W^T``, or ``(W @ x^T)^T`` where MKL packs the small activation). The
plan is found on the machine at hand by ``find_row_plan``: for each of the model's weight
shapes it multiplies random rows at every row count 1..64 and at several offsets and finds the
ranges of row counts in which every row always gets the same bits; of those, the runtime keeps
the one whose batched forwards of the real model run fastest here. Within that
range a row's result is a function of the row alone, so a request's logits are the same
whatever else is in the batch: invariance by construction, checked per machine. The search
takes seconds and is cached per machine, library versions, dtype, thread count and
kernel-selection environment (``plan_cache_key``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import transformers

from adaspec.atomic import atomic_writer

log = logging.getLogger("adaspec")

SEARCH_ROWS = 64  # row counts 1..SEARCH_ROWS are tried
SEARCH_OFFSETS = (0, 1, 3, 8, 21)  # offsets at which each row count multiplies the probe rows
KERNEL_ENVIRONMENT = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_DEBUG_CPU_TYPE", "ONEDNN_MAX_CPU_ISA",
                      "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class RowPlan:
    """How every matmul of a batched forward is issued so that rows do not influence each other.

    Attributes:
        weight_left: compute ``x @ W^T`` as ``(W @ x^T)^T``.
        min_rows: every call holds at least this many rows (zero rows pad a short one).
        max_rows: every call holds at most this many rows (a longer input is cut into tiles).
    """

    weight_left: bool
    min_rows: int
    max_rows: int

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``torch.nn.functional.linear`` with every call shaped by the plan.

        Args:
            x: ``[..., in]`` input rows.
            weight: ``[out, in]``.
            bias: ``[out]`` or None (added after the product, so it cannot change the product's kernel).

        Returns:
            ``[..., out]``.
        """
        flat = x.reshape(-1, x.shape[-1])  # [M, in]
        rows = flat.shape[0]
        if self.min_rows <= rows <= self.max_rows:  # the usual case: one call, no padding
            out = self._product(flat, weight)
        else:
            pieces = []
            for begin in range(0, max(rows, 1), self.max_rows):
                tile = flat[begin : begin + self.max_rows]  # [t, in]
                real = tile.shape[0]
                if real < self.min_rows:
                    tile = torch.nn.functional.pad(tile, (0, 0, 0, self.min_rows - real))  # [min_rows, in]
                pieces.append(self._product(tile, weight)[:real])
            out = torch.cat(pieces)  # [M, out]
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], weight.shape[0])

    def _product(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``rows @ weight^T`` in the plan's layout, contiguous: ``[t, in] -> [t, out]`` (later kernels,
        SDPA's among them, give other bits on other strides)."""
        if self.weight_left:
            return torch.mm(weight, rows.t()).t().contiguous()
        return torch.mm(rows, weight.t())

    def describe(self) -> str:
        """One line for logs and ``/health``."""
        layout = "W @ x^T" if self.weight_left else "x @ W^T"
        return f"{layout}, {self.min_rows}..{self.max_rows} rows per call"


def row_labels(weight: torch.Tensor, weight_left: bool, generator: torch.Generator) -> list[int]:
    """For row counts 1..SEARCH_ROWS: which ones give every probe row the same bits.

    Row count n is *consistent* when a row's bits do not depend on its offset in an n-row call
    (tried at ``SEARCH_OFFSETS``). Consecutive consistent counts that also agree with each other
    on every common row share a label.

    Args:
        weight: ``[out, in]`` a weight of the model (its values do not matter, its shape does).
        weight_left: the layout to try.
        generator: for the probe rows.

    Returns:
        ``labels[n - 1]`` for n = 1..SEARCH_ROWS: -1 when inconsistent, else a label equal to
        the previous count's exactly when the two agree.
    """
    inputs = weight.shape[1]
    probe = torch.randn((SEARCH_ROWS + max(SEARCH_OFFSETS), inputs), generator=generator)
    probe = probe.to(weight.device, weight.dtype)  # [R, in]
    labels: list[int] = []
    previous: torch.Tensor | None = None  # [n-1, out] the previous count's rows at offset 0
    for n in range(1, SEARCH_ROWS + 1):
        plan = RowPlan(weight_left, n, n)
        calls = {offset: plan.linear(probe[offset : offset + n], weight) for offset in SEARCH_OFFSETS}  # each [n, out]
        consistent = all(
            torch.equal(calls[early][late - early :], calls[late][: early + n - late])
            for early in SEARCH_OFFSETS for late in SEARCH_OFFSETS if early < late < early + n
        )  # every row two calls share got the same bits at its two offsets
        if not consistent:
            labels.append(-1)
            previous = None
            continue
        same = previous is not None and torch.equal(calls[0][: n - 1], previous)
        labels.append(labels[-1] if same else n)
        previous = calls[0]
    return labels


def invariant_ranges(label_rows: list[list[int]]) -> list[tuple[int, int]]:
    """The maximal runs of row counts on which every weight's labels are constant and consistent.

    Args:
        label_rows: one ``row_labels`` list per weight.

    Returns:
        ``(min_rows, max_rows)`` of each run, increasing.
    """
    runs: list[tuple[int, int]] = []
    start, previous = None, None
    for n in range(1, SEARCH_ROWS + 2):
        column = None if n > SEARCH_ROWS else tuple(labels[n - 1] for labels in label_rows)
        usable = column is not None and min(column) >= 0
        if start is not None and (not usable or column != previous):
            runs.append((start, n - 1))
            start = None
        if usable and start is None:
            start = n
        previous = column
    return runs


@torch.inference_mode()
def invariant_plans(weights: list[torch.Tensor]) -> list[RowPlan]:
    """Every plan under which each weight's rows are batch-invariant on this machine.

    Both layouts are searched; each maximal range of row counts on which every weight's rows
    agree is one candidate (a call of one row is always invariant, so on a CPU there is at
    least ``1..1``). Which candidate is fastest depends on the whole model; the runtime times them.

    Args:
        weights: one weight per distinct ``[out, in]`` shape of the model, output head included.

    Returns:
        The candidate plans.
    """
    candidates = []
    for weight_left in (True, False):
        generator = torch.Generator(device="cpu").manual_seed(0)
        label_rows = []
        for weight in weights:
            label_rows.append(row_labels(weight, weight_left, generator))
            if not invariant_ranges(label_rows):
                break
        candidates += [RowPlan(weight_left, low, high) for low, high in invariant_ranges(label_rows)]
    return candidates


def machine_fingerprint(device: torch.device) -> dict:
    """What a matmul's kernel choice can depend on, besides the shapes.

    Args:
        device: where the model runs.

    Returns:
        CPU model and flags (or the GPU's name), library versions, threads and the
        kernel-selection environment variables.
    """
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "flags") and key.strip() not in cpu:
                cpu[key.strip()] = value.strip()
    except OSError:
        cpu["processor"] = platform.processor()
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "device": str(device) + (f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "torch_config": hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:16],
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "environment": {name: os.environ.get(name) for name in KERNEL_ENVIRONMENT if os.environ.get(name)},
    }


def plan_cache_key(weights: list[torch.Tensor], model_key: str) -> str:
    """The file-name key of a plan search: the machine fingerprint, the weight shapes and dtype, and
    the model the candidates are timed on.

    Args:
        weights: the weights the search would try.
        model_key: names the model whose forwards choose among the candidates.

    Returns:
        A 16-hex-digit key.
    """
    described = {"machine": machine_fingerprint(weights[0].device), "model": model_key,
                 "weights": [[list(w.shape), str(w.dtype)] for w in weights], "search": [SEARCH_ROWS, SEARCH_OFFSETS]}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def cached_row_plan(weights: list[torch.Tensor], model_key: str, choose: Callable[[list[RowPlan]], RowPlan],
                    folder: Path) -> tuple[RowPlan | None, bool]:
    """The invariant plan ``choose`` prefers among ``invariant_plans``, remembered on disk per
    ``plan_cache_key``.

    Args:
        weights: one weight per distinct shape.
        model_key: names the model ``choose`` times the candidates on.
        choose: picks one of several candidates (the fastest, timed on the model).
        folder: where results are kept; an unreadable entry is searched again.

    Returns:
        The plan (None when there is none) and whether it came from the cache.
    """
    path = folder / f"row-plan-{plan_cache_key(weights, model_key)}.json"
    try:
        stored = json.loads(path.read_text())
        return (RowPlan(**stored["plan"]) if stored["plan"] else None), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    candidates = invariant_plans(weights)
    plan = None if not candidates else candidates[0] if len(candidates) == 1 else choose(candidates)
    try:
        with atomic_writer(path) as file:
            file.write(json.dumps({"plan": asdict(plan) if plan else None, "candidates": [asdict(c) for c in candidates],
                                   "machine": machine_fingerprint(weights[0].device)}, indent=1).encode())
    except OSError as error:
        log.warning("adaspec: cannot keep the row-plan search result in %s: %s", path, error.strerror or error)
    return plan, False
