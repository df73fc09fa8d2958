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
from typing import TYPE_CHECKING

import numpy as np

from adaspec.backends.base import NodeOutputs, Pick, safe_name, shared_prefix
from adaspec.backends.pick import pick_outputs_host
from adaspec.errors import AdaspecError
from adaspec.tree import DraftTree

if TYPE_CHECKING:
    from adaspec.backends.llamacpp_runtime import LlamaCppRuntime

MAX_TREE = 64  # the most nodes one verify step may hold (the budget profile's largest size)


class LlamaCppBackend:
    """One request at a time on a llama.cpp context over shared weights.

    Args:
        weights: the loaded GGUF model.
        batch: tokens per ``llama_decode`` in the prefill (trees are at most ``MAX_TREE``).
    """

    name = "llama.cpp"

    def __init__(self, weights: LlamaCppRuntime, batch: int = 512) -> None:
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
        self.reused_prefix = 0  # cells the last prefill kept from the request before
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
        kept = self.reused_prefix = self.cached_prefix(prompt_ids)
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
        """See ``Backend.cached_prefix``: the prefix the cells of sequence 0 share with ``prompt_ids``."""
        return 0 if self.ctx is None else shared_prefix(self._held[: self._length], prompt_ids)

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

    def rollback(self) -> None:
        """Drops the tree in flight, if one is (see ``Backend.rollback``)."""
        if self._tree is not None:
            self.commit(np.zeros(0, dtype=np.int64))

    def forget(self) -> None:
        """See ``Backend.forget``: no cell counts as held; the next prefill clears them."""
        self._length = 0
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
