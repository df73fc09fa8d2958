"""A GGUF model on llama.cpp's kernels (through llama-cpp-python's C API) behind the backend protocol.

Two configurations, chosen from what the installed llama.cpp build can do:

* **exact** (a build with ``-DGGML_LLAMAFILE=OFF``, ``make llamacpp``): weight repacking, ggml's
  tiled K-quant matmul (``GGML_CPU_TILED_MM=0``) and flash attention off, drafts verified as
  **chains**. Each output row of every matmul is then one
  dot product whatever the batch, and a chain's nodes sit in KV cells ``[L, L+n)``, exactly where
  plain decoding puts those tokens; cutting the rejected tail (``seq_rm``) keeps the layout plain
  decoding has. Speculative output equals this backend's plain greedy decoding token for token.
  Branching trees cannot be exact here: a node's ancestors would not be contiguous cells, and the
  attention's SIMD sums over cells would group the same numbers differently (README, "llama.cpp").
* **fast** (llama.cpp's default kernels): trees in one ``llama_decode`` with a unified KV cache,
  one sequence id per root-to-leaf path, every node carrying the ids of the leaves below it
  (llama.cpp masks a query token by its first sequence id, so each node sees exactly its
  ancestors), positions ``L + depth``. After acceptance the accepted leaf's sequence is kept and
  folded back into sequence 0 (``seq_keep``, ``seq_cp``, ``seq_rm``). llamafile's sgemm gives a
  token different logits in a batch than alone, so greedy near-ties can flip.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from adaspec.backends.base import BatchSupport, NodeOutputs, Pick, pick_outputs_host, safe_name
from adaspec.errors import AdaspecError
from adaspec.tree import DraftTree

INSTALL_HINT = "install it with: make llamacpp (builds llama-cpp-python for this CPU, ~12 min once)"
MAX_TREE = 64  # the most nodes one verify step may hold (the budget profile's largest size)


def llama_cpp_module():
    """The ``llama_cpp`` package, imported on first use.

    Returns:
        The module.

    Raises:
        AdaspecError: when llama-cpp-python is not installed.
    """
    try:
        import llama_cpp
    except ImportError:
        raise AdaspecError(f"the llama.cpp backend needs llama-cpp-python; {INSTALL_HINT}") from None
    return llama_cpp


# what ggml's CPU library says it was compiled with (``ggml_cpu_has_<feature>``)
BUILD_FEATURES = ("llamafile", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_int8")


def build_features() -> dict[str, bool] | None:
    """The installed llama.cpp build's compile-time CPU features, asked of the build itself.

    Returns:
        Feature name -> compiled in, or None when the build's CPU library cannot be asked (an
        unknown layout, such as one library per CPU variant).
    """
    folder = Path(llama_cpp_module().__file__).parent / "lib"
    for name in ("libggml-cpu.so", "libggml-cpu.dylib", "ggml-cpu.dll"):
        if (folder / name).is_file():
            try:
                library = ctypes.CDLL(str(folder / name))
                features = {}
                for feature in BUILD_FEATURES:
                    probe = getattr(library, f"ggml_cpu_has_{feature}")
                    probe.restype = ctypes.c_int
                    features[feature] = probe() != 0
            except (OSError, AttributeError):
                return None
            return features
    return None


def build_is_batch_invariant() -> bool | None:
    """Whether the installed llama.cpp computes a token's logits the same in a batch as alone.

    llamafile's sgemm, used for batches of 2+ rows, sums in another order than the one-row
    kernel; a build without it (``-DGGML_LLAMAFILE=OFF``) has one kernel for every batch size.
    The answer comes from the build itself (``build_features``).

    Returns:
        True or False, or None when the build cannot be asked.
    """
    features = build_features()
    return None if features is None else not features["llamafile"]


def build_label() -> str:
    """A short name of the build's instruction set, for profile keys (``avx512``, ``avx2``...)."""
    features = build_features() or {}
    isa = "avx512" if features.get("avx512") else "avx2" if features.get("avx2") else "generic"
    return isa + ("-amx" if features.get("amx_int8") else "") + ("-llamafile" if features.get("llamafile") else "")


class LlamaWeights:
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
        """A backend (its own llama.cpp context and KV cache) over these weights."""
        return LlamaCppBackend(self)

    def batch_support(self) -> BatchSupport:
        """No: each llama.cpp context verifies one request per forward."""
        return BatchSupport(None, "the llama.cpp backend verifies one request per forward")


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _QUIET_LOG(level: int, text: bytes, data: object) -> None:
    """llama.cpp's log callback: errors to stderr, the rest (load chatter) dropped."""
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        os.write(2, text)


