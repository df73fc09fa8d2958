"""llama-cpp-python's own decoding of the same GGUF, as peers in a benchmark on the llama.cpp backend.

``llama.cpp-generate`` is ``Llama.generate`` at temperature 0 (plain greedy decoding, llama.cpp's
default context settings); ``llama.cpp-prompt-lookup`` adds its ``LlamaPromptLookupDecoding``
draft model (chains of up to 10 tokens copied from the context). Each peer runs in a process of
its own (``adaspec.bench.peer_worker``), as a user runs llama-cpp-python: same file, same
threads, but not sharing adaspec's process, its torch threads or its memory. Both use the
installed build; ``llama.cpp-generate-default-kernels`` runs ``Llama.generate`` on a build with
llama.cpp's default kernels (llamafile's sgemm on), found in the folder ``$ADASPEC_DEFAULT_KERNELS``
(``make llamacpp-default-kernels`` puts one in ``.llamacpp-default-kernels``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from adaspec.bench.metrics import RunRecord
from adaspec.errors import AdaspecError
from adaspec.loading import LoadedModel

LLAMACPP_PEERS = ("llama.cpp-generate", "llama.cpp-prompt-lookup", "llama.cpp-generate-default-kernels")
DEFAULT_KERNELS_ENV = "ADASPEC_DEFAULT_KERNELS"  # a folder holding llama-cpp-python built with llama.cpp's default kernels
PEER_CONTEXT = 4096  # cells of the peers' contexts: the benchmark's longest turn is ~2,000 tokens


class LlamaCppPeer:
    """One of llama-cpp-python's high-level generation loops, in its own process (see the module doc).

    Args:
        model: a model loaded with ``backend="llama.cpp"``.
        name: ``llama.cpp-generate`` or ``llama.cpp-prompt-lookup``.

    Raises:
        AdaspecError: when the worker process does not start.
    """

    def __init__(self, model: LoadedModel, name: str) -> None:
        weights = model.weights
        self.name = name
        self.eos_token_ids = sorted(model.eos_token_ids)
        environment = dict(os.environ)
        if name == "llama.cpp-generate-default-kernels":
            folder = os.environ.get(DEFAULT_KERNELS_ENV, "")
            if not folder or not Path(folder, "llama_cpp").is_dir():
                raise AdaspecError(f"{name} needs ${DEFAULT_KERNELS_ENV} to name a folder holding a llama-cpp-python "
                                   "built with llama.cpp's default kernels (make llamacpp-default-kernels)")
            environment["PYTHONPATH"] = os.pathsep.join([folder, str(Path(__file__).resolve().parents[2])])
        command = [sys.executable, "-m", "adaspec.bench.peer_worker", str(weights.path), name, str(weights.threads),
                   str(min(weights.n_ctx, PEER_CONTEXT))]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=environment)
        ready = self.process.stdout.readline()
        if not ready:
            raise AdaspecError(f"the {name} peer process did not start (exit code {self.process.poll()})")

    def run(self, prompt_ids: np.ndarray, new_tokens: int, label: tuple[str, str, int],
            prediction: str | None = None) -> RunRecord:
        """Generates greedily with ``Llama.generate`` in the peer's process (see ``runner.Method.run``);
        llama-cpp-python has no use for a prediction.

        Raises:
            AdaspecError: when the peer process has died.
        """
        reply = self.ask(prompt_ids, new_tokens)
        return RunRecord(label[0], label[1], self.name, label[2], len(reply["tokens"]), reply["seconds"],
                         reply["tokens"])

    def ask(self, prompt_ids: np.ndarray, new_tokens: int, reuse: bool = False) -> dict:
        """One generation in the peer's process.

        Args:
            prompt_ids: ``[p]`` the prompt.
            new_tokens: the most tokens to generate.
            reuse: keep what the peer's context holds of the prompt's prefix.

        Returns:
            ``tokens``, ``seconds`` and ``first_token_s`` (see ``peer_worker.generate``).

        Raises:
            AdaspecError: when the peer process has died.
        """
        request = {"prompt_ids": [int(t) for t in prompt_ids], "new_tokens": new_tokens, "eos": self.eos_token_ids,
                   "reuse": reuse}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AdaspecError(f"the {self.name} peer process ended (exit code {self.process.poll()})")
        return json.loads(line)

    def close(self) -> None:
        """Ends the peer's process."""
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def __del__(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
