"""A stand-in for vLLM's model runner around a ``custom_class`` proposer, for tests without vLLM.

It keeps the batch the way vLLM 0.32's input batch does, as far as a proposer can see it: a
persistent ``token_ids`` buffer ``[max_rows, max_len]`` and ``num_tokens`` ``[max_rows]``; rows are
filled from the front, a finished request's row is filled by moving the last row into it (vLLM's
condense), rejected draft tokens stay in the buffer past a row's count, and buffers past the live
rows hold stale rows. Its "model" continues each prompt periodically (token ``j`` of a request is
``prompt[j % len(prompt)]``), so copying drafters find real matches. Verification is greedy: the
longest prefix of a row's chain that equals the model's tokens, then the model's next token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SimRequest:
    """One request in the simulated engine.

    Attributes:
        id: the test's own name for it (the proposer never sees it).
        prompt: ``[p]`` int64 its prompt.
        max_new: tokens it generates before finishing.
        tokens: its context so far (prompt and output).
        prefill_chunks: steps its prompt takes to prefill (the last one samples a token).
        draft: the chain the proposer gave it at the last call.
        output: what the model says after the prompt (None: the prompt again and again).
    """

    id: str
    prompt: np.ndarray
    max_new: int
    tokens: list[int] = field(default_factory=list)
    prefill_chunks: int = 1
    draft: list[int] = field(default_factory=list)
    output: np.ndarray | None = None

    def next_token(self, position: int) -> int:
        """The model's token at a context position."""
        if self.output is not None and position >= self.prompt.size:
            return int(self.output[position - self.prompt.size])
        return int(self.prompt[position % self.prompt.size])

    @property
    def done(self) -> bool:
        return len(self.tokens) - self.prompt.size >= self.max_new


@dataclass
class SimEngine:
    """A batch of at most ``max_rows`` requests stepped around a proposer (module doc).

    Args:
        proposer: the object whose ``propose`` is called after every step.
        max_rows: rows of the batch buffers.
        max_len: tokens per row.
        k: the most draft tokens the proposer may return per row.
    """

    proposer: object
    max_rows: int = 8
    max_len: int = 512
    k: int = 8
    rows: list[SimRequest] = field(default_factory=list)
    waiting: list[SimRequest] = field(default_factory=list)
    finished: list[SimRequest] = field(default_factory=list)
    token_ids: np.ndarray = field(init=False)
    num_tokens: np.ndarray = field(init=False)
    row_history: list[list[str]] = field(default_factory=list)  # per call, the request id of each live row

    def __post_init__(self) -> None:
        rng = np.random.default_rng(7)
        self.token_ids = rng.integers(0, 1000, size=(self.max_rows, self.max_len)).astype(np.int32)  # stale junk
        self.num_tokens = rng.integers(0, self.max_len, size=self.max_rows).astype(np.int32)

    def submit(self, request: SimRequest) -> None:
        self.waiting.append(request)

    def step(self, call_proposer: bool = True) -> list[list[int]] | None:
        """One engine step: verify every row's chain, finish and condense, admit, then propose.

        Args:
            call_proposer: False imitates vLLM skipping the proposer for the whole batch.

        Returns:
            The proposer's chains, or None when it was not called.
        """
        sampled: list[list[int]] = []
        for request in self.rows:
            sampled.append(self._advance(request))
        for i in reversed(range(len(self.rows))):  # finished rows leave; the last row moves into the hole
            if self.rows[i].done and sampled[i]:
                self.finished.append(self.rows[i])
                last = len(self.rows) - 1
                if i != last:
                    self.rows[i] = self.rows[last]
                    sampled[i] = sampled[last]
                    self.token_ids[i] = self.token_ids[last]
                    self.num_tokens[i] = self.num_tokens[last]
                self.rows.pop()
                sampled.pop()
        while self.waiting and len(self.rows) < self.max_rows:
            request = self.waiting.pop(0)
            row = len(self.rows)
            self.rows.append(request)
            sampled.append(self._admit(request, row))
        for i, request in enumerate(self.rows):
            self._write(i, request)
        if not call_proposer:
            for request in self.rows:
                request.draft = []
            return None
        self.row_history.append([r.id for r in self.rows])
        chains = self.proposer.propose(sampled, self.num_tokens, self.token_ids, slot_mappings=None)
        assert len(chains) == len(self.rows)
        for request, chain, added in zip(self.rows, chains, sampled):
            assert len(chain) <= self.k, f"a chain of {len(chain)} tokens for k={self.k}"
            assert added or not chain, "a draft for a prefill chunk"
            request.draft = list(chain)
        return chains

    def run(self, max_steps: int = 10_000) -> None:
        """Steps until every request has finished."""
        for _ in range(max_steps):
            if not self.rows and not self.waiting:
                return
            self.step()
        raise AssertionError("the simulated engine did not finish")

    def _advance(self, request: SimRequest) -> list[int]:
        """A decoding row's tokens this step: its accepted drafts and the model's next token."""
        if request.prefill_chunks > 0:  # a prompt still prefilling: its last chunk samples
            request.prefill_chunks -= 1
            if request.prefill_chunks:
                return []
            token = request.next_token(len(request.tokens))
            request.tokens.append(token)
            return [token]
        added: list[int] = []
        for token in request.draft:
            if token != request.next_token(len(request.tokens) + len(added)) or request.done:
                break
            added.append(token)
        added.append(request.next_token(len(request.tokens) + len(added)))
        room = request.prompt.size + request.max_new - len(request.tokens)
        added = added[:room]
        request.tokens.extend(added)
        return added

    def _admit(self, request: SimRequest, row: int) -> list[int]:
        """A new request: its prompt is prefilled now, or its first chunk is."""
        request.tokens = list(request.prompt.tolist()) if not request.tokens else request.tokens
        if request.prefill_chunks > 1:
            request.prefill_chunks -= 1
            return []
        request.prefill_chunks = 0
        token = request.next_token(len(request.tokens))
        request.tokens.append(token)
        return [token]

    def _write(self, row: int, request: SimRequest) -> None:
        """The row's buffer: its tokens, then the rejected part of its last chain (stale)."""
        n = len(request.tokens)
        self.token_ids[row, :n] = request.tokens
        stale = request.draft[: self.max_len - n]
        self.token_ids[row, n : n + len(stale)] = stale
        self.num_tokens[row] = n

    def preempt(self, row: int) -> SimRequest:
        """Takes a row's request out of the batch (vLLM's preemption) and queues it first again; it
        will prefill its whole context and go on where it stopped."""
        request = self.rows[row]
        last = len(self.rows) - 1
        self.rows[row] = self.rows[last]
        self.token_ids[row] = self.token_ids[last]
        self.num_tokens[row] = self.num_tokens[last]
        self.rows.pop()
        request.draft, request.prefill_chunks = [], 1
        self.waiting.insert(0, request)
        return request
