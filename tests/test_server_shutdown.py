"""How requests end when nobody waits for them any more: a client that leaves a non-streamed
request, and a real ``adaspec serve`` stopped with SIGTERM (drained: new requests refused,
running ones finished or ended with an error event and ``[DONE]``, state saved, exit 0; a second
SIGTERM saves and exits at once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from server_harness import free_port, live_server, metric

ROOT = Path(__file__).resolve().parents[1]
LONG = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 3000, "temperature": 0}  # it counts on and on


@pytest.mark.timeout(300)
def test_a_non_streamed_request_whose_client_leaves_is_cancelled(model) -> None:
    with live_server(model, drafter="lookup", state_dir=None, batch=False) as (url, _):
        before = metric(url, "adaspec:requests_failed_total", 'reason="disconnected"')
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after a second and closes the connection
            httpx.post(f"{url}/v1/completions", json=LONG, timeout=httpx.Timeout(30, read=1.0))
        deadline = time.monotonic() + 20  # 3,000 tokens would take minutes: this only passes if it was cancelled
        while metric(url, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(url, "vllm:num_requests_running") == 0
        assert metric(url, "adaspec:requests_failed_total", 'reason="disconnected"') == before + 1
        assert metric(url, "vllm:generation_tokens_total") < 1000


class Served:
    """A real ``adaspec serve`` process on a free port (this checkout's code)."""

    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = tmp_path / "state"
        self.log = (tmp_path / "serve.log").open("w+")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adaspec.cli", "serve", "--port", str(self.port), "--no-batch", "--drafter", "aded",
             "--budget", "8", "--state-dir", str(self.state_dir), "--save-every", "3600", *options],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while True:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def state_files(self) -> list[Path]:
        return sorted(self.state_dir.rglob("*.npz"))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def stream(url: str, body: dict, seen: dict, key: str) -> None:
    """Reads a stream's events into ``seen[key]`` (a list of data payloads)."""
    seen[key] = []
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen[key].append(line[6:])
    except httpx.TransportError as error:
        seen[key].append(f"transport error: {error}")


def post(url: str, body: dict, seen: dict, key: str) -> None:
    try:
        seen[key] = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    except httpx.TransportError as error:
        seen[key] = error


@pytest.mark.timeout(600)
def test_sigterm_drains_then_ends_what_is_left_saves_and_exits_0(tmp_path) -> None:
    served = Served(tmp_path, "--drain-timeout", "6")
    try:
        seen: dict = {}
        threads = [threading.Thread(target=stream, args=(served.url, LONG, seen, "stream")),
                   threading.Thread(target=post, args=(served.url, LONG, seen, "long")),
                   threading.Thread(target=post, args=(served.url, {**LONG, "max_tokens": 6}, seen, "short"))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(seen.get("stream", [])) < 3:  # the stream is under way
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.05)
        served.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:  # refused: a 503 while draining (or a closed listener)
            refused = httpx.post(f"{served.url}/v1/completions", json=LONG, timeout=30)
            assert refused.status_code == 503, refused.text
        except httpx.TransportError:
            pass
        for thread in threads:
            thread.join(timeout=120)
        assert served.process.wait(timeout=120) == 0, served.output()
        assert seen["short"].status_code == 200, seen["short"]  # finished within the drain
        assert seen["long"].status_code == 503, seen["long"]  # still running when the drain ended
        events = seen["stream"]
        assert events[-1] == "[DONE]", events[-3:]
        assert "error" in json.loads(events[-2]), events[-3:]
        assert served.state_files(), served.output()  # the learned state was saved on the way out
    finally:
        served.close()


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_second_sigterm_saves_and_exits_at_once(tmp_path) -> None:
    served = Served(tmp_path, "--drain-timeout", "600")
    try:
        quick = httpx.post(f"{served.url}/v1/completions", json={**LONG, "max_tokens": 8}, timeout=60)
        assert quick.status_code == 200  # the drafter learned something, so there is state to save
        seen: dict = {}
        thread = threading.Thread(target=stream, args=(served.url, LONG, seen, "stream"))
        thread.start()
        deadline = time.monotonic() + 120
        while len(seen.get("stream", [])) < 3:
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.05)
        served.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert served.process.poll() is None  # draining: the stream has 600 s
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=60) == 0, served.output()
        assert served.state_files(), served.output()
        thread.join(timeout=60)
    finally:
        served.close()
