"""Which threads call given functions, seen through the interpreter's profiling hook (the code
under test runs unchanged: nothing is replaced or wrapped)."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator


@contextmanager
def threads_calling(groups: dict[str, list[Callable]]) -> Iterator[dict[str, list[str]]]:
    """Records, in order, the name of the thread behind each call to the functions of each group,
    made in this thread or in a thread started inside the block (one profiler at a time: the
    interpreter has one hook).

    Args:
        groups: a label -> plain Python functions (e.g. ``SomeClass.method``).

    Yields:
        label -> the thread names of its calls, appended as they happen.
    """
    labels = {function.__code__: label for label, functions in groups.items() for function in functions}
    names: dict[str, list[str]] = {label: [] for label in groups}

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code in labels:
            names[labels[frame.f_code]].append(threading.current_thread().name)

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        yield names
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
