"""A transformers model as a runtime: its backends, whether they can verify in batches, and the
loader (a Hugging Face folder, or a GGUF file dequantised once)."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from adaspec.backends.base import BatchSupport
from adaspec.backends.batch_probes import check_exact, distinct_weights, fastest_plan, unsupported_matmuls
from adaspec.backends.hf import HFBackend, OutputHead, output_head_weight
from adaspec.backends.hf_batch import HFBatchVerifier
from adaspec.backends.hf_model import context_limit, eos_ids, position_limit, quiet_progress, resolve_dtype
from adaspec.backends.row_plan import RowPlan, cached_row_plan
from adaspec.errors import AdaspecError, first_line
from adaspec.models.cache import cache_root
from adaspec.models.gguf import convert_gguf
from adaspec.models.loaded import LoadedModel, LoadOptions
from adaspec.tree import MAX_TREE_NODES

log = logging.getLogger("adaspec")

# the attention implementations whose handling of a 4-D tree mask the tests prove (tests/test_architectures.py)
TREE_ATTENTION = ("sdpa", "eager")
MIN_BATCH_ROWS = 8  # a row plan whose calls hold fewer rows re-reads the weights too often to pay


class HFRuntime:
    """Makes the backends of one transformers model and answers for their batching.

    Args:
        model: the loaded model, in eval mode.
        model_name: where it came from (for profile keys).
        attention: the attention implementation it was loaded with (``sdpa`` or ``eager``).
        check_folder: where per-machine batching checks are cached.
    """

    name = "hf"
    max_tree_nodes = MAX_TREE_NODES  # a 4-D mask verifies any tree; the budget profile measures up to 64
    # hybrid:copy=suffix@auto: 1.57x over plain decoding on the existing categories and 3.19x where
    # text repeats, against hybrid at 8 nodes' 1.42x / 2.16x (docs/benchmarks.md)
    default_drafter = "hybrid:copy=suffix"
    default_budget = "auto"

    def __init__(self, model: PreTrainedModel, model_name: str, attention: str, check_folder: Path) -> None:
        self.model = model
        self.model_name = model_name
        self.device = str(model.device)
        self.attention = attention
        self.check_folder = check_folder
        self.head = OutputHead(output_head_weight(model))  # probed once for every backend
        self._batch_support: BatchSupport | None = None

    def new_backend(self) -> HFBackend:
        """A backend with its own KV cache."""
        return HFBackend(self.model, model_name=self.model_name, head=self.head)

    def label(self) -> str:
        """``hf``, for reports."""
        return self.name

    def batch_support(self) -> BatchSupport:
        """Whether several requests verify in one forward with each request's solo logits, here.

        Needs full-attention layers (the lean cache), SDPA and matmuls that all go through
        ``linear``; then a row plan for this machine (searched once, cached) and a check on
        real batches of the loaded model. The answer is kept for the runtime's life.

        Returns:
            The verifier, or None and the reason.
        """
        if self._batch_support is None:
            self._batch_support = self._find_batch_support()
        return self._batch_support

    def row_plan(self) -> tuple[RowPlan | None, bool]:
        """This machine's row plan for the model's weights (searched once per machine, then cached).

        Returns:
            The plan (None when none exists) and whether it came from the cache.
        """
        def choose(plans: list[RowPlan]) -> RowPlan:
            wide = [plan for plan in plans if plan.max_rows >= MIN_BATCH_ROWS]  # narrower ones cannot pay
            return fastest_plan(self.model, self.new_backend, wide or plans)

        return cached_row_plan(distinct_weights(self.model), self.new_backend().profile_key, choose, self.check_folder)

    def _find_batch_support(self) -> BatchSupport:
        if not self.new_backend().lean:
            return BatchSupport(None, "the model has sliding-window layers, whose caches verify one request per forward")
        if self.attention != "sdpa":
            return BatchSupport(None, f"the model runs {self.attention} attention, and batching runs SDPA")
        reason = unsupported_matmuls(self.model)
        if reason:
            return BatchSupport(None, reason)
        plan, cached = self.row_plan()
        if plan is None:
            return BatchSupport(None, "no matmul row count gives every row the same bits on this machine")
        if plan.max_rows < MIN_BATCH_ROWS:
            return BatchSupport(None, f"matmul rows agree here only in calls of {plan.min_rows}..{plan.max_rows} "
                                      "rows, too few for batching to pay")
        verifier = HFBatchVerifier(self.model, plan)
        reason = check_exact(verifier, self.new_backend)
        if reason:
            return BatchSupport(None, reason)
        log.info("adaspec: batched verification is exact here (%s; plan %s)", plan.describe(),
                 "cached" if cached else "found now")
        return BatchSupport(verifier, verifier.description)


def load_hf(path: Path, name: str, options: LoadOptions) -> LoadedModel:
    """Loads a causal LM on transformers (the ``hf`` entry of ``adaspec.backends.RUNTIMES``).

    Args:
        path: a Hugging Face model folder, or a ``.gguf`` file (dequantised to float32 once, cached).
        name: what reports call it.
        options: device, dtype and attention implementation.

    Returns:
        The loaded model, in eval mode on its device.

    Raises:
        AdaspecError: for an unreadable model, an attention implementation not proven on tree
            masks, or a dtype the device cannot run.
    """
    dtype = resolve_dtype(options.dtype, options.device)
    if options.attn_implementation is not None and options.attn_implementation not in TREE_ATTENTION:
        raise AdaspecError(f"attention {options.attn_implementation!r} is not proven on tree masks; "
                           f"choose one of: {', '.join(TREE_ATTENTION)}")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise AdaspecError(f"{path} is a file but not a .gguf model; give a .gguf file or a model directory")
        path = convert_gguf(path)
    elif not (path / "config.json").is_file():
        raise AdaspecError(f"{path} has no config.json; it is not a Hugging Face model directory")
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            network = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, attn_implementation=options.attn_implementation, local_files_only=True
            )
    except Exception as exc:  # corrupt weights, unknown architecture, missing files...
        raise AdaspecError(f"cannot load model from {path}: {first_line(exc)}") from None
    network = network.to(options.device).eval()
    attention = network.config._attn_implementation  # what transformers chose, read once here
    if attention not in TREE_ATTENTION:
        raise AdaspecError(f"{name} runs {attention} attention, which is not proven on tree masks; "
                           f"load it with attn_implementation set to one of: {', '.join(TREE_ATTENTION)}")
    max_context = context_limit(network, tokenizer)
    if max_context < position_limit(network, tokenizer):
        log.warning("adaspec: %s uses sliding-window attention; the context is capped at its %d-token window, "
                    "where tree verification is exact", name, max_context)
    return LoadedModel(tokenizer=tokenizer, name=name, max_context=max_context,
                       eos_token_ids=eos_ids(network, tokenizer),
                       vocab_size=int(network.get_output_embeddings().weight.shape[0]),
                       runtime=HFRuntime(network, name, attention, cache_root() / "batch-checks"))
