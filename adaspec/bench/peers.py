"""Other libraries' own decoding of the same model, as peers in a benchmark, each in a process of
its own (``adaspec.bench.peer_worker``), as a user runs them: same model file, same threads, but
not sharing adaspec's process, its torch threads or its memory.

- ``llama.cpp-generate``: llama-cpp-python's ``Llama.generate`` at temperature 0 (plain greedy
  decoding, llama.cpp's default context settings), on the installed build;
  ``llama.cpp-prompt-lookup`` adds its ``LlamaPromptLookupDecoding`` draft model (chains of up to
  10 tokens copied from the context); ``llama.cpp-generate-default-kernels`` runs ``Llama.generate``
  on a build with llama.cpp's default kernels (llamafile's sgemm on), found in the folder
  ``$ADASPEC_DEFAULT_KERNELS`` (``make llamacpp-default-kernels`` puts one in ``.llamacpp-default-kernels``).
- ``hf-generate``: transformers' ``model.generate`` (greedy, or sampled at the run's temperature);
  ``hf-prompt-lookup`` adds ``prompt_lookup_num_tokens=10``.
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
from adaspec.models.loaded import LoadedModel

# each peer and the runtime it runs beside (a runtime without peers needs no line here)
PEERS = {"hf-generate": "hf", "hf-prompt-lookup": "hf", "llama.cpp-generate": "llama.cpp",
         "llama.cpp-prompt-lookup": "llama.cpp", "llama.cpp-generate-default-kernels": "llama.cpp"}
DEFAULT_KERNELS_ENV = "ADASPEC_DEFAULT_KERNELS"  # a folder holding llama-cpp-python built with llama.cpp's default kernels
PEER_CONTEXT = 4096  # cells of the llama.cpp peers' contexts: the benchmark's longest turn is ~2,000 tokens


class Peer:
    """One peer's generation loop in its own process (see the module doc).

    Args:
        model: the model adaspec runs (the peer loads the same file or directory).
        name: a key of ``PEERS``.
        temperature: 0 for greedy, else the sampling temperature (transformers' peers only).

    Raises:
        AdaspecError: for a peer of another runtime, a missing default-kernels build, or a worker
            process that does not start.
    """

    def __init__(self, model: LoadedModel, name: str, temperature: float = 0.0) -> None:
        self.name = name
        self.temperature = temperature
        self.eos_token_ids = sorted(model.eos_token_ids)
        environment = dict(os.environ)
        runtime = PEERS[name]
        if runtime != model.runtime.name:
            raise AdaspecError(f"method {name!r} runs on the {runtime} backend; this run uses {model.runtime.name}")
        if runtime == "llama.cpp":
            gguf = model.runtime
            path, threads, context = str(gguf.path), gguf.threads, min(gguf.n_ctx, PEER_CONTEXT)
            if name == "llama.cpp-generate-default-kernels":
                folder = os.environ.get(DEFAULT_KERNELS_ENV, "")
                if not folder or not Path(folder, "llama_cpp").is_dir():
                    raise AdaspecError(f"{name} needs ${DEFAULT_KERNELS_ENV} to name a folder holding a "
                                       "llama-cpp-python built with llama.cpp's default kernels (make llamacpp-default-kernels)")
                environment["PYTHONPATH"] = os.pathsep.join([folder, str(Path(__file__).resolve().parents[2])])
        else:
            import torch

            path, threads, context = str(model.runtime.model.name_or_path), torch.get_num_threads(), 0
        command = [sys.executable, "-m", "adaspec.bench.peer_worker", runtime, path, name, str(threads), str(context)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=environment)
        if not self.process.stdout.readline():
            raise AdaspecError(f"the {name} peer process did not start (exit code {self.process.poll()})")

    def run(self, prompt_ids: np.ndarray, new_tokens: int, label: tuple[str, str, int],
            prediction: str | None = None) -> RunRecord:
        """Generates in the peer's process (see ``runner.Method.run``); peers have no use for a prediction.

        A llama.cpp peer keeps the prefix its context shares with the prompt, as ``Llama.generate``
        does by default (a chat's next turn, the same prompt again): adaspec's methods keep theirs.

        Raises:
            AdaspecError: when the peer process has died.
        """
        from adaspec.bench.runner import turn_seed

        reply = self.ask(prompt_ids, new_tokens, reuse=True, seed=turn_seed(label))
        return RunRecord(label[0], label[1], self.name, label[2], len(reply["tokens"]), reply["seconds"],
                         reply["tokens"])

    def ask(self, prompt_ids: np.ndarray, new_tokens: int, reuse: bool = False, seed: int = 0) -> dict:
        """One generation in the peer's process.

        Args:
            prompt_ids: ``[p]`` the prompt.
            new_tokens: the most tokens to generate.
            reuse: keep what the peer's context holds of the prompt's prefix (llama.cpp peers).
            seed: the sampling seed (sampled transformers peers).

        Returns:
            ``tokens``, ``seconds`` and ``first_token_s`` (see ``peer_worker``).

        Raises:
            AdaspecError: when the peer process has died.
        """
        request = {"prompt_ids": [int(t) for t in prompt_ids], "new_tokens": new_tokens, "eos": self.eos_token_ids,
                   "reuse": reuse, "temperature": self.temperature, "seed": seed}
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
