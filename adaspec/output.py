"""Generated tokens -> text: stops at EOS, stop strings or the length limit, exactly where
plain one-token-at-a-time decoding would, and releases text for streaming only once it is
final."""

from __future__ import annotations

from typing import Callable, Sequence

from transformers import PreTrainedTokenizerBase


def rust_decode(tokenizer: PreTrainedTokenizerBase) -> Callable[..., str] | None:
    """The Rust tokenizer's own ``decode``, where it gives exactly what ``tokenizer.decode`` gives.

    That holds for a fast tokenizer that cleans up no spaces and whose class adds no decoding of
    its own (no subclass of the class that holds the Rust tokenizer overrides a decode method;
    Whisper's, for one, does).

    Args:
        tokenizer: a transformers tokenizer.

    Returns:
        The function, or None where ``tokenizer.decode`` must be used.
    """
    if getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return None
    classes = type(tokenizer).__mro__
    owner = next((i for i, c in enumerate(classes) if "backend_tokenizer" in c.__dict__), None)
    if owner is None or any(name in c.__dict__ for c in classes[:owner]
                            for name in ("decode", "_decode", "convert_tokens_to_string")):
        return None
    return tokenizer.backend_tokenizer.decode


class OutputTracker:
    """Collects accepted tokens for one request and decides where generation ends.

    A speculative step may accept several tokens at once; if an EOS token, a stop string or
    the length limit falls inside them, the output is cut at that token, as if the tokens had
    come one by one.

    Args:
        tokenizer: decodes the tokens.
        eos_token_ids: tokens that end generation (kept in the token ids, not in the text).
        stop: strings that end generation; the output ids end with the token that completes
            one, and the text ends just before it.
        limit: the most tokens to generate.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        eos_token_ids: frozenset[int],
        stop: Sequence[str],
        limit: int,
    ) -> None:
        self.tokenizer = tokenizer
        self._decode_ids = rust_decode(tokenizer) or tokenizer.decode  # runs twice per generated token
        self.eos_token_ids = eos_token_ids
        self.stop = [s for s in stop if s]
        self.limit = limit
        self.ids: list[int] = []
        self.text = ""  # the text of ids[:read offset], whole characters only
        self.finish_reason: str | None = None  # "eos", "stop" or "length" once finished
        self._streamed = 0  # characters of text already released by text_delta
        self._stop_search_from = 0  # text offset before which no stop string can start
        # incremental detokenisation: ids[prefix:read] is the context window already in the text,
        # ids[read:] the tokens not yet turned into whole characters
        self._prefix_offset = 0
        self._read_offset = 0

    @property
    def finished(self) -> bool:
        """True once generation must end."""
        return self.finish_reason is not None

    def extend(self, new_ids: Sequence[int]) -> None:
        """Adds one step's accepted tokens one by one, cutting them where generation ends.

        Each token costs two decodes of a few-token window (the serving engines' prefix / read
        offsets), so a step's cost does not grow with the output's length.

        Args:
            new_ids: the tokens accepted this step, in order.
        """
        for token in new_ids:
            self.ids.append(int(token))
            if token in self.eos_token_ids:
                self._finish("eos")
                return
            self._decode_new_tokens()
            if self.stop and self._cut_at_stop_string():
                return
            if len(self.ids) >= self.limit:
                self._finish("length")
                return

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decode_ids(ids, skip_special_tokens=True)

    def _decode_new_tokens(self, flush: bool = False) -> None:
        """Appends the text of the tokens after the read offset once it is whole characters."""
        known = self._decode(self.ids[self._prefix_offset : self._read_offset])
        window = self._decode(self.ids[self._prefix_offset :])
        if len(window) > len(known) and (flush or not window.endswith("\ufffd")):
            self.text += window[len(known) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)

    def _finish(self, reason: str) -> None:
        self._decode_new_tokens(flush=True)  # bytes of an unfinished character become U+FFFD, as in a full decode
        self.finish_reason = reason

    def _cut_at_stop_string(self) -> bool:
        """Ends generation at this token if the text now holds a stop string; True if it did."""
        hits = [at for at in (self.text.find(s, self._stop_search_from) for s in self.stop) if at >= 0]
        if not hits:
            self._stop_search_from = max(0, len(self.text) - max(map(len, self.stop)) + 1)
            return False
        self.text = self.text[: min(hits)]  # the ids end with the token that completed it
        self.finish_reason = "stop"
        return True

    def text_delta(self) -> str:
        """Text that is final since the last call (held back while it may still change)."""
        if self.finished:
            end = len(self.text)
        else:
            end = len(self.text.rstrip("\ufffd"))  # an unfinished multi-byte character
            if self.stop:  # text that might begin a stop string is not final yet
                end = min(end, max(self._streamed, len(self.text) - max(map(len, self.stop)) + 1))
        delta = self.text[self._streamed : end]
        self._streamed = max(self._streamed, end)
        return delta