class LlamaCppBackend:
    """One request at a time on a llama.cpp context over shared weights.

    Args:
        weights: the loaded GGUF model.
        batch: tokens per ``llama_decode`` in the prefill (trees are at most ``MAX_TREE``).
    """

    name = "llama.cpp"
    default_budget = "auto"  # each extra node costs ~0.5 of a plain step on CPU: size every step
    default_drafter = "suffix"  # suffix@auto 1.10x / 1.33x against lookup@auto 1.07x / 1.25x (docs/benchmarks.md)

    def __init__(self, weights: LlamaWeights, batch: int = 512) -> None:
        lib = weights._lib
        self.weights = weights
        self.vocab_size = weights.vocab_size
        self.chain_only = weights.exact
        self.profile_key = (f"llama.cpp-{safe_name(weights.path.stem)}-{weights.device}-{weights.configuration}"
                            f"-{weights.build}-t{weights.threads}")
        self.batch_size = max(batch, MAX_TREE)
        self.max_seqs = 1 if weights.exact else MAX_TREE + 1  # sequence 0 plus one per leaf
        params = lib.llama_context_default_params()
        params.n_ctx = weights.n_ctx
        params.n_batch = params.n_ubatch = self.batch_size
        params.n_seq_max = self.max_seqs
        params.n_threads = params.n_threads_batch = weights.threads
        params.kv_unified = True
        params.no_perf = True
        if weights.exact:  # CPU flash attention splits a 1-row decode over threads but not a batch
            params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(weights.handle, params)
        if not self.ctx:
            raise AdaspecError(f"llama.cpp cannot create a context of {weights.n_ctx} cells for {weights.path}")
        self.memory = lib.llama_get_memory(self.ctx)
        self._lib = lib
        self._batch = lib.llama_batch_init(self.batch_size, 0, self.max_seqs)
        b = self._batch
        self._token = np.ctypeslib.as_array(b.token, shape=(self.batch_size,))  # [B] int32
        self._pos = np.ctypeslib.as_array(b.pos, shape=(self.batch_size,))  # [B] int32
        self._n_seq = np.ctypeslib.as_array(b.n_seq_id, shape=(self.batch_size,))  # [B] int32
        self._wants_logits = np.ctypeslib.as_array(b.logits, shape=(self.batch_size,))  # [B] int8
        self._seq_rows = [np.ctypeslib.as_array(b.seq_id[i], shape=(self.max_seqs,)) for i in range(self.batch_size)]  # B x [S]
        self._length = 0  # committed cells of the request (positions 0 .. length-1, sequence 0)
        self._held = np.zeros(weights.n_ctx, dtype=np.int64)  # [n_ctx] _held[:length]: the tokens in those cells
        self._rows_on_zero = 0  # leading batch rows known to be on sequence 0 alone (set once, kept across steps)
        self._logits_at = 0  # where the last logits view points (llama.cpp moves its buffer when it grows)
        self._logits_rows = np.zeros((0, self.vocab_size), dtype=np.float32)  # [rows, V] that view
        self._tree: DraftTree | None = None  # the last verified tree, until commit
        self._leaves: np.ndarray | None = None  # [m] its leaves' node indices; leaf j is sequence j + 1

    @property
    def cache_len(self) -> int:
        """Committed positions of the request (sequence 0)."""
        return self._length

    def prefill(self, prompt_ids: np.ndarray, pick: Pick) -> NodeOutputs:
        """Starts a request (see ``Backend.prefill``).

        Raises:
            AdaspecError: if the prompt does not fit the context.
        """
        if prompt_ids.size >= self.weights.n_ctx:
            raise AdaspecError(f"the prompt has {prompt_ids.size} tokens; the llama.cpp context holds {self.weights.n_ctx}")
        kept = self.cached_prefix(prompt_ids)
        if kept:  # the cells of the shared prefix stay where they are; the rest go
            self._lib.llama_memory_seq_rm(self.memory, 0, kept, -1)
        else:
            self._lib.llama_memory_clear(self.memory, True)
        self._length = kept
        for begin in range(kept, prompt_ids.size, self.batch_size):
            chunk = prompt_ids[begin : begin + self.batch_size]
            n = chunk.size
            self._token[:n] = chunk
            self._pos[:n] = np.arange(begin, begin + n)
            self._on_sequence_zero(n)
            self._wants_logits[:n] = 0
            self._wants_logits[n - 1] = begin + n == prompt_ids.size
            self._decode(n)
        self._length = int(prompt_ids.size)
        self._held[: self._length] = prompt_ids
        return pick_outputs_host(self.last_logits(1), pick)

    def cached_prefix(self, prompt_ids: np.ndarray) -> int:
        """How many leading prompt tokens the context's cells already hold from the previous request.

        Args:
            prompt_ids: ``[p]`` a new prompt.

        Returns:
            The common prefix of the held tokens and the prompt, at most ``p - 1`` (the last
            prompt token is always decoded, for its logits).
        """
        length = min(self._length, prompt_ids.size - 1)
        if length <= 0 or self.ctx is None:
            return 0
        differ = np.flatnonzero(self._held[:length] != prompt_ids[:length])
        return int(differ[0]) if differ.size else length

    def verify(self, tree: DraftTree, pick: Pick) -> NodeOutputs:
        """One ``llama_decode`` over the tree (see ``Backend.verify``).

        Raises:
            AdaspecError: for a branching tree in the exact configuration, a tree over
                ``MAX_TREE`` nodes, or a full context.
        """
        n = tree.size
        if n > MAX_TREE:
            raise AdaspecError(f"a tree of {n} nodes exceeds the llama.cpp backend's {MAX_TREE}")
        start = self._length
        self._token[:n] = tree.tokens
        self._pos[:n] = start + tree.depth
        self._wants_logits[:n] = 1
        chain = tree.is_chain
        if self.chain_only and not chain:
            raise AdaspecError("the exact llama.cpp configuration verifies chains only")
        if chain:  # every node on sequence 0: the cells plain decoding would use
            self._leaves = None
            self._on_sequence_zero(n)
        else:
            self._leaves = self._assign_sequences(tree)
        self._tree = tree
        self._decode(n)
        return pick_outputs_host(self.last_logits(n), pick)

    def _on_sequence_zero(self, n: int) -> None:
        """Puts the batch's first ``n`` tokens on sequence 0 alone (rows already there are left as they are)."""
        if n <= self._rows_on_zero:
            return
        self._n_seq[:n] = 1
        for i in range(n):
            self._seq_rows[i][0] = 0
        self._rows_on_zero = n

    def _assign_sequences(self, tree: DraftTree) -> np.ndarray:
        """Gives leaf j sequence j + 1 (holding the committed cells too) and each node its leaves' ids."""
        leaves = np.array([i for i in range(tree.size) if not tree.children[i]], dtype=np.int64)  # [m]
        below: list[list[int]] = [[] for _ in range(tree.size)]
        for j, leaf in enumerate(leaves):
            below[leaf].append(j + 1)
        for i in range(tree.size - 1, 0, -1):  # children come after parents: sweep up once
            below[int(tree.parents[i])].extend(below[i])
        self._rows_on_zero = 0
        for i, seqs in enumerate(below):
            self._n_seq[i] = len(seqs)
            self._seq_rows[i][: len(seqs)] = seqs
        for j in range(leaves.size):
            self._lib.llama_memory_seq_cp(self.memory, 0, j + 1, -1, -1)
        return leaves

    def commit(self, accepted: np.ndarray) -> None:
        """Keeps the accepted path's cells as sequence 0 and frees the rest of the tree (see ``Backend.commit``)."""
        lib, memory, tree = self._lib, self.memory, self._tree
        k = int(accepted.size)
        end = self._length + k
        self._held[self._length : end] = tree.tokens[accepted]
        if self._leaves is None:
            if k < tree.size:  # the chain's rejected tail
                lib.llama_memory_seq_rm(memory, 0, end, -1)
        elif k == 0:
            for j in range(self._leaves.size):
                lib.llama_memory_seq_rm(memory, j + 1, -1, -1)
        else:
            last = int(accepted[-1])
            leaf_seq = 1 + next(j for j, leaf in enumerate(self._leaves) if last in tree.path_to(int(leaf)))
            lib.llama_memory_seq_rm(memory, leaf_seq, end, -1)  # the leaf's path past the accepted depth
            lib.llama_memory_seq_keep(memory, leaf_seq)  # frees every other branch
            lib.llama_memory_seq_cp(memory, leaf_seq, 0, -1, -1)
            lib.llama_memory_seq_rm(memory, leaf_seq, -1, -1)
        self._length = end
        self._tree = self._leaves = None

    def release(self) -> None:
        """Ends the request; its cells stay for a later prompt sharing its prefix (``cached_prefix``)."""
        self._tree = self._leaves = None

    def close(self) -> None:
        """Frees the context (its KV cells) and the batch buffers."""
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "ctx", None):
            lib.llama_free(self.ctx)
            self.ctx = None
        self._length = 0

    def synchronize(self) -> None:
        """Waits for queued device work."""
        self._lib.llama_synchronize(self.ctx)

    def _decode(self, n: int) -> None:
        self._batch.n_tokens = n
        status = self._lib.llama_decode(self.ctx, self._batch)
        if status != 0:
            raise AdaspecError(f"llama_decode failed with status {status}"
                               + (" (no free KV cells: the context is full)" if status == 1 else ""))

    def last_logits(self, n: int) -> np.ndarray:
        """``[n, V]`` float32 logits of the last decode's output rows (a view; used before the next decode)."""
        pointer = self._lib.llama_get_logits(self.ctx)
        at = ctypes.addressof(pointer.contents)
        if at != self._logits_at or n > self._logits_rows.shape[0]:  # a view is made only when the buffer moved or grew
            self._logits_rows = np.ctypeslib.as_array(pointer, shape=(n, self.vocab_size))  # [n, V]
            self._logits_at = at
        return self._logits_rows[:n]

    def __del__(self) -> None:
        self.close()
