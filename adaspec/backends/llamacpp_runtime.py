"""A GGUF file on llama.cpp as a runtime: the weights loaded once, shared by every request's
backend (each with a llama.cpp context and KV cache of its own), and the loader."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from adaspec.backends.base import BatchSupport
from adaspec.backends.llamacpp import MAX_TREE, LlamaCppBackend
from adaspec.backends.llamacpp_build import INSTALL_HINT, build_is_batch_invariant, build_label, llama_cpp_module
from adaspec.errors import AdaspecError
from adaspec.models.gguf import gguf_tokenizer
from adaspec.models.loaded import LoadedModel, LoadOptions


class LlamaCppRuntime:
    """A GGUF file loaded once by llama.cpp; every backend made from it shares the weights.

    Args:
        path: the ``.gguf`` file.
        exact: True for the exact configuration, False for the fast one, None for exact
            exactly when the build allows it (``build_is_batch_invariant``).
        device: ``cpu``, or ``cuda`` to offload every layer (a CUDA build of llama.cpp).
        threads: CPU threads per forward (default: every core).
        n_ctx: KV cells per request, prompt and output together (default: the model's training
            context, at most 8192).

    Raises:
        AdaspecError: if llama-cpp-python is missing, exact is asked of a build that cannot be
            exact, or the file does not load.
    """

    name = "llama.cpp"
    max_tree_nodes = MAX_TREE
    default_budget = "auto"  # each extra node costs ~0.5 of a plain step on CPU: size every step
    default_drafter = "suffix"  # suffix@auto 1.10x / 1.33x against lookup@auto 1.07x / 1.25x (docs/benchmarks.md)

    def __init__(self, path: Path, exact: bool | None = None, device: str = "cpu", threads: int | None = None,
                 n_ctx: int | None = None) -> None:
        lib = llama_cpp_module()
        invariant = build_is_batch_invariant()
        if exact and not invariant:
            why = ("uses llamafile's sgemm, which is not batch-invariant" if invariant is False
                   else "does not say whether it uses llamafile's sgemm")
            raise AdaspecError(f"this llama.cpp build {why}; exact verification needs a -DGGML_LLAMAFILE=OFF "
                               f"build ({INSTALL_HINT})")
        self.exact = bool(invariant) if exact is None else exact
        self.build = build_label()  # the build's instruction set: profiles measured on another build do not apply
        if invariant:
            # ggml's tiled K-quant matmul (Q2_K..Q6_K, IQ*) takes over from 8 rows up and sums in
            # another order than the one-row kernel. ggml reads this switch once per process, at
            # its first use, so it is set on every load from a batch-invariant build (the only
            # builds that can be exact), before any model of the process has run
            os.environ["GGML_CPU_TILED_MM"] = "0"
        self.path = Path(path)
        self.device = device
        self.threads = threads or os.cpu_count() or 1
        lib.llama_log_set(_QUIET_LOG, ctypes.c_void_p())
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0 if device == "cpu" else -1
        params.use_extra_bufts = not self.exact  # weight repacking: another kernel from 4 rows on
        self.handle = lib.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.handle:
            raise AdaspecError(f"llama.cpp cannot load {self.path}")
        vocab = lib.llama_model_get_vocab(self.handle)
        self.vocab_size = int(lib.llama_vocab_n_tokens(vocab))
        self.n_ctx = int(n_ctx or min(int(lib.llama_model_n_ctx_train(self.handle)) or 8192, 8192))
        self.eos_token_ids = frozenset(t for t in range(self.vocab_size) if lib.llama_vocab_is_eog(vocab, t))
        self._lib = lib

    @property
    def configuration(self) -> str:
        """``exact`` or ``fast``."""
        return "exact" if self.exact else "fast"

    def label(self) -> str:
        """``llama.cpp exact`` or ``llama.cpp fast``, for reports."""
        return f"{self.name} {self.configuration}"

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids by the GGUF's own tokenizer (llama.cpp's), no BOS added.

        Args:
            text: the text.
            special: parse special tokens such as ``<|im_start|>``.

        Returns:
            The ids.
        """
        data = text.encode()
        room = len(data) + 8
        out = (ctypes.c_int32 * room)()
        vocab = self._lib.llama_model_get_vocab(self.handle)
        n = self._lib.llama_tokenize(vocab, data, len(data), out, room, False, special)
        return list(out[:n])

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self._lib.llama_model_free(handle)
            self.handle = None

    def new_backend(self) -> LlamaCppBackend:
        """A backend (its own llama.cpp context and KV cache) over the shared weights."""
        return LlamaCppBackend(self)

    def batch_support(self) -> BatchSupport:
        """No: each llama.cpp context verifies one request per forward."""
        return BatchSupport(None, "the llama.cpp backend verifies one request per forward")


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _QUIET_LOG(level: int, text: bytes, data: object) -> None:
    """llama.cpp's log callback: errors to stderr, the rest (load chatter) dropped."""
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        os.write(2, text)


def load_llamacpp(path: Path, name: str, options: LoadOptions) -> LoadedModel:
    """Loads a GGUF file on llama.cpp (the ``llama.cpp`` entry of ``adaspec.backends.RUNTIMES``).

    Args:
        path: the ``.gguf`` file.
        name: what reports call it.
        options: where and how to run it (``exact``; ``device`` cpu, or cuda for a CUDA build).

    Returns:
        The loaded model; its tokenizer is the GGUF's own, read by transformers.

    Raises:
        AdaspecError: for a path that is not a GGUF file, a missing llama-cpp-python, or a file
            llama.cpp cannot load.
    """
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise AdaspecError(f"the llama.cpp backend runs .gguf files; {path} is not one")
    tokenizer = gguf_tokenizer(path)
    runtime = LlamaCppRuntime(path, exact=options.exact, device=options.device.type)
    eos = set(runtime.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    return LoadedModel(tokenizer=tokenizer, name=name, max_context=runtime.n_ctx, eos_token_ids=frozenset(eos),
                       vocab_size=runtime.vocab_size, runtime=runtime)
