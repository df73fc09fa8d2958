"""``adaspec serve`` in a process of its own, as a user runs it, for the serving benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(extra: list[str], timeout: float = 300.0, code: Path | None = None,
                 stderr: int | None = subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    """Starts ``adaspec serve`` in a fresh process (cold drafter, ``--no-state``) on 127.0.0.1.

    Args:
        extra: more command-line options (after ``--served-model-name bench``, so they may replace it).
        timeout: seconds to wait for ``/health``.
        code: a checkout whose adaspec the server runs (e.g. the code before a change), or None
            for this process's own.
        stderr: where the server's stderr goes (``subprocess.PIPE``: kept for the error message).

    Returns:
        The process and its base URL, once it answers.

    Raises:
        RuntimeError: when it does not start in time (its stderr is included when piped).
    """
    port = free_port()
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    process = subprocess.Popen([sys.executable, "-m", "adaspec.cli", "serve", "--port", str(port), "--no-state",
                                "--served-model-name", "bench", *extra], cwd=code, env=env, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not start: {process.stderr.read() if process.stderr else ''}")


def resident_mb(pid: int) -> float:
    """A process's resident memory (``VmRSS``) in MB.

    Args:
        pid: the process id.

    Returns:
        Megabytes (10^6 bytes).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for process {pid}")
