"""A benchmark's records on disk as they are made, so a long run can stop and go on later.

``records.jsonl`` holds one header line (the settings the records were made under) and then
one line per generation. ``--resume`` reads it back and runs only the turns it lacks; a run
cut short (Ctrl-C, SIGTERM, a session ending) loses at most the turn in progress.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from adaspec.atomic import atomic_write_text
from adaspec.bench.metrics import RunRecord
from adaspec.errors import AdaspecError

# the settings that must match for old records to be comparable with new ones
MATCHING = ("new_tokens", "budget", "dtype", "device", "temperature", "methods", "backend")
FORMER_DEFAULTS = {"backend": "hf"}  # settings older checkpoints did not record yet, as they were then


def turn_key(record: RunRecord) -> tuple[str, str, int]:
    """The (category, prompt id, turn) a record belongs to.

    Args:
        record: one generation's record.

    Returns:
        The key that pairs the record with the other methods' runs of the same turn.
    """
    return record.category, record.prompt_id, record.turn


def complete_turns(records: Sequence[RunRecord], methods: Sequence[str]) -> list[RunRecord]:
    """The records of the turns every method ran (a turn cut short is left out).

    A record for a (turn, method) seen before replaces the earlier one: a resumed run reruns
    a turn whose prompt has changed and appends the new records after the old.

    Args:
        records: records as read back from a checkpoint, in the order they were written.
        methods: the method names a turn must hold to count as complete.

    Returns:
        The latest record of each (turn, method) of complete turns, in first-written order.
    """
    latest: dict[tuple[tuple[str, str, int], str], RunRecord] = {}
    for record in records:
        if record.method in methods:
            latest[(turn_key(record), record.method)] = record
    counts = Counter(key for key, _ in latest)
    return [record for (key, _), record in latest.items() if counts[key] == len(methods)]


class Checkpoint:
    """The ``records.jsonl`` of one report folder.

    Args:
        path: the file.
        model: the model's name.
        config: the run's settings (``report_meta``'s ``config``).
    """

    def __init__(self, path: Path, model: str, config: dict) -> None:
        self.path = path
        self.header = {"model": model, **{key: config.get(key, FORMER_DEFAULTS.get(key)) for key in MATCHING}}
        self.records: list[RunRecord] = []

    def start(self) -> list[RunRecord]:
        """Starts an empty file (replacing any earlier one); returns no records."""
        self.records = []
        self._rewrite(self.header)
        return []

    def resume(self) -> list[RunRecord]:
        """Reads the records made so far (none if there is no file yet).

        Returns:
            The records of the turns every method finished; a turn cut short is dropped
            (from the file too), as is a last line cut off mid-write.

        Raises:
            AdaspecError: if the file was made under other settings or is not a checkpoint.
        """
        if not self.path.is_file():
            return self.start()
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])
        except (IndexError, json.JSONDecodeError):
            raise AdaspecError(f"{self.path} is not a benchmark checkpoint; use another --out or drop --resume") from None
        for key, value in self.header.items():
            found = header.get(key, FORMER_DEFAULTS.get(key))
            if found != value:
                raise AdaspecError(f"{self.path} was made with {key} {found!r}, not {value!r}; "
                                   "use another --out or drop --resume")
        records = []
        for line in lines[1:]:
            try:
                records.append(RunRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                break  # the write that was cut off; everything before it is whole
        self.records = complete_turns(records, header["methods"])  # a turn cut short runs again
        self._rewrite(header)  # without the cut-off line, so appends start on a line of their own
        return list(self.records)

    def _rewrite(self, header: dict) -> None:
        """Replaces the file atomically with ``header`` and the records held."""
        atomic_write_text(self.path, "".join(json.dumps(item) + "\n" for item in [header, *map(asdict, self.records)]))

    def append(self, record: RunRecord) -> None:
        """Adds one record, flushed to disk at once.

        Args:
            record: the generation just finished.
        """
        self.records.append(record)
        with self.path.open("a") as handle:
            handle.write(json.dumps(asdict(record)) + "\n")
