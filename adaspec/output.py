"""Generated tokens -> text: stops at EOS, stop strings or the length limit, exactly where
plain one-token-at-a-time decoding would, and releases text for streaming only once it is
final."""

from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedTokenizerBase


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
        self.eos_token_ids = eos_token_ids
        self.stop = [s for s in stop if s]
        self.limit = limit
        self.ids: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None  # "eos", "stop" or "length" once finished
        self._streamed = 0  # characters of text already released by text_delta
        self._stop_search_from = 0  # text offset before which no stop string can start

    @property
    def finished(self) -> bool:
        """True once generation must end."""
        return self.finish_reason is not None

    def extend(self, new_ids: Sequence[int]) -> None:
        """Adds one step's accepted tokens, cutting them where generation ends.

        Args:
            new_ids: the tokens accepted this step, in order.
        """
        before = len(self.ids)
        for token in new_ids:
            self.ids.append(int(token))
            if token in self.eos_token_ids:
                self.finish_reason = "eos"
                break
            if len(self.ids) >= self.limit:
                self.finish_reason = "length"
                break
        self.text = self._decode(self.ids)
        if self.stop:
            self._cut_at_stop_string(before)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _cut_at_stop_string(self, before: int) -> None:
        hits = [(self.text.find(s, self._stop_search_from), s) for s in self.stop]
        hits = [(at, s) for at, s in hits if at >= 0]
        if not hits:
            self._stop_search_from = max(0, len(self.text) - max(map(len, self.stop)) + 1)
            return
        at, _ = min(hits)
        # the first token whose text completes a stop string is where plain decoding stops
        for count in range(before + 1, len(self.ids) + 1):
            prefix = self._decode(self.ids[:count])
            if any(prefix.find(s, self._stop_search_from) >= 0 for s in self.stop):
                del self.ids[count:]
                break
        self.text = self.text[:at]
        self.finish_reason = "stop"

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
